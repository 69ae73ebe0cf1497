"""Turn a model name or checkpoint path into a ready :class:`Separator`.

Two checkpoint formats are read, both without running anything stored in them:

- ``.th``, as Meta released them (demucs's ``serialize_model`` + ``save_with_checksum``):
  unpickled with ``weights_only=True`` and an allow-list of exactly the types
  the release files name: demucs's model classes, ``fractions.Fraction`` (the
  segment) and the numpy types of the ``metrics`` entry (``scalar``, under its
  numpy-1.x name too, ``dtype`` and ``Float64DType``), none of which executes
  code. ``training_args`` and ``metrics`` are read and ignored.
- ``.safetensors``, as demucs 4.1 publishes them on the Hugging Face hub: no
  pickle at all; the model class named in the metadata must be one of demucs's.
  (demucs's own loader imports whatever class the metadata names, so we do
  not use it.)
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

from daw_bridge.errors import InvalidOptionError, ModelUnavailableError
from daw_bridge.models.catalog import MODELS, get_spec
from daw_bridge.models.weights import resolve_weights
from daw_bridge.separation.base import Separator

log = logging.getLogger(__name__)

DSP_MODEL = "dsp"
DEFAULT_MODEL = "htdemucs"
_CHECKPOINT_SUFFIXES = (".th", ".safetensors", ".ckpt")
SUPPORTED_FORMATS = (
    "a Demucs checkpoint saved the official way (.th, as Meta released them and as demucs's "
    "serialize_model writes them) or demucs 4.1's .safetensors files from the Hugging Face hub"
)
_MODEL_CLASSES = ("demucs.demucs.Demucs", "demucs.hdemucs.HDemucs", "demucs.htdemucs.HTDemucs")
#: ``<signature>-<first 8 hex digits of the SHA-256>.th``, the name demucs gives a checkpoint.
_CHECKSUM_NAME = re.compile(r"^[0-9a-f]+-([0-9a-f]{8})\.th$")


def model_names() -> list[str]:
    """Every name ``--model`` accepts besides a checkpoint path."""
    from daw_bridge.models.msst.catalog import MSST_MODELS

    return [*MODELS, *MSST_MODELS, DSP_MODEL]


def is_checkpoint_path(model: str) -> bool:
    return model.endswith(_CHECKPOINT_SUFFIXES) or "/" in model or "\\" in model


def load_separator(
    model: str = DEFAULT_MODEL,
    *,
    model_dir: Path | str | None = None,
    device: str = "auto",
    download: bool = True,
    shifts: int = 0,
    overlap: float = 0.25,
    batch_size: int | None = None,
    half: bool = False,
    segment: float | None = None,
    seed: int | None = None,
    backend: str | None = None,
    model_config: Path | str | None = None,
) -> Separator:
    """Load ``model``: a catalog name, ``dsp``, a local checkpoint file (Demucs ``.th`` or
    ``.safetensors``, MSST ``.ckpt`` whose YAML config is ``model_config`` or beside it),
    an ensemble ``stem=model,...``, or an ensemble file
    by name or ``.toml`` path (checked against the catalogue before any model loads)."""
    from daw_bridge.separation.ensemble import EnsembleSeparator, is_ensemble
    from daw_bridge.separation.ensemble_library import is_named_ensemble, load_ensemble

    named = load_ensemble(model) if is_named_ensemble(model) else None
    if named is not None or is_ensemble(model):
        options = dict(model_dir=model_dir, device=device, download=download, shifts=shifts)
        options.update(overlap=overlap, batch_size=batch_size, half=half, segment=segment)
        options.update(seed=seed, backend=backend)
        spec, label = (named.spec, named.name) if named is not None else (model, None)
        return EnsembleSeparator(spec, lambda name: load_separator(name, **options), label)
    if model == DSP_MODEL:
        from daw_bridge.separation.dsp import DspSeparator

        return DspSeparator()

    from daw_bridge.models.msst.catalog import MSST_MODELS
    from daw_bridge.separation.engine import DemucsEngine, DemucsSeparator, pick_device

    if model_config is not None and not model.endswith(".ckpt"):
        raise InvalidOptionError(
            f"--model-config is for an MSST checkpoint (.ckpt) given by path, not {model!r}.",
            "Give the checkpoint's path to --model, or leave out --model-config.",
        )
    torch_device = pick_device(device)  # a wrong device fails before any download
    if model in MSST_MODELS or model.endswith(".ckpt"):
        precision = "half" if half else "auto"
        msst_options = {"device": torch_device, "batch_size": batch_size, "precision": precision}
        msst_options["backend"] = backend
        return _load_msst(model, model_dir, download, model_config, msst_options)
    if is_checkpoint_path(model):
        paths, weights, bag_segment, name = [Path(model).expanduser()], None, None, Path(model).stem
        if not paths[0].is_file():
            raise ModelUnavailableError(
                f"Checkpoint file not found: {paths[0]}",
                f"Check the path, or use one of the model names: {', '.join(model_names())}.",
            )
        _check_named_checksum(paths[0])
        verified = False
    else:
        spec = get_spec(model)
        paths = resolve_weights(spec, model_dir=model_dir, download=download)
        weights, bag_segment, name = spec.weights, spec.segment, spec.name
        verified = True
    models = [load_checkpoint(path, verified=verified) for path in paths]
    engine = DemucsEngine(
        models,
        weights,
        segment=segment if segment is not None else bag_segment,
        overlap=overlap,
        shifts=shifts,
        batch_size=batch_size,
        device=torch_device,
        half=half,
        seed=seed,
        backend=backend,
    )
    log.info("loaded %s on %s", name, engine.device)
    return DemucsSeparator(name, engine)


def _load_msst(
    model: str,
    model_dir: Path | str | None,
    download: bool,
    model_config: Path | str | None,
    options: dict[str, Any],
) -> Separator:
    """An MSST model by catalogue name, or a ``.ckpt`` with its YAML config beside it."""
    from daw_bridge.models.msst.catalog import get_msst_model
    from daw_bridge.models.msst.separator import config_beside, load_msst
    from daw_bridge.models.weights import fetch

    if model.endswith(".ckpt"):
        checkpoint = Path(model).expanduser()
        if not checkpoint.is_file():
            raise ModelUnavailableError(
                f"Checkpoint file not found: {checkpoint}",
                f"Check the path, or use one of the model names: {', '.join(model_names())}.",
            )
        if model_config is None:
            return load_msst(checkpoint, config_beside(checkpoint), **options)
        config = Path(model_config).expanduser()
        if not config.is_file():
            raise ModelUnavailableError(
                f"The config file {config} given with --model-config is not there.",
                "Give the path of the YAML config published with the checkpoint.",
            )
        return load_msst(checkpoint, config, **options)
    entry = get_msst_model(model)
    label = f"model {entry.name!r}"
    checkpoint = fetch(entry.checkpoint_download(), label, model_dir=model_dir, download=download)
    config = entry.shipped_config() or fetch(
        entry.config_download(), label, model_dir=model_dir, download=download
    )
    log.info("%s by %s; licence: %s", entry.name, entry.author, entry.licence)
    return load_msst(checkpoint, config, entry.model_type, name=entry.name, **options)


def load_checkpoint(path: Path, *, verified: bool = False):  # -> torch.nn.Module
    """Build the demucs model stored in a ``.th`` or demucs ``.safetensors`` file.

    ``verified``: the file passed its pinned checksum, so it is the official
    file, and a failure here is our bug rather than a damaged download.
    """
    try:
        load = _load_safetensors if path.suffix == ".safetensors" else _load_pickled
        model = load(path)
    except Exception as error:  # torch, pickle and safetensors raise many types for a bad file
        reason = _describe(error)
        if verified:
            raise ModelUnavailableError(
                f"daw-bridge cannot load {path}, although the file passed its checksum and "
                f"so is the official one ({reason}).",
                "This is a bug in daw-bridge: please report it with the output of "
                "'daw-bridge --version' and 'pip show demucs torch numpy'. Meanwhile use another "
                "model (--model), or --model dsp.",
            ) from error
        raise ModelUnavailableError(
            f"{path} is not a checkpoint daw-bridge can load ({reason}).",
            f"Use {SUPPORTED_FORMATS}.",
        ) from error
    return model.eval()


def _load_pickled(path: Path):
    import torch
    from demucs.states import load_model

    with torch.serialization.safe_globals(release_file_globals()):
        package = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(package, dict) or not {"klass", "kwargs", "state"} <= set(package):
        raise ValueError("it holds no 'klass', 'kwargs' and 'state' entries")
    klass = package["klass"]
    if f"{getattr(klass, '__module__', '')}.{getattr(klass, '__qualname__', '')}" not in (
        _MODEL_CLASSES
    ):
        raise ValueError(f"its model class {klass!r} is not one of demucs's models")
    if package["state"].get("__quantized"):
        raise ValueError("it is a quantized (diffq) model, which daw-bridge does not run")
    return load_model(package)


def release_file_globals() -> list[Any]:
    """Everything an official release file names, and nothing that executes code."""
    import numpy as np
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs
    from numpy.dtypes import Float64DType

    # numpy 2 moved numpy.core to numpy._core; files pickled by numpy 1.x use the old name.
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    scalar = multiarray.scalar
    return [
        Demucs,
        HDemucs,
        HTDemucs,
        Fraction,
        np.dtype,
        Float64DType,
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
    ]


def _load_safetensors(path: Path):
    from demucs.states import load_model
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    if "structure" in metadata:
        raise ValueError("it is a quantized (diffq) model, which daw-bridge does not run")
    if not {"klass", "args", "kwargs"} <= set(metadata):
        raise ValueError("its metadata holds no 'klass', 'args' and 'kwargs' entries")
    if metadata["klass"] not in _MODEL_CLASSES:
        raise ValueError(f"its model class {metadata['klass']!r} is not one of demucs's models")
    module, _, name = metadata["klass"].rpartition(".")
    klass = getattr(__import__(module, fromlist=[name]), name)
    args = _from_json(json.loads(metadata["args"]))
    kwargs = _from_json(json.loads(metadata["kwargs"]))
    return load_model({"klass": klass, "args": args, "kwargs": kwargs, "state": state})


def _from_json(value: Any) -> Any:
    """Undo the hub export's JSON encoding, whose only non-JSON type is a Fraction."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(value["numerator"], value["denominator"])
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def _describe(error: Exception) -> str:
    """What was wrong with the file, in one line, without torch's ``weights_only=False`` advice."""
    text = str(error)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"it asks to load {refused.group(1)}, which no Demucs checkpoint needs; it was "
            "refused, so nothing in the file ran"
        )
    if isinstance(error, ValueError) and "weights_only" not in text:
        return text
    if isinstance(error, pickle.UnpicklingError | EOFError | RuntimeError) or "zip" in text:
        return "it is not a PyTorch or safetensors file, or it is damaged"
    return f"{type(error).__name__}: {text.splitlines()[0] if text else 'unreadable'}"


def _check_named_checksum(path: Path) -> None:
    """A file named ``<signature>-<sha256 prefix>.th`` must match its name, as demucs checks."""
    match = _CHECKSUM_NAME.match(path.name)
    if match is None:
        return
    from daw_bridge.files import file_sha256

    digest = file_sha256(path)
    if not digest.startswith(match.group(1)):
        raise ModelUnavailableError(
            f"The checkpoint {path} is damaged or incomplete: its SHA-256 starts with "
            f"{digest[:8]} but its name says {match.group(1)}.",
            "Delete it and download it again (or copy it again from where it came from).",
        )
