"""Only the stems I need: the kept stems plus "rest" (the sum of the others) sum to the mix."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile

from daw_bridge.errors import InvalidOptionError
from daw_bridge.separation.keep import check_keep, keep_stems

NAMES = ("drums", "bass", "other", "vocals")


def four_stems(folder, subtype="FLOAT", seconds=3.0, level=0.2):
    """Stems written by libsndfile (not by our writer), and a manifest naming them."""
    rng = np.random.default_rng(1)
    frames = int(44100 * seconds)
    stems = {}
    for name in NAMES:
        path = folder / f"{name}.wav"
        soundfile.write(path, level * rng.standard_normal((frames, 2)), 44100, subtype=subtype)
        stems[name] = path
    manifest = {"stems": {n: f"{n}.wav" for n in NAMES}, "residual_stem": "other", "sha256": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return stems


def read(path):
    return soundfile.read(path, dtype="float64")[0]


def test_dropped_stems_arrive_summed_as_rest_and_the_set_still_sums_to_the_mix(tmp_path):
    stems = four_stems(tmp_path)
    mix = sum(read(path) for path in stems.values())
    kept = keep_stems(stems, ["vocals"], "float32")
    assert list(kept) == ["vocals", "rest"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "rest.wav", "vocals.wav"]
    assert soundfile.info(kept["rest"]).subtype == "FLOAT"
    np.testing.assert_allclose(read(kept["vocals"]) + read(kept["rest"]), mix, atol=1e-6)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stems"] == {"vocals": "vocals.wav", "rest": "rest.wav"}
    assert manifest["rest"] == ["drums", "bass", "other"]
    assert manifest["residual_stem"] == "rest"  # "other" held the model's residual
    assert "sha256" not in manifest  # the cache's record of files no longer here


def test_two_kept_stems_in_16_bit_sum_to_the_mix_exactly(tmp_path):
    """16-bit steps add up exactly (short of clipping, which is warned about)."""
    stems = four_stems(tmp_path, subtype="PCM_16", level=0.05)
    mix = sum(read(path) for path in stems.values())
    kept = keep_stems(stems, ["drums", "bass"], "int16")
    assert list(kept) == ["drums", "bass", "rest"]
    assert soundfile.info(kept["rest"]).subtype == "PCM_16"
    total = sum(read(path) for path in kept.values())
    np.testing.assert_array_equal(total, mix)


def test_files_linked_elsewhere_are_never_written_to(tmp_path):
    """Stems handed out by the server's cache are hard links: only names go, bytes stay."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "job").mkdir()
    cached = four_stems(tmp_path / "cache")
    before = {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()}
    for path in (tmp_path / "cache").iterdir():
        os.link(path, tmp_path / "job" / path.name)
    keep_stems({n: tmp_path / "job" / p.name for n, p in cached.items()}, ["vocals"], "float32")
    assert {p.name: p.read_bytes() for p in (tmp_path / "cache").iterdir()} == before


def test_keeping_every_stem_or_none_changes_nothing(tmp_path):
    stems = four_stems(tmp_path)
    assert keep_stems(stems, list(NAMES), "float32") == stems
    assert keep_stems(stems, [], "float32") == stems
    assert not (tmp_path / "rest.wav").exists()


def test_a_name_that_is_not_a_stem_of_the_model_is_refused_naming_the_stems():
    with pytest.raises(InvalidOptionError) as error:
        check_keep(["vocals", "kazoo"], NAMES)
    assert "'kazoo' is not a stem" in error.value.problem
    assert "drums, bass, other, vocals" in str(error.value.fix)


def test_keep_and_two_stems_together_are_refused():
    with pytest.raises(InvalidOptionError, match="both choose"):
        check_keep(["vocals"], NAMES, two_stems="vocals")
