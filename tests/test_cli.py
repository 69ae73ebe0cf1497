"""The ``daw-bridge`` command: what a producer types and what they read back."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from daw_bridge.audio.io import read_span
from daw_bridge.cli import main
from tests.conftest import EVAL_SONGS, SOURCES, free_port, killed_splits_staging, noise, write_wav
from tests.output_folders import UNUSABLE, unusable_folder


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No weights anywhere and the download URL is a closed local port."""
    monkeypatch.setenv("DAW_BRIDGE_MODEL_URL", f"http://127.0.0.1:{free_port()}/")
    monkeypatch.setenv("DAW_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DAW_BRIDGE_MODEL_DIR", raising=False)


@pytest.fixture
def song(tmp_path):
    return write_wav(tmp_path / "My Song.wav", noise(seconds=2.0))


def test_split_writes_stems_and_manifest(tmp_path, song, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    code = main(["split", str(song), "--model", str(tiny_checkpoint), "--out", str(out), "-q"])
    assert code == 0
    folder = out / tiny_checkpoint.stem / "My Song"
    manifest = json.loads((folder / "manifest.json").read_text())
    stems = [read_span(folder / f"{name}.wav").samples for name in manifest["stems"]]
    np.testing.assert_allclose(sum(stems), read_span(song).samples, atol=1e-6)
    assert str(folder / "vocals.wav") in capsys.readouterr().out


def test_split_a_span_with_two_stems(tmp_path, song, tiny_checkpoint):
    out = tmp_path / "out"
    args = ["split", str(song), "--start", "0.5", "--duration", "1", "--two-stems", "vocals"]
    assert main([*args, "--model", str(tiny_checkpoint), "--out", str(out), "-q"]) == 0
    folder = out / tiny_checkpoint.stem / "My Song [0.500-1.500s]"
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "no_vocals.wav",
        "vocals.wav",
    ]


def run_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda p: p / "missing.wav", [], "not found"),
        (lambda p: (p / "x.wav").write_text("text") and p / "x.wav", [], "Cannot read"),
        (lambda p: write_wav(p / "six.wav", noise(6, 0.2)), [], "6 channels"),
        (lambda p: write_wav(p / "z.wav", np.zeros((2, 0), np.float32)), [], "no audio"),
        (lambda p: write_wav(p / "s.wav", noise(seconds=1.0)), ["--start", "5"], "outside"),
    ],
)
def test_bad_input_is_one_clear_message(tmp_path, capsys, tiny_checkpoint, make, extra, message):
    path = make(tmp_path)
    err = run_error(capsys, ["split", str(path), "--model", str(tiny_checkpoint), *extra])
    assert message in err and "How to fix:" in err


def test_nan_input_is_refused(tmp_path, capsys, tiny_checkpoint):
    samples = noise(seconds=0.5)
    samples[1, 100] = np.nan
    path = write_wav(tmp_path / "nan.wav", samples)
    assert "NaN" in run_error(capsys, ["split", str(path), "--model", str(tiny_checkpoint)])


def test_silence_gives_silent_stems(tmp_path, tiny_checkpoint):
    path = write_wav(tmp_path / "quiet.wav", np.zeros((2, 22050), np.float32))
    out = tmp_path / "out"
    assert main(["split", str(path), "--model", str(tiny_checkpoint), "--out", str(out), "-q"]) == 0
    for stem in (out / tiny_checkpoint.stem / "quiet").glob("*.wav"):
        assert np.abs(read_span(stem).samples).max() < 1e-6


def test_offline_without_weights_says_how_to_fix_it(song, capsys):
    err = run_error(capsys, ["split", str(song)])
    assert "955717e8-8726e21a.th" in err
    assert "--model-dir" in err and "--model dsp" in err


def test_existing_stems_are_not_overwritten(tmp_path, song, tiny_checkpoint, capsys):
    argv = ["split", str(song), "--model", str(tiny_checkpoint), "--out", str(tmp_path), "-q"]
    assert main(argv) == 0
    assert "--overwrite" in run_error(capsys, argv)
    assert main([*argv, "--overwrite"]) == 0


def test_unknown_device_and_model(song, capsys):
    assert "Unknown device" in run_error(capsys, ["split", str(song), "--device", "tpu"])
    assert "Known models" in run_error(capsys, ["split", str(song), "--model", "spleeter"])


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "daw_bridge", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "daw-bridge" in result.stdout


