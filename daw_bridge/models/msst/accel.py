"""Opt-in OpenVINO inference for MSST networks on the CPU.

Whole, only SCNet converts: OpenVINO's PyTorch frontend refuses complex tensors
that are transposed, padded or index-added ("The operation doesn't allow
complex type": BS- and Mel-RoFormer's complex masks, HDemucs's padded
spectrogram), and MDX23C's iSTFT converts but fails OpenVINO's ISTFT shape
check when run. So, as for HTDemucs (:mod:`daw_bridge.separation.accel`),
each network is cut in three: the STFT and whatever handles complex numbers
stay in torch, the real-valued part between them runs in OpenVINO. SCNet is
the exception: its STFT, time-axis FFTs and iSTFT all convert, so it runs
whole. The cut for each architecture re-assembles exactly what the module's
own ``forward`` does (checked against it in ``tests/models/msst/test_openvino.py``).

:class:`OpenVinoNetwork` has the model's ``forward`` signature, so it can stand
in for the model in :func:`~daw_bridge.models.msst.demix.demix`. Each item of a
batch runs alone (a static batch of 1 is the fastest on a CPU), and the
network is converted and compiled once per input shape (a chunk has one shape,
the short last chunk is padded to it). Computation stays in float32.

Opt-in because it pays only for some: on a 2-core AVX2 CPU (``python3
benchmarks/msst_speed.py --openvino 0.25``) MDX23C ran 2.1x, Mel-RoFormer 1.6x
and BS-RoFormer 1.5x faster than torch, SCNet 1.0x and SCNet-large 0.6x, all
within -95 dB of torch; and converting a full-size model takes up to nine
minutes the first time (the converted model is then kept, float32, in the weights
cache's ``compiled`` folder, keyed by the weights, shapes and versions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from daw_bridge.models.msst.roformer import (
    as_batch_channels_samples,
    complex_mask,
    interleave_channels,
    masked_to_audio,
    run_axial_layers,
)

log = logging.getLogger(__name__)

#: ``core inputs -> core output``: the real-valued middle, in torch or compiled.
CoreFn = Callable[..., Tensor]


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class _Split:
    """One architecture cut in three: ``inputs`` (torch), ``core`` (convertible),
    ``outputs`` (torch). ``run`` with the torch core equals the model's ``forward``."""

    def __init__(self, model: nn.Module, core: nn.Module) -> None:
        self.model = model
        self.core = core

    def inputs(self, mix: Tensor) -> tuple[tuple[Tensor, ...], Any]:
        return (mix,), None

    def outputs(self, core_output: Tensor, context: Any) -> Tensor:
        return core_output

    def run(self, mix: Tensor, core: CoreFn | None = None) -> Tensor:
        inputs, context = self.inputs(mix)
        return self.outputs((core or self.core)(*inputs), context)


class _RoformerCore(nn.Module):
    """Band features ``(B, frames, width)`` to stacked mask features ``(B, stems, frames,
    width)``: band split, axial transformers, (BS-RoFormer's) final norm, mask heads."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        m = self.model
        x = run_axial_layers(m.layers, m.band_split(features), m.skip_connection)
        final_norm = getattr(m, "final_norm", None)
        if final_norm is not None:
            x = final_norm(x)
        return torch.stack([estimator(x) for estimator in m.mask_estimators], dim=1)


class _BSRoformerSplit(_Split):
    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, _RoformerCore(model))

    def inputs(self, mix: Tensor) -> tuple[tuple[Tensor, ...], Any]:
        mix = as_batch_channels_samples(mix, self.model.audio_channels)
        batch, channels, samples = mix.shape
        spectrum = interleave_channels(self.model.codec.stft(mix))
        features = spectrum.transpose(1, 2).reshape(batch, spectrum.shape[2], -1)
        return (features,), (spectrum, channels, samples)

    def outputs(self, core_output: Tensor, context: Any) -> Tensor:
        spectrum, channels, samples = context
        masks = complex_mask(core_output, spectrum.dtype)
        masked = torch.view_as_complex(spectrum).unsqueeze(1) * masks
        m = self.model
        return masked_to_audio(m.codec, masked, channels, m.zero_dc, length=samples)


class _MelRoformerSplit(_Split):
    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, _RoformerCore(model))

    def inputs(self, mix: Tensor) -> tuple[tuple[Tensor, ...], Any]:
        m = self.model
        mix = as_batch_channels_samples(mix, m.audio_channels)
        batch, channels, samples = mix.shape
        spectrum = interleave_channels(m.codec.stft(mix))
        features = spectrum[:, m.band_rows].transpose(1, 2).reshape(batch, spectrum.shape[2], -1)
        return (features,), (spectrum, channels, samples)

    def outputs(self, core_output: Tensor, context: Any) -> Tensor:
        m = self.model
        spectrum, channels, samples = context
        masks = complex_mask(core_output, spectrum.dtype)
        spectrum = torch.view_as_complex(spectrum).unsqueeze(1)
        summed = torch.zeros(
            (spectrum.shape[0], masks.shape[1], *spectrum.shape[2:]),
            dtype=spectrum.dtype,
            device=spectrum.device,
        )
        summed.index_add_(2, m.band_rows, masks)
        masked = spectrum * (summed / m.bands_per_row)
        length = samples if m.match_input_audio_length else None
        audio = masked_to_audio(m.codec, masked, channels, m.zero_dc, length=length)
        return audio.squeeze(1) if audio.shape[1] == 1 else audio


class _MDX23CCore(nn.Module):
    """Sub-band spectrogram ``(B, C*2*subbands, F, T)`` to the stems' sub-band spectrogram."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mix: Tensor) -> Tensor:
        m = self.model
        first = m.first_conv(mix)
        hidden = first.transpose(-1, -2)
        skips = []
        for level in m.encoder_blocks:
            hidden = level.tfc_tdf(hidden)
            skips.append(hidden)
            hidden = level.downscale(hidden)
        hidden = m.bottleneck_block(hidden)
        for level in m.decoder_blocks:
            hidden = level.tfc_tdf(torch.cat([level.upscale(hidden), skips.pop()], dim=1))
        hidden = hidden.transpose(-1, -2) * first
        return m._join_subbands(m.final_conv(torch.cat([mix, hidden], dim=1)))


