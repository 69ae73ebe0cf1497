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
