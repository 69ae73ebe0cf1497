"""Real MSST checkpoints, wherever one is found in ``../shared/models``: it loads strictly
and separates real songs well (none can be downloaded here, so this skips in our CI; put
a public ``.ckpt`` with its ``.yaml`` beside it, or a catalogue model's files, there).

Floors are conservative (the published numbers are 9 to 11 dB): a checkpoint read with
the wrong architecture, config or chunking scores near 0 dB or below.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from daw_bridge.audio.io import read_span
from daw_bridge.separation.metrics import sdr
from tests.conftest import EVAL_SONGS, SHARED_MODELS

#: MUSDB18 stems a model's output is scored on, and the floor of their median SDR.
FLOORS = {"vocals": 4.0, "drums": 4.0, "bass": 4.0, "other": 1.0}
SONGS = 3  # a RoFormer takes minutes per song on a CPU


def real_checkpoints() -> list[str]:
    """``--model`` values for what is here: ``.ckpt`` paths with a config beside them,
    and catalogue names whose files are in ``../shared/models``."""
    from daw_bridge.models.msst.catalog import MSST_MODELS

    if not SHARED_MODELS.is_dir():
        return []
    found = [
        str(path)
        for path in sorted(SHARED_MODELS.rglob("*.ckpt"))
        if path.with_suffix(".yaml").is_file() or path.with_suffix(".yml").is_file()
    ]
    named = {Path(path).name for path in found}
    for entry in MSST_MODELS.values():
        config = entry.config_download()
        files = [entry.checkpoint.filename, *([config.filename] if config else [])]
        if entry.checkpoint.filename not in named and all(
            (SHARED_MODELS / name).is_file() for name in files
        ):
            found.append(entry.name)
    return found


FOUND = real_checkpoints()


@pytest.mark.skipif(not EVAL_SONGS.is_dir(), reason=f"no evaluation songs at {EVAL_SONGS}")
@pytest.mark.parametrize(
    "model",
    FOUND
    or [
        pytest.param(
            None,
            marks=pytest.mark.skip(
                reason=f"no real MSST checkpoint in {SHARED_MODELS} (none can be downloaded "
                "here; see ../shared/models/SOURCES.md)"
            ),
        )
    ],
)
def test_a_real_checkpoint_separates_real_songs_above_conservative_floors(model):
    from daw_bridge.models.loader import load_separator

    separator = load_separator(model, model_dir=SHARED_MODELS, download=False)
    scored = [stem for stem in separator.sources if stem in FLOORS]
    if separator.samplerate != 44100 or not scored:
        pytest.skip(f"{model} gives no MUSDB18 stem at 44.1 kHz (stems: {separator.sources})")
    if len(separator.sources) == 2:  # a vocals model's second stem is all the rest
        scored = scored[:1]
    scores: dict[str, list[float]] = {stem: [] for stem in scored}
    folders = sorted(p for p in EVAL_SONGS.iterdir() if (p / "mixture.flac").is_file())
    for folder in folders[:SONGS]:
        mix = read_span(folder / "mixture.flac")
        stems = dict(zip(separator.sources, separator.separate(mix.samples), strict=True))
        for stem in scored:
            truth = read_span(folder / f"{stem}.flac").samples[:, : mix.frames]
            scores[stem].append(sdr(truth, stems[stem][:, : truth.shape[1]]))
    for stem, values in scores.items():
        median = statistics.median(values)
        assert median >= FLOORS[stem], f"{model} {stem}: median SDR {median:.2f} dB"