def test_demo_offline_falls_back_to_dsp_with_a_loud_warning(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "-q"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "'htdemucs' is not available" in captured.err
    assert "How to fix" in captured.err or "--model-dir" in captured.err
    for stem in ("drums", "bass", "other", "vocals"):
        assert (tmp_path / "dsp" / "demo_clip" / f"{stem}.wav").is_file()
        assert f"  {stem}" in captured.out
    assert "sum back to the clip" in captured.out


def test_demo_with_a_model_gives_no_warning(tmp_path, capsys, tiny_checkpoint):
    assert main(["demo", "--out", str(tmp_path), "--model", str(tiny_checkpoint), "-q"]) == 0
    assert "WARNING" not in capsys.readouterr().err


@pytest.mark.skipif(not EVAL_SONGS.is_dir(), reason=f"no evaluation songs at {EVAL_SONGS}")
def test_split_a_real_song_with_dsp_into_stems_that_sum_to_the_mix(tmp_path):
    song = sorted(EVAL_SONGS.glob("*/mixture.flac"))[0]
    assert main(["split", str(song), "--model", "dsp", "--out", str(tmp_path), "-q"]) == 0
    folder = tmp_path / "dsp" / "mixture"
    stems = [read_span(folder / f"{s}.wav").samples for s in ("drums", "bass", "other", "vocals")]
    np.testing.assert_allclose(sum(stems), read_span(song).samples, atol=1e-5)


@pytest.fixture
def dsp_server(tmp_path, monkeypatch):
    """`daw-bridge serve --model dsp` on a thread; yields the client command; shuts it down."""
    import threading

    address = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("DAW_BRIDGE_STATE_DIR", str(tmp_path / "state"))
    server = threading.Thread(target=main, args=(["serve", "--bind", address, "--model", "dsp"],))
    server.start()
    try:
        yield ["client", "--server", address, "--timeout", "30"]
    finally:
        main(["client", "--server", address, "shutdown"])
        server.join(30)
    assert not server.is_alive()


def test_client_and_server_commands_end_to_end(tmp_path, song, dsp_server, capsys):
    """What the README shows: serve, client split with a status file, status, shutdown."""
    client = dsp_server
    status_file = tmp_path / "status.txt"
    out = tmp_path / "Stems" / "Verse 1"
    argv = [*client, "split", str(song), "--out", str(out), "--status-file", str(status_file)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-5].startswith("done 100%") and len(printed) == len(set(printed))
    assert "state=done" in status_file.read_text()
    assert (out / "vocals.wav").is_file() and (out / "manifest.json").is_file()
    assert main([*client, "status"]) == 0
    assert '"model": "dsp"' in capsys.readouterr().out


def test_presets_list_show_and_validate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DAW_BRIDGE_PRESET_DIR", str(tmp_path / "mine"))
    assert main(["presets", "list"]) == 0
    listed = capsys.readouterr().out
    for name in ("clean-vocals", "lofi-drums", "sub-bass", "acapella", "karaoke"):
        assert name in listed
    assert str(tmp_path / "mine") in listed
    assert main(["presets", "show", "karaoke"]) == 0
    shown = capsys.readouterr().out
    assert 'name = "karaoke"' in shown and "karaoke.toml" in shown.splitlines()[0]
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[stems.vox]\nmute = true\n')
    assert main(["presets", "validate", "acapella", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "OK acapella" in captured.out
    assert f"{bad}: stems.vox: 'vox' is not a stem" in captured.err and "no_vocals" in captured.err
    assert "Traceback" not in captured.err


def test_split_with_a_preset_writes_processed_stems_in_a_subfolder(tmp_path, song, capsys):
    out = tmp_path / "out"
    argv = ["split", str(song), "--model", "dsp", "--out", str(out), "-q"]
    assert main([*argv, "--preset", "instrumental"]) == 0
    folder = out / "dsp" / "My Song"
    assert not read_span(folder / "instrumental" / "vocals.wav").samples.any()
    np.testing.assert_array_equal(
        read_span(folder / "instrumental" / "drums.wav").samples,
        read_span(folder / "drums.wav").samples,
    )
    assert str(folder / "instrumental" / "vocals.wav") in capsys.readouterr().out
    # An unknown preset is refused before any separation.
    assert "no preset named" in run_error(capsys, [*argv, "--preset", "nope", "--overwrite"])


#: Each command that writes, without its --out; SONG stands for the input file.
WRITING_COMMANDS = {
    "split": ["split", "SONG"],
    "split --preset": ["split", "SONG", "--preset", "karaoke"],
    "split --midi": ["split", "SONG", "--midi", "drums"],
    "demo": ["demo"],
}


@pytest.mark.parametrize("case", UNUSABLE)
@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_an_unusable_output_folder_is_refused_before_the_model_loads(
    tmp_path, song, capsys, monkeypatch, command, case
):
    def no_model(_args):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr("daw_bridge.cli._load", no_model)
    with unusable_folder(case, tmp_path) as (bad, says):
        argv = [str(song) if arg == "SONG" else arg for arg in WRITING_COMMANDS[command]]
        error = run_error(capsys, [*argv, "--out", str(bad), "-q"])
    assert str(bad) in error and says in error
    assert "How to fix: Choose an output folder you can write to" in error


def test_client_split_to_an_unusable_folder_is_refused_at_once(tmp_path, song, dsp_server, capsys):
    (tmp_path / "taken").write_text("a file")
    argv = [*dsp_server, "split", str(song), "--out", str(tmp_path / "taken")]
    error = run_error(capsys, argv)
    assert f"{tmp_path / 'taken'} is a file" in error and "How to fix:" in error
    assert main([*dsp_server, "split", str(song), "--out", str(tmp_path / "fine"), "-q"]) == 0


def test_client_split_with_a_preset_then_apply_another(tmp_path, song, dsp_server, capsys):
    client = dsp_server
    out = tmp_path / "Stems"
    assert main([*client, "split", str(song), "--out", str(out), "--preset", "karaoke"]) == 0
    printed = capsys.readouterr().out
    job = next(line.split()[1] for line in printed.splitlines() if line.startswith("job "))
    assert str(out / "karaoke" / "vocals.wav") in printed
    status = tmp_path / "status.txt"
    argv = [*client, "apply", job, "--preset", "acapella", "--status-file", str(status), "-q"]
    assert main(argv) == 0
    lines = status.read_text().splitlines()
    assert "state=done" in lines and "preset=acapella" in lines
    assert f"processed.vocals={out / 'acapella' / 'vocals.wav'}" in lines
    assert f"stem.vocals={out / 'vocals.wav'}" in lines
    assert "no preset named" in run_error(capsys, [*client, "apply", job, "--preset", "x"])


def test_backend_option_picks_the_path_and_openvino_stays_within_minus_60_db_of_torch(
    tmp_path, song, tiny_checkpoint
) -> None:
    stems = {}
    for backend in ("torch", "openvino"):
        out = tmp_path / backend
        argv = ["split", str(song), "--model", str(tiny_checkpoint), "--out", str(out), "-q"]
        assert main([*argv, "--backend", backend, "--no-residual"]) == 0
        folder = out / tiny_checkpoint.stem / "My Song"
        stems[backend] = np.stack([read_span(folder / f"{n}.wav").samples for n in SOURCES])
    difference = np.linalg.norm(stems["openvino"] - stems["torch"])
    assert difference > 0  # the option reached the engine: two different code paths
    assert 20 * np.log10(difference / np.linalg.norm(stems["torch"])) < -60


def test_bf16_backend_on_a_cpu_without_bf16_is_refused_with_the_fix(
    tmp_path, song, tiny_checkpoint, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("daw_bridge.separation.backends._cpu_capabilities", lambda: ("FP32",))
    argv = ["split", str(song), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o")]
    error = run_error(capsys, [*argv, "--backend", "openvino-bf16"])
    assert "no bfloat16 arithmetic" in error and "Use the openvino backend" in error
    assert not (tmp_path / "o").exists()


def test_split_keeping_two_stems_gives_them_and_rest(tmp_path, song, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    args = ["split", str(song), "--keep", "drums, bass", "--model", str(tiny_checkpoint)]
    assert main([*args, "--out", str(out), "-q"]) == 0
    folder = out / tiny_checkpoint.stem / "My Song"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["bass.wav", "drums.wav", "manifest.json", "rest.wav"]
    stems = [soundfile.read(folder / n, dtype="float32")[0] for n in names if n.endswith(".wav")]
    mix = soundfile.read(song, dtype="float32")[0]
    np.testing.assert_allclose(sum(stems), mix, atol=1e-5)
    assert str(folder / "rest.wav") in capsys.readouterr().out


def test_split_keeping_a_stem_the_model_lacks_fails_before_inference(
    tmp_path, song, tiny_checkpoint, monkeypatch, capsys
):
    from daw_bridge.separation import pipeline

    monkeypatch.setattr(pipeline, "split_file", lambda *a, **k: pytest.fail("separated"))
    args = ["split", str(song), "--keep", "kazoo", "--model", str(tiny_checkpoint)]
    assert main([*args, "--out", str(tmp_path / "out"), "-q"]) != 0
    assert "'kazoo' is not a stem" in capsys.readouterr().err


def files_in(folder):
    """Every file and folder under ``folder``, hidden ones included, with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else "folder"
        for p in folder.rglob("*")
    }


def test_a_split_that_fails_midway_leaves_the_earlier_stems_as_they_were(
    tmp_path, song, tiny_checkpoint, monkeypatch, capsys
):
    """Before: stems were written one by one into place, so an --overwrite split that failed
    after two stems left a mix of new and old stems beside an old manifest."""
    from daw_bridge.separation import keep

    argv = ["split", str(song), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "out")]
    assert main([*argv, "-q"]) == 0
    folder = tmp_path / "out" / tiny_checkpoint.stem / "My Song"
    before = files_in(folder)

    def fail(*_args, **_kwargs):
        raise OSError(28, "No space left on device", str(folder / "rest.wav"))

    monkeypatch.setattr(keep, "_write_sum", fail)  # after every new stem was written
    assert main([*argv, "--overwrite", "--format", "int16", "--keep", "vocals", "-q"]) != 0
    assert "full" in capsys.readouterr().err
    assert files_in(folder) == before  # no hidden staging folder either


def test_what_a_killed_split_left_is_undone_by_the_next_split_there(
    tmp_path, song, tiny_checkpoint
):
    folder = tmp_path / "out" / tiny_checkpoint.stem / "My Song"
    staging = killed_splits_staging(folder)
    (folder / "mine.txt").write_text("the user's")
    argv = ["split", str(song), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "out")]
    assert main([*argv, "-q"]) == 0
    assert not staging.exists()
    assert (folder / "mine.txt").read_text() == "the user's"
    assert sorted(p.name for p in folder.iterdir()) == [
        "bass.wav", "drums.wav", "manifest.json", "mine.txt", "other.wav", "vocals.wav"
    ]  # fmt: skip


def test_split_with_a_drum_kit_puts_the_pieces_and_rest_in_a_drums_folder(
    tmp_path, song, tiny_checkpoint, capsys
):
    """Any model can serve as the drum kit; here the tiny one: its four outputs are the
    pieces, and rest makes them add up to the drums stem."""
    out = tmp_path / "out"
    args = ["split", str(song), "--model", str(tiny_checkpoint), "--drum-kit", "dsp"]
    assert main([*args, "--out", str(out), "-q"]) == 0
    folder = out / tiny_checkpoint.stem / "My Song"
    pieces = sorted((folder / "drums").glob("*.wav"))
    assert [p.stem for p in pieces] == ["bass", "drums", "other", "rest", "vocals"]
    drums = soundfile.read(folder / "drums.wav", dtype="float64")[0]
    total = sum(soundfile.read(p, dtype="float64")[0] for p in pieces)
    np.testing.assert_allclose(total, drums, atol=1e-6)
    assert "drums: rest" in capsys.readouterr().out


def test_a_drum_kit_without_a_drums_stem_to_split_is_refused_before_inference(
    tmp_path, song, tiny_checkpoint, capsys
):
    args = ["split", str(song), "--model", str(tiny_checkpoint), "--drum-kit", "dsp"]
    assert main([*args, "--keep", "vocals", "--out", str(tmp_path / "out"), "-q"]) != 0
    assert "--keep leaves it out" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_split_with_an_msst_checkpoint_whose_config_lies_elsewhere(tmp_path, song, capsys):
    """`--model path/model.ckpt --model-config FILE`: the config need not sit beside it."""
    import torch
    import yaml

    from daw_bridge.models.msst.config import load_config
    from daw_bridge.models.msst.separator import build_model
    from tests.models.msst.conftest import config_path

    config = load_config(config_path("config_vocals_mdx23c.yaml"))
    config["model"].update(num_channels=8, growth=8)
    config["audio"]["chunk_size"] = 31 * 1024
    config["inference"].pop("chunk_size", None)
    torch.manual_seed(0)
    (tmp_path / "weights").mkdir()
    checkpoint = tmp_path / "weights" / "vocals.ckpt"
    torch.save(build_model("mdx23c", config).state_dict(), checkpoint)
    elsewhere = tmp_path / "configs" / "vocals-config.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(yaml.dump(config), encoding="utf-8")
    out = tmp_path / "out"

    error = run_error(capsys, ["split", str(song), "--model", str(checkpoint), "--out", str(out)])
    assert "vocals.yaml" in error  # no config beside it: says where to save it

    argv = ["split", str(song), "--model", str(checkpoint), "--model-config", str(elsewhere)]
    assert main([*argv, "--out", str(out)]) == 0
    stems = sorted(path.name for path in (out / "vocals").rglob("*.wav"))
    assert stems == ["other.wav", "vocals.wav"]

    error = run_error(capsys, ["split", str(song), "--model-config", str(elsewhere)])
    assert "--model-config is for an MSST checkpoint" in error
