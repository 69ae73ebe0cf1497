"""The stem cache: found by content and options, bounded, least recently used out."""

from __future__ import annotations

import os
import time

from daw_bridge.server.cache import StemCache, cache_key


def entry(cache: StemCache, key: str, size: int) -> None:
    staging = cache.staging()
    (staging / "vocals.wav").write_bytes(b"x" * size)
    (staging / "manifest.json").write_text("{}")
    cache.commit(staging, key)


def test_key_depends_on_audio_model_and_options():
    base = cache_key("abc", "htdemucs", {"shifts": 0})
    assert base == cache_key("abc", "htdemucs", {"shifts": 0})
    others = {
        cache_key("abd", "htdemucs", {"shifts": 0}),
        cache_key("abc", "dsp", {"shifts": 0}),
        cache_key("abc", "htdemucs", {"shifts": 1}),
    }
    assert len(others | {base}) == 4


def test_lookup_finds_only_complete_entries(tmp_path):
    cache = StemCache(tmp_path, max_bytes=10_000)
    staging = cache.staging()
    assert cache.lookup("k") is None
    entry(cache, "k", 10)
    assert cache.lookup("k") == tmp_path / "k"
    assert staging.exists()
    cache.clean_staging()
    assert not staging.exists()


def test_least_recently_used_entries_go_first(tmp_path):
    cache = StemCache(tmp_path, max_bytes=2500)
    entry(cache, "old", 1000)
    entry(cache, "used", 1000)
    past = time.time() - 100
    os.utime(tmp_path / "old", (past, past))
    os.utime(tmp_path / "used", (past + 1, past + 1))
    cache.lookup("used")  # touched: now the most recent
    entry(cache, "new", 1000)
    assert cache.lookup("old") is None
    assert cache.lookup("used") is not None and cache.lookup("new") is not None
    assert cache.size() <= 2500


def test_the_sha256_of_each_file_is_recorded_in_its_manifest_when_published(tmp_path):
    import hashlib
    import json

    cache = StemCache(tmp_path, max_bytes=10_000)
    entry(cache, "k", 10)
    manifest = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert manifest["sha256"] == {"vocals.wav": hashlib.sha256(b"x" * 10).hexdigest()}


def test_an_entry_altered_after_it_was_published_is_dropped_not_served(tmp_path):
    cache = StemCache(tmp_path, max_bytes=10_000)
    for key, alter in [
        ("changed", lambda folder: (folder / "vocals.wav").write_bytes(b"y" * 10)),
        ("added", lambda folder: (folder / "drums.wav").write_bytes(b"z")),
        ("removed", lambda folder: (folder / "vocals.wav").unlink()),
        ("unrecorded", lambda folder: (folder / "manifest.json").write_text("{}")),
    ]:
        entry(cache, key, 10)
        alter(tmp_path / key)
        assert cache.lookup(key) is None, key
        assert not (tmp_path / key).exists(), key


def test_a_hit_hashes_an_entry_again_only_when_its_files_changed(tmp_path, monkeypatch):
    from daw_bridge.server import cache as module

    hashed: list[str] = []
    sha256 = module.file_sha256
    monkeypatch.setattr(
        module, "file_sha256", lambda path: hashed.append(path.name) or sha256(path)
    )
    cache = StemCache(tmp_path, max_bytes=10_000)
    entry(cache, "k", 10)
    time.sleep(0.2)  # older than a file-time tick: a later change shows in the times
    hashed.clear()
    assert cache.lookup("k") is not None and hashed == ["vocals.wav"]
    assert cache.lookup("k") is not None and hashed == ["vocals.wav"]  # unchanged: not read
    (tmp_path / "k" / "vocals.wav").write_bytes(b"y" * 10)  # same size, same inode
    assert cache.lookup("k") is None


def handed_out(cache: StemCache, key: str, folder) -> list:
    """A hit as the worker makes it: lookup, hand out into ``folder``, renames done."""
    found = cache.lookup(key)
    assert found is not None
    folder.mkdir()
    placed = cache.hand_out(found, lambda name: folder / name)
    cache.handed_out(found)
    return placed


def test_a_hit_on_the_same_drive_is_handed_out_as_hard_links_not_copies(tmp_path):
    cache = StemCache(tmp_path / "cache", max_bytes=10_000)
    entry(cache, "k", 10)
    placed = handed_out(cache, "k", tmp_path / "project")
    assert sorted(path.name for path in placed) == ["manifest.json", "vocals.wav"]
    for path in placed:
        assert os.path.samefile(path, tmp_path / "cache" / "k" / path.name)


def test_a_hit_on_another_drive_is_handed_out_as_copies(tmp_path, monkeypatch):
    import errno

    def other_drive(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", other_drive)
    cache = StemCache(tmp_path / "cache", max_bytes=10_000)
    entry(cache, "k", 10)
    [_, vocals] = handed_out(cache, "k", tmp_path / "project")
    assert vocals.read_bytes() == b"x" * 10
    assert not os.path.samefile(vocals, tmp_path / "cache" / "k" / "vocals.wav")


def test_handing_out_links_does_not_make_the_next_hit_hash_again(tmp_path, monkeypatch):
    from daw_bridge.server import cache as module

    hashed: list[str] = []
    sha256 = module.file_sha256
    monkeypatch.setattr(
        module, "file_sha256", lambda path: hashed.append(path.name) or sha256(path)
    )
    cache = StemCache(tmp_path / "cache", max_bytes=10_000)
    entry(cache, "k", 10)
    hashed.clear()
    for number in range(3):  # back to back, as repeated clicks: the links change ctime
        handed_out(cache, "k", tmp_path / f"project-{number}")
    assert hashed == ["vocals.wav"]  # found intact once, then trusted


def test_a_handed_out_stem_rewritten_in_its_project_is_never_served_again(tmp_path):
    """The project's file and the cache's are one file: an edit there shows in the cache,
    and the entry is dropped, not served (the project keeps its edit)."""
    cache = StemCache(tmp_path / "cache", max_bytes=10_000)
    entry(cache, "k", 10)
    [_, vocals] = handed_out(cache, "k", tmp_path / "project")
    with open(vocals, "r+b") as handle:  # in place, same size, as an audio editor may
        handle.write(b"y" * 10)
    assert cache.lookup("k") is None
    assert vocals.read_bytes() == b"y" * 10
