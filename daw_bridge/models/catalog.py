"""The official pretrained Demucs v4 models that daw-bridge knows how to fetch.

This mirrors ``demucs/remote/files.txt`` and ``demucs/remote/*.yaml`` from the
demucs package, so that weights can be found, downloaded and verified without
going through ``torch.hub`` (whose errors a producer cannot act on). A model is
one checkpoint, or a "bag" of several whose outputs are mixed with ``weights``.

Each checkpoint is named ``<signature>-<sha256 prefix>.th``: the part after the
last ``-`` is the start of the file's SHA-256, exactly what demucs and
``torch.hub`` check. Files are served from :data:`OFFICIAL_BASE_URL`, or from the
mirror named by the ``DAW_BRIDGE_MODEL_URL`` environment variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from daw_bridge.errors import ModelUnavailableError

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"
#: Environment variable naming a mirror that serves the same file names.
BASE_URL_ENV = "DAW_BRIDGE_MODEL_URL"

FOUR_SOURCES = ("drums", "bass", "other", "vocals")
SIX_SOURCES = (*FOUR_SOURCES, "guitar", "piano")


def base_url() -> str:
    """The folder URL the checkpoints are downloaded from, ending in ``/``."""
    url = os.environ.get(BASE_URL_ENV) or OFFICIAL_BASE_URL
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class ModelFile:
    """One checkpoint file, e.g. ``955717e8-8726e21a.th``."""

    filename: str
    #: Exact size in bytes, when known; otherwise the HTTP Content-Length is trusted.
    size: int | None = None

    def __post_init__(self) -> None:
        stem, dash, sha = self.filename.removesuffix(".th").rpartition("-")
        if not (self.filename.endswith(".th") and stem and dash and sha):
            raise ValueError(f"expected a name like 'sig-sha256prefix.th': {self.filename}")

    @property
    def sha256_prefix(self) -> str:
        """The start of the file's SHA-256 hex digest, taken from its name."""
        return self.filename.removesuffix(".th").rpartition("-")[2]

    @property
    def url(self) -> str:
        """Where to download it (honours ``DAW_BRIDGE_MODEL_URL`` at call time)."""
        return base_url() + self.filename


@dataclass(frozen=True)
class ModelSpec:
    """A pretrained model: its checkpoint file(s) and how demucs combines them."""

    name: str
    files: tuple[ModelFile, ...]
    #: Stem names in the models' output order (the loaded model is authoritative).
    sources: tuple[str, ...] = FOUR_SOURCES
    #: Bag weights, one row per file, one column per source; None means equal weights.
    weights: tuple[tuple[float, ...], ...] | None = None
    #: Segment length override in seconds for the bag; None keeps the model's own.
    segment: float | None = None
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="htdemucs",
            files=(ModelFile("955717e8-8726e21a.th", size=84_141_911),),
            description="Hybrid Transformer Demucs v4, the default (4 stems).",
        ),
        ModelSpec(
            name="htdemucs_ft",
            files=(
                ModelFile("f7e0c4bc-ba3fe64a.th"),
                ModelFile("d12395a8-e57c48e6.th"),
                ModelFile("92cfc3b6-ef3bcb9c.th"),
                ModelFile("04573f0d-f3cf25b2.th"),
            ),
            # Each fine-tuned model contributes only the one source it was tuned for.
            weights=(
                (1.0, 0.0, 0.0, 0.0),
                (0.0, 1.0, 0.0, 0.0),
                (0.0, 0.0, 1.0, 0.0),
                (0.0, 0.0, 0.0, 1.0),
            ),
            description="htdemucs fine-tuned per source: better, 4x slower (4 stems).",
        ),
        ModelSpec(
            name="htdemucs_6s",
            files=(ModelFile("5c90dfd2-34c22ccb.th"),),
            sources=SIX_SOURCES,
            description="Experimental 6 stems: adds guitar and piano.",
        ),
        ModelSpec(
            name="hdemucs_mmi",
            files=(ModelFile("75fc33f5-1941ce65.th"),),
            segment=44,
            description="Hybrid Demucs v3 retrained on MusDB + 800 songs (4 stems).",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """Look up a pretrained model by name, with a helpful error for a typo."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ModelUnavailableError(
            f"Unknown model {name!r}. Known models: {known}.",
            f"Use --model with one of: {known}; or --model dsp, which needs no weights.",
        ) from None
