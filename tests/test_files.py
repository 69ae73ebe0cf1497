"""Files the user owns appear complete or not at all, and are never clobbered; an
output folder that cannot take them is refused before any work."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daw_bridge.errors import OutputExistsError, OutputFolderError
from daw_bridge.files import atomic_output, check_output_folder
from tests.output_folders import UNUSABLE, unusable_folder


def test_file_appears_only_when_complete(tmp_path):
    final = tmp_path / "out" / "manifest.json"
    with atomic_output(final) as temporary:
        temporary.write_text("partial")
        assert not final.exists()
        assert temporary.parent == final.parent and temporary.suffix == ".json"
    assert final.read_text() == "partial"
    assert [p.name for p in final.parent.iterdir()] == ["manifest.json"]


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "a.json"
    with pytest.raises(RuntimeError), atomic_output(final) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    final = tmp_path / "a.json"
    final.write_text("mine")
    with pytest.raises(OutputExistsError), atomic_output(final) as temporary:
        temporary.write_text("new")
    assert final.read_text() == "mine"
    with atomic_output(final, overwrite=True) as temporary:
        temporary.write_text("new")
    assert final.read_text() == "new"


def test_file_created_meanwhile_is_not_clobbered(tmp_path):
    final = tmp_path / "a.json"
    with pytest.raises(OutputExistsError), atomic_output(final) as temporary:
        temporary.write_text("ours")
        final.write_text("someone else's")  # appears while we work
    assert final.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_missing_output_folder_is_accepted_and_the_check_leaves_no_trace(tmp_path):
    check_output_folder(tmp_path / "new" / "deeper" / "stems")
    assert list(tmp_path.iterdir()) == []  # the writer creates the folders for real


def test_an_existing_folder_is_accepted_and_left_as_it_was(tmp_path):
    (tmp_path / "vocals.wav").write_bytes(b"mine")
    check_output_folder(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["vocals.wav"]  # no probe file left


@pytest.mark.parametrize("case", UNUSABLE)
def test_an_unusable_output_folder_is_refused_with_its_path_and_a_fix(tmp_path, case):
    with (
        unusable_folder(case, tmp_path) as (bad, says),
        pytest.raises(OutputFolderError) as refused,
    ):
        check_output_folder(bad)
    assert str(bad) in refused.value.problem and says in refused.value.problem
    assert "Choose an output folder you can write to" in refused.value.fix


def test_folders_made_before_a_refusal_are_removed_again(tmp_path):
    too_long = tmp_path / "new" / ("x" * 300)  # "new" can be made, the name after it cannot
    with pytest.raises(OutputFolderError, match="Cannot create"):
        check_output_folder(too_long)
    assert list(tmp_path.iterdir()) == []


@contextlib.contextmanager
def as_a_normal_user() -> Iterator[None]:
    """Root (as in CI and containers) is not stopped by permission bits: act as nobody."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_folder_without_write_permission_is_refused_for_a_user_it_applies_to():
    """The common case on a desktop; tmp_path's parents are private, so a folder in /tmp."""
    base = Path(tempfile.mkdtemp(prefix="daw-bridge-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        with as_a_normal_user():
            with pytest.raises(OutputFolderError, match="Cannot write into"):
                check_output_folder(locked)
            with pytest.raises(OutputFolderError, match="Cannot create"):
                check_output_folder(locked / "stems")
    finally:
        shutil.rmtree(base)
