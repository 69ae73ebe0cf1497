"""An MSST checkpoint and its YAML config as a :class:`~daw_bridge.separation.base.Separator`.

The audio goes through what MSST's inference does around ``demix``: the mix
takes the model's channel count, is normalised by its mean and standard
deviation where the config says ``inference.normalize``, is separated chunk by
chunk (:mod:`daw_bridge.models.msst.demix`) and is scaled back. A model that
predicts one target (``training.target_instrument``, e.g. vocals) also returns
its complement, the mix minus the target, as MSST's ``--extract_instrumental``
does, so the stems always sum to the input.

MSST's ``htdemucs`` model type is the Demucs family: the config's top-level
``model`` names the network (``hdemucs`` here) and a section of that name holds
its arguments. It is built from demucs's own class with the arguments MSST's
``get_model`` passes, and is run in MSST's "demucs" chunking mode (chunks of
``training.samplerate * training.segment`` samples, plainly averaged).
"""

from __future__ import annotations

import importlib
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daw_bridge.audio.io import take_frames
from daw_bridge.errors import InvalidOptionError, ModelUnavailableError
from daw_bridge.models.msst.config import load_config
from daw_bridge.models.msst.demix import Chunking, demix_stream
from daw_bridge.separation.base import CancelCheck, ProgressCallback
from daw_bridge.separation.spectrum import give_one_sided_spectra

log = logging.getLogger(__name__)

#: MSST ``model_type`` -> (module, class) of our implementation.
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "bs_roformer": ("daw_bridge.models.msst.bs_roformer", "BSRoformer"),
    "mel_band_roformer": ("daw_bridge.models.msst.mel_band_roformer", "MelBandRoformer"),
    "scnet": ("daw_bridge.models.msst.scnet", "SCNet"),
    "mdx23c": ("daw_bridge.models.msst.mdx23c", "MDX23C"),
}
#: For MSST's ``htdemucs`` type: the config's ``model`` -> demucs's class, where MSST uses
#: demucs's own. (``model: htdemucs`` is MSST's modified copy of HTDemucs: not supported.)
DEMUCS_NETWORKS: dict[str, tuple[str, str]] = {
    "hdemucs": ("demucs.hdemucs", "HDemucs"),
}
#: Every MSST ``model_type`` daw-bridge runs.
MODEL_TYPES = (*ARCHITECTURES, "htdemucs")
#: Keys under which MSST's loader finds the weights in a checkpoint that is not a bare
#: state dict (demucs-style, Lightning-style, full training checkpoints).
_WRAPPERS = ("state", "state_dict", "model_state_dict")


def model_type_of(config: dict[str, Any]) -> str:
    """MSST's ``model_type`` for a config: its ``training.model_type``, else what the
    ``model`` section's keys say (MSST's own scripts take it as a command-line flag)."""
    named = (config.get("training") or {}).get("model_type")
    if named:
        return str(named)
    network = config.get("model")
    if isinstance(network, str):  # the Demucs family: 'model: hdemucs' and an 'hdemucs:' section
        if isinstance(config.get(network), dict):
            return "htdemucs"
        network = None
    keys = set(network or {})
    if "freqs_per_bands" in keys:
        return "bs_roformer"
    if "num_bands" in keys:
        return "mel_band_roformer"
    if {"band_SR", "dims"} <= keys:
        return "scnet"
    if {"num_subbands", "num_scales"} <= keys:
        return "mdx23c"
    raise ModelUnavailableError(
        "Cannot tell which MSST architecture this config is for.",
        f"daw-bridge runs these MSST model types: {', '.join(MODEL_TYPES)}; add "
        "'model_type: <type>' under 'training:' in the config.",
    )


def build_model(model_type: str, config: dict[str, Any]) -> torch.nn.Module:
    """Our module for MSST's ``model_type``, built from the config as MSST builds it."""
    if model_type not in MODEL_TYPES:
        raise ModelUnavailableError(
            f"MSST model type {model_type!r} is not supported.",
            f"Supported: {', '.join(MODEL_TYPES)}.",
        )
    if model_type == "htdemucs":
        return _demucs_network(config)
    module, name = ARCHITECTURES[model_type]
    architecture = getattr(importlib.import_module(module), name)
    if model_type == "mdx23c":  # MSST passes MDX23C the whole config
        return architecture(config)
    return architecture(**config["model"])