class _MDX23CSplit(_Split):
    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, _MDX23CCore(model))

    def inputs(self, mix: Tensor) -> tuple[tuple[Tensor, ...], Any]:
        m = self.model
        frames = mix.shape[-1] // m.hop_length + 1
        if frames % m.scale[0] ** m.num_scales:
            m(mix)  # raises the model's own error for a frame count it cannot take
        return (m._split_subbands(m._spectrogram(mix)),), None

    def outputs(self, core_output: Tensor, context: Any) -> Tensor:
        batch, _, freq, frames = core_output.shape
        stems = len(self.model.instruments)
        return self.model._waveform(core_output.reshape(batch, stems, -1, freq, frames))


def split_network(model: nn.Module) -> _Split:
    """The cut of ``model`` for OpenVINO; ``NotImplementedError`` for an architecture
    without one (MSST's HDemucs: its complex spectrogram is padded and masked inside
    demucs's ``forward``, which would have to be re-assembled here)."""
    from daw_bridge.models.msst.bs_roformer import BSRoformer
    from daw_bridge.models.msst.mdx23c import MDX23C
    from daw_bridge.models.msst.mel_band_roformer import MelBandRoformer
    from daw_bridge.models.msst.scnet import SCNet

    if isinstance(model, BSRoformer):
        return _BSRoformerSplit(model)
    if isinstance(model, MelBandRoformer):
        return _MelRoformerSplit(model)
    if isinstance(model, MDX23C):
        return _MDX23CSplit(model)
    if isinstance(model, SCNet):
        return _Split(model, model)
    raise NotImplementedError(f"no OpenVINO path for {type(model).__name__}")


def _fingerprint(core: nn.Module, shapes: tuple[tuple[int, ...], ...]) -> str:
    """What a converted core depends on: its class, weights, input shapes, the versions."""
    import openvino as ov

    digest = hashlib.sha256()
    facts = [type(core).__name__, shapes, torch.__version__, ov.__version__]
    digest.update(json.dumps(facts).encode())
    for name, tensor in core.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def _converted(core: nn.Module, example: tuple[Tensor, ...]) -> Any:
    """The OpenVINO model of ``core``, from the disk cache when this core was converted
    before (a full-size RoFormer takes minutes to convert), else converted and cached as
    float32 IR (``.xml`` + ``.bin``; the ``.xml`` is renamed into place last)."""
    import openvino as ov

    from daw_bridge.separation.accel import compiled_dir

    shapes = tuple(tuple(tensor.shape) for tensor in example)
    path = compiled_dir() / f"msst-{type(core).__name__}-{_fingerprint(core, shapes)}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        return ov.Core().read_model(str(path))
    log.info("converting %s for OpenVINO (once per model)", type(core).__name__)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes
        # Tracing needs ordinary tensors: those made under inference mode are not.
        converted = ov.convert_model(core, example_input=tuple(t.clone() for t in example))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.xml")
        ov.save_model(converted, str(partial), compress_to_fp16=False)
        os.replace(partial.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(partial, path)
    except OSError as error:  # a read-only cache only costs the conversion next time
        log.warning("could not cache the converted model in %s: %s", path.parent, error)
    return converted


def compile_core(core: nn.Module, example: tuple[Tensor, ...], threads: int) -> CoreFn:
    """``core`` converted by OpenVINO's PyTorch frontend for inputs shaped like ``example``
    (or read from the disk cache) and compiled for the CPU in float32 (left to itself,
    OpenVINO would pick bfloat16 on CPUs with AMX or AVX-512 BF16)."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        _converted(core, example),
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )
    request = compiled.create_infer_request()

    def run(*inputs: Tensor) -> Tensor:
        result = request.infer([tensor.contiguous().numpy() for tensor in inputs])
        return torch.from_numpy(result[compiled.outputs[0]].copy())

    return run


class OpenVinoNetwork(nn.Module):
    """An MSST model whose real-valued middle runs in OpenVINO; same call as the model."""

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        super().__init__()
        if not openvino_available():
            raise RuntimeError("OpenVINO is not installed (pip install openvino)")
        self.model = model.eval()
        self.split = split_network(self.model)
        self.threads = threads or torch.get_num_threads()
        self._compiled: dict[tuple[tuple[int, ...], ...], CoreFn] = {}
        self._lock = threading.Lock()

    def _core_for(self, inputs: tuple[Tensor, ...]) -> CoreFn:
        key = tuple(tuple(tensor.shape) for tensor in inputs)
        with self._lock:
            core = self._compiled.get(key)
            if core is None:
                core = compile_core(self.split.core, inputs, self.threads)
                self._compiled[key] = core
        return core

    def forward(self, mix: Tensor) -> Tensor:
        outputs = []
        for index in range(mix.shape[0]):
            one = mix[index : index + 1].float()
            inputs, context = self.split.inputs(one)
            outputs.append(self.split.outputs(self._core_for(inputs)(*inputs), context))
        return torch.cat(outputs)
