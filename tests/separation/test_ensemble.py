"""An ensemble takes each stem from the model named for it (or their average)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from daw_bridge.errors import InvalidOptionError
from daw_bridge.models.loader import load_separator
from daw_bridge.separation.ensemble import RULES, EnsembleSeparator, combine, parse_ensemble
from daw_bridge.separation.pipeline import split_file
from tests.conftest import noise, write_wav


class Scaled:
    """A fake model: stem i is the mix times ``gains[i]``; counts its runs."""

    samplerate = 44100

    def __init__(self, sources: tuple[str, ...], gains: tuple[float, ...]) -> None:
        self.sources, self.gains, self.runs = sources, gains, 0

    def separate(self, mix, progress=None, should_cancel=None):
        self.runs += 1
        if progress is not None:
            progress(1.0)
        return np.stack([mix * gain for gain in self.gains]).astype(np.float32)


@pytest.fixture
def models():
    return {
        "roformer": Scaled(("vocals", "other"), (0.5, 0.5)),
        "demucs": Scaled(("drums", "bass", "other", "vocals"), (0.1, 0.2, 0.3, 0.4)),
    }


def test_each_stem_comes_from_its_model_and_each_model_runs_once(models):
    spec = "vocals=roformer,drums=demucs,bass=demucs,other=demucs"
    ensemble = EnsembleSeparator(spec, models.__getitem__)
    mix = np.ones((2, 100), dtype=np.float32)
    stems = ensemble.separate(mix)
    assert ensemble.sources == ("vocals", "drums", "bass", "other")
    np.testing.assert_allclose(stems[:, 0, 0], [0.5, 0.1, 0.2, 0.3])
    assert models["roformer"].runs == models["demucs"].runs == 1


def test_a_stem_from_several_models_is_their_average(models):
    ensemble = EnsembleSeparator("vocals=roformer+demucs,other=demucs", models.__getitem__)
    stems = ensemble.separate(np.ones((1, 10), dtype=np.float32))
    np.testing.assert_allclose(stems[:, 0, 0], [(0.5 + 0.4) / 2, 0.3])


def test_progress_covers_every_model_in_turn(models):
    seen: list[float] = []
    ensemble = EnsembleSeparator("vocals=roformer,drums=demucs", models.__getitem__)
    ensemble.separate(np.ones((2, 10), dtype=np.float32), seen.append)
    assert seen == [0.5, 1.0]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("vocals=roformer,drums=roformer", "has no stem 'drums'"),
        ("vocals=", "without a stem or a model"),
        ("vocals=roformer,vocals=demucs", "names 'vocals' twice"),
    ],
)
def test_a_wrong_ensemble_is_refused_naming_the_problem(models, spec, problem):
    with pytest.raises(InvalidOptionError, match=problem):
        EnsembleSeparator(spec, models.__getitem__)


def test_parse_reads_what_people_type():
    assert parse_ensemble("vocals = max_fft: a + b, drums=c") == {
        "vocals": ("max_fft", ["a", "b"]),
        "drums": ("avg_wave", ["c"]),
    }


def test_an_unknown_rule_is_refused_with_the_known_ones(models):
    with pytest.raises(InvalidOptionError, match="unknown rule 'loudest'") as error:
        EnsembleSeparator("vocals=loudest:roformer+demucs", models.__getitem__)
    assert "max_fft" in str(error.value.fix)


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_combines_as_msst_ensemble_does(rule):
    reference = pytest.importorskip(
        "msst._ensemble", reason="the MSST reference: pip install --no-deps msst==0.1.0"
    )
    rng = np.random.default_rng(5)
    estimates = rng.standard_normal((3, 2, 20_000)).astype(np.float32)
    if rule == "max_fft":  # MSST's absmax fails on numpy 2 (np.ogrid gives a tuple); the
        # same rule through its lambda_max, as its min_fft does it
        specs = np.array([reference.stft(wave, nfft=2048, hl=1024) for wave in estimates])
        loudest = reference.lambda_max(specs, axis=0, key=np.abs)
        theirs = reference.istft(loudest, 1024, estimates.shape[-1])
    else:
        theirs = reference.average_waveforms(estimates, [1.0, 1.0, 1.0], rule)
    np.testing.assert_allclose(combine(estimates, rule), theirs, rtol=0, atol=1e-6)


def test_a_split_with_an_ensemble_of_real_models_sums_to_the_input(tmp_path, tiny_checkpoint):
    song = write_wav(tmp_path / "song.wav", noise(seconds=2.0))
    tiny = str(tiny_checkpoint)
    separator = load_separator(f"vocals=dsp,drums={tiny},bass={tiny},other={tiny}")
    result = split_file(song, separator, tmp_path / "out")
    assert list(result.stems) == ["vocals", "drums", "bass", "other"]
    stems = [soundfile.read(path, dtype="float32")[0] for path in result.stems.values()]
    np.testing.assert_allclose(sum(stems), soundfile.read(song, dtype="float32")[0], atol=1e-5)