def _demucs_network(config: dict[str, Any]) -> torch.nn.Module:
    """demucs's network as MSST's ``get_model`` builds it: the class the config's ``model``
    names, its section's arguments, plus stems, channels, rate and segment from
    ``training``; its iSTFT given one-sided spectra (:func:`give_one_sided_spectra`)."""
    network = config.get("model")
    if network not in DEMUCS_NETWORKS or not isinstance(config.get(network), dict):
        raise ModelUnavailableError(
            f"MSST's htdemucs model type with 'model: {network}' is not supported.",
            "daw-bridge runs these Demucs networks from MSST configs: "
            f"{', '.join(DEMUCS_NETWORKS)}.",
        )
    module, name = DEMUCS_NETWORKS[network]
    architecture = getattr(importlib.import_module(module), name)
    training = config["training"]
    model = architecture(
        sources=list(training["instruments"]),
        audio_channels=training["channels"],
        samplerate=training["samplerate"],
        segment=training["segment"],
        **config[network],
    )
    return give_one_sided_spectra(model)


def chunking_of(model_type: str, config: dict[str, Any], batch_size: int | None = None) -> Chunking:
    """How MSST cuts a mix for this model: for ``htdemucs``, chunks of ``training.samplerate *
    training.segment`` samples, averaged; else ``inference.chunk_size`` (or
    ``audio.chunk_size``) with fades."""
    inference = config["inference"]
    overlap, batch = int(inference["num_overlap"]), int(batch_size or inference["batch_size"])
    if model_type == "htdemucs":
        training = config["training"]
        size = round(float(training["samplerate"]) * float(training["segment"]))
        return Chunking(size, overlap, batch, mode="demucs")
    size = inference.get("chunk_size", config["audio"]["chunk_size"])
    return Chunking(int(size), overlap, batch)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights in an MSST checkpoint: tensors only, no pickled code runs.

    Besides state dicts (bare or wrapped as MSST's ``_WRAPPERS`` say), this reads a
    Demucs package as demucs's ``serialize_model`` writes it (the form of MSST's
    ``htdemucs`` checkpoints): its ``state``, with the same allow-list of classes that
    daw-bridge's Demucs loader uses (demucs's model classes are named, never built).
    """
    from daw_bridge.models.loader import release_file_globals

    try:
        with torch.serialization.safe_globals(release_file_globals()):
            document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle naming anything but tensors and containers
        raise ModelUnavailableError(
            f"{path} is not an MSST checkpoint that can be read safely ({_why(error)}).",
            "Use the .ckpt file the model's author published (a PyTorch state dict).",
        ) from None
    for key in _WRAPPERS:
        if isinstance(document, dict) and isinstance(document.get(key), dict):
            document = document[key]
    if isinstance(document, dict) and document.get("__quantized"):
        raise ModelUnavailableError(
            f"{path} is a quantized (diffq) Demucs model, which daw-bridge does not run.",
            "Use the model's full-precision checkpoint.",
        )
    if not isinstance(document, dict) or not all(
        isinstance(value, torch.Tensor) for value in document.values()
    ):
        raise ModelUnavailableError(
            f"{path} holds no state dict of tensors.",
            "Use the .ckpt file the model's author published.",
        )
    return {key.removeprefix("module."): value for key, value in document.items()}


def _why(error: Exception) -> str:
    """The line of torch's long weights-only message that says what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for marker in ("GLOBAL", "Unsupported", "WeightsUnpickler error"):
        for index, line in enumerate(lines):
            if marker in line:
                if line.endswith(":") and index + 1 < len(lines):
                    line = lines[index + 1]
                return line[:300]
    return (lines[0] if lines else type(error).__name__)[:300]


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``path`` into ``model`` strictly: every key and shape must match."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        key
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    if missing or unexpected or mismatched:
        raise ModelUnavailableError(
            f"{path} does not fit its config: {_summary(missing, 'missing')}"
            f"{_summary(unexpected, 'unexpected')}{_summary(mismatched, 'of another shape')}",
            "Use the YAML config published with this checkpoint, saved beside it with the "
            "same name and .yaml.",
        )
    model.load_state_dict(state, strict=True)


def _summary(keys: list[str], what: str) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{len(keys)} weights {what} ({shown}); "


