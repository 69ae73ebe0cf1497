"""Turn a model name or checkpoint path into a ready :class:`Separator`.

Checkpoints are unpickled with ``weights_only=True`` and only demucs's model
classes allowed, so a foreign ``.th`` file cannot run code on the user's machine.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

from daw_bridge.errors import ModelUnavailableError
from daw_bridge.models.catalog import MODELS, get_spec
from daw_bridge.models.weights import resolve_weights
from daw_bridge.separation.base import Separator

log = logging.getLogger(__name__)

DSP_MODEL = "dsp"
DEFAULT_MODEL = "htdemucs"
_CHECKPOINT_SUFFIXES = (".th", ".safetensors")


def model_names() -> list[str]:
    """Every name ``--model`` accepts besides a checkpoint path."""
    return [*MODELS, DSP_MODEL]


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
) -> Separator:
    """Load ``model``: a catalog name, ``dsp``, or a local Demucs checkpoint file."""
    if model == DSP_MODEL:
        from daw_bridge.separation.dsp import DspSeparator

        return DspSeparator()

    from daw_bridge.separation.engine import DemucsEngine, DemucsSeparator, pick_device

    torch_device = pick_device(device)  # a wrong device fails before any download
    if is_checkpoint_path(model):
        paths, weights, bag_segment, name = [Path(model).expanduser()], None, None, Path(model).stem
        if not paths[0].is_file():
            raise ModelUnavailableError(
                f"Checkpoint file not found: {paths[0]}",
                f"Check the path, or use one of the model names: {', '.join(model_names())}.",
            )
    else:
        spec = get_spec(model)
        paths = resolve_weights(spec, model_dir=model_dir, download=download)
        weights, bag_segment, name = spec.weights, spec.segment, spec.name
    models = [load_checkpoint(path) for path in paths]
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


def load_checkpoint(path: Path):  # -> torch.nn.Module; torch stays a lazy import
    """Build the demucs model stored in a ``.th`` (or demucs ``.safetensors``) file."""
    import torch
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs
    from demucs.states import load_model

    try:
        if path.suffix == ".safetensors":
            from demucs.hf import load_safetensors_model

            model = load_safetensors_model(path)
        else:
            allowed = [Demucs, HDemucs, HTDemucs, Fraction]
            with torch.serialization.safe_globals(allowed):
                package = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(package, dict) or not {"klass", "kwargs", "state"} <= set(package):
                raise ValueError("it holds no 'klass', 'kwargs' and 'state' entries")
            if package["state"].get("__quantized"):
                raise ValueError("it is a quantized (diffq) model, which daw-bridge does not run")
            model = load_model(package)
    except Exception as error:  # torch/pickle raise many types for a bad file
        raise ModelUnavailableError(
            f"{path} is not a Demucs checkpoint daw-bridge can load ({error}).",
            "Use an official Demucs v4 checkpoint (.th) or one saved the same way; "
            "if it was downloaded, delete it and download it again.",
        ) from error
    return model.eval()
