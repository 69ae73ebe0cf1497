"""Model names and checkpoint files become ready separators; bad ones fail clearly.

The checkpoints here are the files the world ships, or made the way they were
made: ``../shared/models/official-format`` holds small files pickled exactly like
Meta's release files, and every other checkpoint is saved by
``tests.conftest.save_checkpoint`` the same way. What we load is compared with
what demucs itself loads from the same file.
"""

from __future__ import annotations

import dataclasses
import pickle
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from daw_bridge import cli
from daw_bridge.errors import ModelUnavailableError
from daw_bridge.models import catalog
from daw_bridge.models.catalog import ModelFile, ModelSpec
from daw_bridge.models.loader import load_checkpoint, load_separator, model_names
from tests.conftest import (
    SHARED_MODELS,
    official_metrics,
    save_checkpoint,
    save_hub_safetensors,
    sha256_of,
    tiny_htdemucs,
)

OFFICIAL = SHARED_MODELS / "official-format"
OFFICIAL_FILES = sorted(OFFICIAL.glob("*.th"))
needs_official = pytest.mark.skipif(
    not OFFICIAL_FILES, reason=f"no official-format checkpoints in {OFFICIAL}"
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("DAW_BRIDGE_MODEL_DIR", raising=False)
    monkeypatch.setenv("DAW_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


def bag_names() -> dict[str, str]:
    """Signature -> the bag yaml in the official-format folder that names it."""
    names = {}
    for bag in OFFICIAL.glob("*.yaml"):
        for signature in yaml.safe_load(bag.read_text())["models"]:
            names[signature] = bag.stem
    return names


def pickled_globals(path: Path) -> set[str]:
    """The module/name pairs a torch checkpoint's pickle asks for."""
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        data = archive.read(name)
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def assert_same_parameters(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert ours_state.keys() == reference_state.keys()
    for key, value in reference_state.items():
        assert torch.equal(ours_state[key], value), key


def mix(seconds: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    return 0.3 * torch.randn(2, int(seconds * 44100), generator=generator)


def catalog_pointing_at(monkeypatch, name: str, filename: str) -> None:
    """The test's catalog override: ``name`` uses the official-format file, as the real one."""
    spec = dataclasses.replace(catalog.MODELS[name], files=(ModelFile(filename),))
    monkeypatch.setitem(catalog.MODELS, name, spec)


# --------------------------------------------------------------------------- official files


@needs_official
@pytest.mark.parametrize("path", OFFICIAL_FILES, ids=lambda p: p.name)
def test_official_release_files_load_by_path_with_demucs_own_parameters(path: Path) -> None:
    from demucs.pretrained import get_model

    ours = load_checkpoint(path)
    (reference,) = get_model(bag_names()[path.name.split("-")[0]], repo=OFFICIAL).models

    assert type(ours) is type(reference)
    assert_same_parameters(ours, reference)


@needs_official
@pytest.mark.parametrize(
    ("name", "path"),
    [(bag_names()[p.name.split("-")[0]], p) for p in OFFICIAL_FILES] if OFFICIAL_FILES else [],
    ids=lambda value: getattr(value, "name", value),
)
def test_official_files_by_name_separate_exactly_like_apply_model(
    name: str, path: Path, monkeypatch
) -> None:
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    catalog_pointing_at(monkeypatch, name, path.name)
    separator = load_separator(
        name, model_dir=OFFICIAL, device="cpu", download=False, backend="torch"
    )
    reference = get_model(name, repo=OFFICIAL)
    audio = mix()

    ours = separator.engine.apply(audio)
    expected = apply_model(reference, audio[None], shifts=0, split=True, overlap=0.25)[0]

    assert_same_parameters(separator.engine.models[0], reference.models[0])
    assert torch.allclose(ours, expected, rtol=0, atol=1e-6)


@needs_official
def test_split_by_name_with_the_official_file_gives_stems_that_sum_to_the_input(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """``daw-bridge split --model htdemucs --model-dir <official-format>``, read by libsndfile.

    The reference is demucs's own ``demucs.api.Separator`` on the same file.
    """
    from demucs.api import Separator

    catalog_pointing_at(monkeypatch, "htdemucs", "955717e8-aa8c2673.th")
    song = tmp_path / "song.wav"
    audio = mix(3.0).numpy()
    soundfile.write(song, audio.T, 44100, subtype="FLOAT")
    out = tmp_path / "out"

    options = ["--model", "htdemucs", "--model-dir", str(OFFICIAL), "--no-download"]
    code = cli.main(["split", str(song), *options, "--out", str(out), "--device", "cpu"])

    assert code == 0, capsys.readouterr().err
    folder = out / "htdemucs" / "song"
    stems = {p.stem: soundfile.read(p, dtype="float32")[0].T for p in folder.glob("*.wav")}
    assert sorted(stems) == ["bass", "drums", "other", "vocals"]
    np.testing.assert_allclose(sum(stems.values()), audio, atol=1e-5)
    reference = Separator("htdemucs", repo=OFFICIAL, device="cpu", shifts=0)
    _, expected = reference.separate_tensor(torch.from_numpy(audio), 44100)
    for stem in ("drums", "bass", "vocals"):  # "other" also holds the residual
        error = np.linalg.norm(stems[stem] - expected[stem].numpy())
        assert error / np.linalg.norm(expected[stem].numpy()) < 1e-4, stem  # OpenVINO float32


@needs_official
def test_our_test_checkpoints_are_pickled_like_the_official_files(tmp_path: Path) -> None:
    ours = save_checkpoint(tiny_htdemucs(), tmp_path, "0badc0de")

    assert pickled_globals(ours) == pickled_globals(OFFICIAL / "955717e8-aa8c2673.th")
    assert "numpy.core.multiarray scalar" in pickled_globals(ours)


def test_a_checkpoint_made_today_by_demucs_own_functions_loads_as_demucs_loads_it(
    tmp_path: Path,
) -> None:
    """The release recipe run with the installed demucs and numpy: a change in either shows."""
    from demucs.states import load_model, save_with_checksum, serialize_model
    from omegaconf import OmegaConf

    model = tiny_htdemucs(seed=4)
    package = serialize_model(model, OmegaConf.create({"epochs": 1}), half=True)
    package["metrics"] = official_metrics()
    save_with_checksum(package, tmp_path / "f00dfeed.th")
    (path,) = tmp_path.glob("f00dfeed-*.th")

    assert_same_parameters(load_checkpoint(path), load_model(str(path)))


@needs_official
@pytest.mark.parametrize("path", OFFICIAL_FILES, ids=lambda p: p.name)
def test_hub_safetensors_load_as_demucs_own_hub_loader_loads_them(
    path: Path, tmp_path: Path
) -> None:
    from demucs.hf import load_safetensors_model

    converted = save_hub_safetensors(path, tmp_path)

    ours = load_checkpoint(converted)
    assert_same_parameters(ours, load_safetensors_model(converted))
    assert_same_parameters(ours, load_checkpoint(path))


# --------------------------------------------------------------------------- names and paths


def test_local_checkpoint_file(tiny_checkpoint):
    separator = load_separator(str(tiny_checkpoint), device="cpu")
    assert separator.name == tiny_checkpoint.stem
    assert separator.sources == ("drums", "bass", "other", "vocals")
    assert separator.samplerate == 44100


def test_named_model_from_model_dir_as_a_weighted_bag(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    files = [save_checkpoint(tiny_htdemucs(seed=s), folder, f"aaaa000{s}") for s in (1, 2)]
    spec = ModelSpec(
        "tinybag",
        tuple(ModelFile(f.name) for f in files),
        weights=((1, 1, 0, 0), (0, 0, 1, 1)),
    )
    monkeypatch.setitem(catalog.MODELS, "tinybag", spec)
    separator = load_separator("tinybag", model_dir=folder, device="cpu", download=False)
    assert separator.name == "tinybag"
    assert len(separator.engine.models) == 2
    assert separator.engine.weights == [[1, 1, 0, 0], [0, 0, 1, 1]]


def test_names_include_dsp_and_the_catalog():
    from daw_bridge.models.msst.catalog import MSST_MODELS

    demucs = ["htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi"]
    assert model_names() == [*demucs, *MSST_MODELS, "dsp"]


# --------------------------------------------------------------------------- honest errors


def test_missing_weights_name_the_fix(tmp_path):
    with pytest.raises(ModelUnavailableError) as error:
        load_separator("htdemucs", download=False)
    assert "955717e8-8726e21a.th" in str(error.value)
    assert "--model dsp" in error.value.fix and "--model-dir" in error.value.fix


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(ModelUnavailableError, match="not found"):
        load_separator(str(tmp_path / "mine.th"))


def assert_names_the_supported_formats(error: ModelUnavailableError) -> None:
    assert "not a checkpoint daw-bridge can load" in error.problem
    assert ".th" in str(error.fix) and ".safetensors" in str(error.fix)
    assert "weights_only" not in str(error)  # torch's advice would run the file's code


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.th"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(ModelUnavailableError) as error:
        load_separator(str(path))
    assert_names_the_supported_formats(error.value)
    assert "download" not in str(error.value.fix)  # downloading again cannot help


def test_checkpoint_without_a_model(tmp_path):
    path = tmp_path / "state.th"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ModelUnavailableError, match="no 'klass'") as error:
        load_separator(str(path))
    assert_names_the_supported_formats(error.value)


def test_a_pickle_naming_a_type_no_checkpoint_needs_is_refused_without_torch_advice(tmp_path):
    path = tmp_path / "odd.th"
    package = {"klass": type(tiny_htdemucs()), "kwargs": {}, "state": {}}
    package["extra"] = zipfile.ZipInfo  # harmless, but outside the allow-list
    torch.save(package, path)

    with pytest.raises(ModelUnavailableError) as error:
        load_separator(str(path))

    assert "zipfile.ZipInfo" in error.value.problem
    assert "nothing in the file ran" in error.value.problem
    assert_names_the_supported_formats(error.value)


class _Exploit:
    """Unpickling this would create a file: what a booby-trapped checkpoint could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.th"
    with open(path, "wb") as handle:
        pickle.dump({"klass": _Exploit(str(marker)), "kwargs": {}, "state": {}}, handle, protocol=2)
    with pytest.raises(ModelUnavailableError):
        load_separator(str(path))
    assert not marker.exists()


def test_a_safetensors_file_naming_another_class_is_refused_and_nothing_runs(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """demucs's own hub loader would import and call whatever class the metadata names."""
    from safetensors.torch import load_file, save_file

    honest = save_hub_safetensors(tiny_checkpoint, tmp_path / "honest")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.safetensors"
    metadata = {"klass": "builtins.open", "args": f'["{marker}", "w"]', "kwargs": "{}"}
    save_file(load_file(str(honest)), str(evil), metadata=metadata)

    with pytest.raises(ModelUnavailableError) as error:
        load_separator(str(evil))

    assert "'builtins.open' is not one of demucs's models" in error.value.problem
    assert not marker.exists()


@needs_official
def test_a_checkpoint_that_does_not_match_the_checksum_in_its_name_is_damaged(tmp_path):
    original = OFFICIAL / "955717e8-aa8c2673.th"
    damaged = tmp_path / original.name
    data = bytearray(original.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))

    with pytest.raises(ModelUnavailableError) as error:
        load_separator(str(damaged))

    assert "damaged" in error.value.problem and "aa8c2673" in error.value.problem
    assert "Delete it and download it again" in str(error.value.fix)


def test_a_verified_file_that_still_fails_to_load_is_reported_as_our_bug(tmp_path, monkeypatch):
    """A file that passed its checksum is the official one: downloading again cannot help."""
    folder = tmp_path / "weights"
    folder.mkdir()
    junk = b"pretend this is an official file we cannot read"
    (folder / "unused").write_bytes(junk)
    name = f"c0ffee00-{sha256_of(folder / 'unused')[:8]}.th"
    (folder / "unused").rename(folder / name)
    monkeypatch.setitem(catalog.MODELS, "broken", ModelSpec("broken", (ModelFile(name),)))

    with pytest.raises(ModelUnavailableError) as error:
        load_separator("broken", model_dir=folder, device="cpu", download=False)

    assert "passed its checksum" in error.value.problem
    assert "bug in daw-bridge" in str(error.value.fix)
    assert "weights_only" not in str(error.value)