class MsstSeparator:
    """An MSST model ready to separate, at its config's sample rate."""

    def __init__(
        self,
        name: str,
        model_type: str,
        config: dict[str, Any],
        model: torch.nn.Module,
        *,
        device: torch.device | str = "cpu",
        batch_size: int | None = None,
        precision: str = "auto",
    ) -> None:
        self.name, self.config, self.model_type = name, config, model_type
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        audio, inference, training = config["audio"], config["inference"], config["training"]
        # Demucs-family configs give rate and channels under training only.
        self.samplerate = int(audio.get("sample_rate") or training.get("samplerate") or 44100)
        self.channels = int(audio.get("num_channels") or training.get("channels") or 2)
        self.chunking = chunking_of(model_type, config, batch_size)
        self.normalize = bool(inference.get("normalize", False))
        self.autocast = _autocast(precision, self.device, bool(training.get("use_amp", True)))
        instruments = list(training["instruments"])
        self.target = training.get("target_instrument") or None
        self.target_index = instruments.index(self.target) if self.target else None
        self.configured = len(instruments)
        if self.target is None:
            self.sources = tuple(instruments)
        else:
            others = [name for name in instruments if name != self.target]
            self.sources = (self.target, others[0] if len(others) == 1 else "instrumental")

    def separate(
        self,
        mix: np.ndarray,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> np.ndarray:
        """``(stems, channels, samples)`` with the input's channel count."""
        mix = np.asarray(mix, dtype=np.float32)
        mean, std = _mean_and_std(_with_channels(mix, self.channels))
        blocks = self.separate_stream(
            [mix],
            channels=mix.shape[0],
            mean=mean,
            std=std,
            frames_hint=mix.shape[-1],
            progress=progress,
            should_cancel=should_cancel,
            biased_std=True,
        )
        return np.concatenate(list(blocks), axis=-1)

    def separate_stream(
        self,
        blocks: Iterable[np.ndarray],
        *,
        channels: int,
        mean: float,
        std: float,
        frames_hint: int | None = None,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        biased_std: bool = False,
    ) -> Iterator[np.ndarray]:
        """:meth:`separate` for a mix arriving in ``(channels, n)`` blocks, in bounded memory
        (what :func:`~daw_bridge.separation.pipeline.stream_split` calls for long files).

        ``mean`` and ``std`` are those of the whole mix's mono sum, from a first pass
        over the file; ``std`` is the unbiased one there (as for Demucs), which is turned
        into MSST's (numpy's, biased) here, unless ``biased_std``.
        Yields ``(stems, channels, m)`` blocks adding up to the mix's length.
        """
        if frames_hint is None:  # MSST's padding needs the length: read it all
            whole = np.concatenate([np.asarray(block, np.float32) for block in blocks], axis=1)
            blocks, frames_hint = [whole], whole.shape[-1]
        if not biased_std and frames_hint > 1:
            std *= float(np.sqrt((frames_hint - 1) / frames_hint))
        if not np.isfinite(std) or std <= np.finfo(np.float32).eps:
            std = 1.0
        if not self.normalize:
            mean, std = 0.0, 1.0
        prepared: deque[np.ndarray] = deque()  # the model's mix, not yet matched by stems

        def model_blocks() -> Iterator[np.ndarray]:
            for block in blocks:
                block = _with_channels(np.asarray(block, dtype=np.float32), self.channels)
                prepared.append(block)
                yield (block - mean) / std if self.normalize else block

        estimates = demix_stream(
            self.model,
            model_blocks(),
            frames_hint,
            self.chunking,
            1 if self.target else len(self.sources),
            device=self.device,
            target_index=self.target_index,
            configured_stems=self.configured,
            autocast=self.autocast,
            progress=progress,
            should_cancel=should_cancel,
        )
        for stems in estimates:
            if self.normalize:
                stems = stems * std + mean
            if self.target:  # the complement, from the mix the model was given
                mix = take_frames(prepared, stems.shape[-1])
                stems = np.concatenate([stems, (mix - stems[0])[np.newaxis]])
            if stems.shape[1] != channels:  # a mono mix through a stereo model
                stems = stems.mean(axis=1, keepdims=True)
            yield stems.astype(np.float32, copy=False)


#: ``auto``: as MSST runs (mixed precision on CUDA where the config's ``use_amp`` says so,
#: float32 elsewhere); ``float32``: exact everywhere; ``half``: mixed precision, float16 on
#: CUDA and bfloat16 on a CPU.
PRECISIONS = ("auto", "float32", "half")


def _autocast(precision: str, device: torch.device, use_amp: bool) -> bool | torch.dtype:
    """What :func:`~daw_bridge.models.msst.demix.demix_stream` gets as ``autocast``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if precision == "float32" or (precision == "auto" and not use_amp):
        return False
    if device.type == "cuda":
        return torch.float16
    if precision != "half":
        return False
    if device.type == "cpu" and not cpu_computes_bf16():
        raise InvalidOptionError(
            "Half precision on a CPU needs bfloat16 in hardware (AVX-512 BF16 or AMX); "
            "this CPU has neither, so it would be slower, not faster (and some layers, "
            "such as SCNet's LSTMs, have no bfloat16 kernel here).",
            "Drop --half on this machine, or use a GPU (--device cuda).",
        )
    return torch.bfloat16


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions torch's kernels use (AVX-512 BF16, AMX)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _with_channels(mix: np.ndarray, channels: int) -> np.ndarray:
    """The mix with the model's channel count, as MSST prepares it."""
    if mix.shape[0] == 1 and channels == 2:
        return np.repeat(mix, 2, axis=0)
    if channels == 1 and mix.shape[0] > 1:
        return np.mean(mix, axis=0, keepdims=True, dtype=np.float32)
    return mix


def _mean_and_std(mix: np.ndarray) -> tuple[float, float]:
    """MSST's normalisation statistics: of the mono mix (numpy's std, biased)."""
    mono = mix.mean(0)
    return mono.mean(), mono.std()


def load_msst(
    checkpoint: Path,
    config_path: Path,
    model_type: str | None = None,
    name: str | None = None,
    **options: Any,
) -> MsstSeparator:
    """An MSST checkpoint with its published YAML config. ``backend="openvino"`` runs the
    network's real-valued middle in OpenVINO where that path was kept (see
    :data:`OPENVINO_TYPES`); other architectures and backends run in torch."""
    backend = options.pop("backend", None) or "auto"
    config = load_config(config_path)
    model_type = model_type or model_type_of(config)
    model = build_model(model_type, config)
    load_weights(model, checkpoint)
    model = _on_backend(model, model_type, backend, torch.device(options.get("device", "cpu")))
    return MsstSeparator(name or Path(checkpoint).stem, model_type, config, model, **options)


#: MSST model types with a kept OpenVINO path: faster than torch on a CPU, within -95 dB.
#: SCNet converts too but was not faster (1.0x; SCNet-large 0.6x), so it stays in torch.
OPENVINO_TYPES = ("mdx23c", "bs_roformer", "mel_band_roformer")


def _on_backend(
    model: torch.nn.Module, model_type: str, backend: str, device: torch.device
) -> torch.nn.Module:
    """The model, or its OpenVINO stand-in where ``backend`` asks for one and it pays."""
    if backend != "openvino":
        if backend not in ("auto", "torch"):
            log.warning("MSST models have no %s path: %s runs in torch", backend, model_type)
        return model
    from daw_bridge.models.msst.accel import OpenVinoNetwork, openvino_available

    if device.type != "cpu":
        raise InvalidOptionError(
            f"The OpenVINO backend runs on the CPU, not on {device}.",
            "Drop --backend openvino, or use --device cpu.",
        )
    if not openvino_available():
        raise InvalidOptionError(
            "The OpenVINO backend was asked for, but openvino is not installed.",
            "pip install openvino, or drop --backend openvino.",
        )
    if model_type not in OPENVINO_TYPES:
        log.warning(
            "no OpenVINO path is kept for %s (not faster than torch): it runs in torch",
            model_type,
        )
        return model
    return OpenVinoNetwork(model)


def config_beside(checkpoint: Path) -> Path:
    """The YAML config published with a ``.ckpt``: same name, ``.yaml`` (or ``.yml``)."""
    for suffix in (".yaml", ".yml"):
        candidate = checkpoint.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise ModelUnavailableError(
        f"No config beside the MSST checkpoint {checkpoint}.",
        f"Save the YAML config published with it as {checkpoint.with_suffix('.yaml')}.",
    )
