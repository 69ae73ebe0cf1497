"""Files the user owns appear complete or not at all, and are never clobbered."""

from __future__ import annotations

import pytest

from daw_bridge.errors import OutputExistsError
from daw_bridge.files import atomic_output


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
