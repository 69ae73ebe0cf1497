"""The official pretrained Demucs v4 models that daw-bridge knows how to fetch.

This mirrors ``demucs/remote/files.txt`` and ``demucs/remote/*.yaml`` from the
demucs package, so that weights can be found, downloaded and verified without
going through ``torch.hub`` or ``huggingface_hub`` (whose errors a producer
cannot act on). A model is one checkpoint, or a "bag" of several whose outputs
are mixed with ``weights``.

Each checkpoint is published twice, with the same weights:

- on the Hugging Face hub, where demucs 4.1 looks first: ``<signature>.safetensors``
  in the model's repository (e.g. ``adefossez/HTDemucs``). We pin its full
  SHA-256 (and size where known) here; ``$HF_ENDPOINT`` names a mirror, as for
  ``huggingface_hub``.
- as the legacy ``.th`` file on Meta's server, ``<signature>-<sha256 prefix>.th``:
  the part after the last ``-`` is the start of the file's SHA-256, exactly what
  demucs and ``torch.hub`` check. ``$DAW_BRIDGE_MODEL_URL`` names a mirror.

See :mod:`daw_bridge.models.weights` for which source is tried first and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from daw_bridge.errors import ModelUnavailableError

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"
#: Environment variable naming a mirror that serves the same ``.th`` file names.
BASE_URL_ENV = "DAW_BRIDGE_MODEL_URL"
OFFICIAL_HUB_URL = "https://huggingface.co/"
#: The variable ``huggingface_hub`` itself reads for a mirror of the hub.
HUB_URL_ENV = "HF_ENDPOINT"

FOUR_SOURCES = ("drums", "bass", "other", "vocals")
SIX_SOURCES = (*FOUR_SOURCES, "guitar", "piano")


def base_url() -> str:
    """The folder URL the checkpoints are downloaded from, ending in ``/``."""
    return _folder_url(os.environ.get(BASE_URL_ENV) or OFFICIAL_BASE_URL)


def hub_url() -> str:
    """The Hugging Face hub (or the mirror in ``$HF_ENDPOINT``), ending in ``/``."""
    return _folder_url(os.environ.get(HUB_URL_ENV) or OFFICIAL_HUB_URL)


def _folder_url(url: str) -> str:
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class Download:
    """One published copy of a checkpoint: where it is and how to recognise it."""

    filename: str
    url: str
    #: Exact size in bytes, when known; otherwise the HTTP Content-Length is trusted.
    size: int | None
    #: The file's SHA-256 in hex, whole or (for ``.th`` names) its first characters.
    sha256: str


@dataclass(frozen=True)
class ModelFile:
    """One checkpoint, e.g. ``955717e8-8726e21a.th``, and its copy on the hub if pinned."""

    filename: str
    #: Exact size of the ``.th`` file in bytes, when known.
    size: int | None = None
    #: Full SHA-256 of ``<signature>.safetensors`` on the hub; None: the hub copy is not used.
    hub_sha256: str | None = None
    hub_size: int | None = None

    def __post_init__(self) -> None:
        stem, dash, sha = self.filename.removesuffix(".th").rpartition("-")
        if not (self.filename.endswith(".th") and stem and dash and sha):
            raise ValueError(f"expected a name like 'sig-sha256prefix.th': {self.filename}")

    @property
    def sha256_prefix(self) -> str:
        """The start of the file's SHA-256 hex digest, taken from its name."""
        return self.filename.removesuffix(".th").rpartition("-")[2]

    @property
    def signature(self) -> str:
        """The model's signature, e.g. ``955717e8``: the name of its hub copy."""
        return self.filename.split("-", 1)[0]

    @property
    def url(self) -> str:
        """Where to download the ``.th`` file (honours ``DAW_BRIDGE_MODEL_URL`` at call time)."""
        return base_url() + self.filename

    @property
    def legacy(self) -> Download:
        """The ``.th`` file on Meta's server, checked by the SHA-256 prefix in its name."""
        return Download(self.filename, self.url, self.size, self.sha256_prefix)

    def hub(self, repo: str | None) -> Download | None:
        """The ``.safetensors`` copy in hub repository ``repo``, if its SHA-256 is pinned."""
        if repo is None or self.hub_sha256 is None:
            return None
        filename = f"{self.signature}.safetensors"
        url = f"{hub_url()}{repo}/resolve/main/{filename}"
        return Download(filename, url, self.hub_size, self.hub_sha256)


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
    #: The Hugging Face repository demucs 4.1 downloads this model from.
    hub_repo: str | None = None

    def downloads(self, file: ModelFile) -> list[Download]:
        """The published copies of ``file``, in the order they are tried (hub first)."""
        hub = file.hub(self.hub_repo)
        return [hub, file.legacy] if hub is not None else [file.legacy]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="htdemucs",
            files=(
                ModelFile(
                    "955717e8-8726e21a.th",
                    size=84_141_911,
                    hub_sha256="d9fa14133cfcc034a6758923bb3a8ca9f8dfd0b582134643bbf83f72c17576dd",
                    hub_size=84_025_440,
                ),
            ),
            description="Hybrid Transformer Demucs v4, the default (4 stems).",
            hub_repo="adefossez/HTDemucs",
        ),
        ModelSpec(
            name="htdemucs_ft",
            files=(
                ModelFile(
                    "f7e0c4bc-ba3fe64a.th",
                    hub_sha256="2c85ab3c62dd6edd8e0b965e38b16fd1cdde357cc25de6b6bc9ce7c83f60925f",
                ),
                ModelFile(
                    "d12395a8-e57c48e6.th",
                    hub_sha256="5b01a97567ae9a3178a6236fb520251045c03eb8834bc8c24a4eec11d6c8fb56",
                ),
                ModelFile(
                    "92cfc3b6-ef3bcb9c.th",
                    hub_sha256="a241863551f30d01c42bd7b97da40839922ead3acb0f1fcab25682f55b4eeb59",
                ),
                ModelFile(
                    "04573f0d-f3cf25b2.th",
                    hub_sha256="68854b0d7c2b3274723b5761f6fd9f5aec5f1bcd3f0de7c1669546fdb7871b7c",
                ),
            ),
            # Each fine-tuned model contributes only the one source it was tuned for.
            weights=(
                (1.0, 0.0, 0.0, 0.0),
                (0.0, 1.0, 0.0, 0.0),
                (0.0, 0.0, 1.0, 0.0),
                (0.0, 0.0, 0.0, 1.0),
            ),
            description="htdemucs fine-tuned per source: better, 4x slower (4 stems).",
            hub_repo="adefossez/HTDemucs-ft",
        ),
        ModelSpec(
            name="htdemucs_6s",
            files=(
                ModelFile(
                    "5c90dfd2-34c22ccb.th",
                    size=54_996_327,
                    hub_sha256="d2a1745f0744721f6b8ca5bf469b67c651ea5ed1b52998cab033b2158609d411",
                    hub_size=54_885_744,
                ),
            ),
            sources=SIX_SOURCES,
            description="Experimental 6 stems: adds guitar and piano.",
            hub_repo="adefossez/HTDemucs-6s",
        ),
        ModelSpec(
            name="hdemucs_mmi",
            files=(ModelFile("75fc33f5-1941ce65.th"),),
            segment=44,
            description="Hybrid Demucs v3 retrained on MusDB + 800 songs (4 stems).",
            # Its hub copy's SHA-256 is not pinned here yet, so only the .th file is used.
            hub_repo="adefossez/Demucs-hdemucs_mmi",
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
