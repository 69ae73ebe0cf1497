"""A job's files reach the output folder all at once or not at all, manifest last, and
whatever a cut-short delivery left is undone without touching the user's files
(issue 14, point 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daw_bridge import delivery as delivery_module
from daw_bridge.delivery import Delivery, staging_folder, sweep, undo
from daw_bridge.errors import OutputExistsError, OutputFolderError
from tests.drives import small_drive

STEMS = ("bass", "drums", "other", "vocals")


def stage_a_set(delivery: Delivery, preset: str | None = None) -> None:
    for name in STEMS:
        delivery.path(f"{name}.wav").write_text(f"new {name}")
        if preset:
            delivery.path(f"{preset}/{name}.wav").write_text(f"processed {name}")
    delivery.path("drums.mid").write_text("midi")
    delivery.path("manifest.json").write_text("{}")


def everything(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) with its text."""
    return {
        str(path.relative_to(folder)): path.read_text()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_the_set_appears_whole_with_the_manifest_last(tmp_path, monkeypatch):
    appeared: list[str] = []
    real_publish, real_replace = delivery_module.publish, os.replace

    def publish(staged: Path, final: Path, overwrite: bool) -> None:
        appeared.append(final.name)
        real_publish(staged, final, overwrite)

    def replace(source, target) -> None:
        if Path(target).parent.name == "karaoke":
            appeared.append(f"karaoke/{Path(target).name}")
        real_replace(source, target)

    monkeypatch.setattr(delivery_module, "publish", publish)
    monkeypatch.setattr(delivery_module.os, "replace", replace)
    folder = tmp_path / "out"
    with Delivery(folder, "job1") as delivery:
        stage_a_set(delivery, preset="karaoke")
        assert not any(path.name[0] != "." for path in folder.iterdir())  # nothing visible yet
        delivery.publish(replace_in=["karaoke"])
    assert appeared[-1] == "manifest.json" and len(appeared) == 10
    assert everything(folder) == {
        **{f"{name}.wav": f"new {name}" for name in STEMS},
        **{f"karaoke/{name}.wav": f"processed {name}" for name in STEMS},
        "drums.mid": "midi",
        "manifest.json": "{}",
    }


def test_a_failure_before_publishing_leaves_nothing_not_even_the_folder(tmp_path):
    folder = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), Delivery(folder, "job1") as delivery:
        stage_a_set(delivery)
        raise RuntimeError("the preset crashed")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_stem_is_refused_before_anything_moves(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "vocals.wav").write_text("mine")
    with pytest.raises(OutputExistsError), Delivery(folder, "job1") as delivery:
        stage_a_set(delivery)
        delivery.publish()
    assert everything(folder) == {"vocals.wav": "mine"}


def test_a_preset_folder_is_replaced_as_a_set_and_other_files_stay(tmp_path):
    folder = tmp_path / "out"
    (folder / "karaoke").mkdir(parents=True)
    (folder / "karaoke" / "vocals.wav").write_text("old processed")
    (folder / "notes.txt").write_text("the user's")
    with Delivery(folder, "job2") as delivery:
        delivery.path("karaoke/vocals.wav").write_text("new processed")
        delivery.publish(replace_in=["karaoke"])
    assert everything(folder) == {
        "karaoke/vocals.wav": "new processed",
        "notes.txt": "the user's",
    }


_KILLED_MID_PUBLISH = """
import os, sys
from pathlib import Path
from daw_bridge import delivery as module
from daw_bridge.delivery import Delivery

renames = 0
real_replace, real_link = os.replace, os.link

def counted(real):
    def rename(*args):
        global renames
        renames += 1
        if renames > int(sys.argv[2]):
            os._exit(9)  # as kill -9: no cleanup of any kind
        real(*args)
    return rename

folder = Path(sys.argv[1])
with Delivery(folder, "job1") as delivery:
    for name in ("bass", "drums", "other", "vocals"):
        delivery.path(f"{name}.wav").write_text(f"new {name}")
    delivery.path("manifest.json").write_text("{}")
    os.replace, os.link = counted(real_replace), counted(real_link)
    module.shutil.rmtree = lambda *args, **kwargs: os._exit(9)  # all in place, not cleaned up
    delivery.publish(overwrite=True)
"""


@pytest.mark.parametrize("renames_before_the_kill", range(9))
def test_a_delivery_killed_mid_publish_is_undone_and_replaced_stems_come_back(
    tmp_path, renames_before_the_kill
):
    """kill -9 after any rename: the next start (``undo``) restores the folder as it was,
    or, once every file is in place, keeps the new set.

    The publish takes 8 renames: the journal, bass, drums and other, then vocals
    and the manifest two each (the old file aside, the new one in).
    """
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "vocals.wav").write_text("old vocals")
    (folder / "manifest.json").write_text("old manifest")
    (folder / ".hidden-but-mine").write_text("user")
    script = tmp_path / "publish.py"
    script.write_text(textwrap.dedent(_KILLED_MID_PUBLISH))
    child = subprocess.run(
        [sys.executable, str(script), str(folder), str(renames_before_the_kill)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert child.returncode == 9, child.stderr
    undo(staging_folder(folder, "job1"))
    found = everything(folder)
    if renames_before_the_kill == 8:  # killed after the whole set was in place
        assert found == {
            **{f"{name}.wav": f"new {name}" for name in STEMS},
            "manifest.json": "{}",
            ".hidden-but-mine": "user",
        }
    else:
        assert found == {
            "vocals.wav": "old vocals",
            "manifest.json": "old manifest",
            ".hidden-but-mine": "user",
        }


def test_sweep_undoes_finished_jobs_stagings_and_stale_partials_only(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    for tag in ("dead", "running"):
        staging = staging_folder(folder, tag)
        staging.mkdir()
        (staging / "vocals.wav").write_text("half")
    stale = folder / ".vocals.partial-0123abcd.wav"
    fresh = folder / ".drums.partial-89abcdef.wav"
    for path in (stale, fresh):
        path.write_text("half")
    old = os.path.getmtime(stale) - 2 * delivery_module.LOOSE_PARTIAL_SECONDS
    os.utime(stale, (old, old))
    (folder / ".vocals.partial-mine.wav").write_text("a file of the user's")
    sweep(folder, finished=lambda tag: tag == "dead")
    assert sorted(path.name for path in folder.iterdir()) == [
        ".daw-bridge-running.partial",
        ".drums.partial-89abcdef.wav",
        ".vocals.partial-mine.wav",
    ]


def test_a_full_drive_is_named_and_nothing_is_left_on_it(tmp_path):
    with small_drive(tmp_path / "drive") as drive:
        folder = drive / "stems"
        with pytest.raises(OutputFolderError) as refused, Delivery(folder, "job1") as delivery:
            for name in STEMS:
                delivery.path(f"{name}.wav").write_bytes(bytes(400_000))
            delivery.publish()
        assert str(folder) in refused.value.problem and "full" in refused.value.problem
        assert "Free some space" in refused.value.fix
        assert list(drive.iterdir()) == []
