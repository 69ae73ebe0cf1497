"""Stems already separated, found again by what was separated and how.

The key is the content hash of the audio span plus the model and options, so
the same clip split twice (from any file, any project) costs a file copy, not
inference. The cache lives in its own folder, bounded by size, evicting the
least recently used entries; files handed to a project are copies and are
never touched by eviction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path


def cache_key(span_sha256: str, model: str, options: dict) -> str:
    payload = json.dumps({"span": span_sha256, "model": model, **options}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class StemCache:
    """``root/<key>/`` folders holding stems and a manifest; bounded by ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)

    def lookup(self, key: str) -> Path | None:
        folder = self.root / key
        if not (folder / "manifest.json").is_file():
            return None
        os.utime(folder)  # mark as recently used
        return folder

    def staging(self) -> Path:
        """A private folder to write a new entry into before :meth:`commit`."""
        folder = self.root / f".staging-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        return folder

    def commit(self, staging: Path, key: str) -> Path:
        """Publish a complete entry atomically, then evict down to the size bound."""
        final = self.root / key
        try:
            os.rename(staging, final)
        except OSError:  # already there (another job raced us): keep that one
            shutil.rmtree(staging, ignore_errors=True)
        os.utime(final)
        self.evict(keep=final)
        return final

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def evict(self, keep: Path | None = None) -> None:
        entries = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        entries.sort(key=lambda p: p.stat().st_mtime)
        sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in entries}
        total = sum(sizes.values())
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry == keep:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry]

    def clean_staging(self, older_than: float = 0.0) -> None:
        """Remove entries a killed server left half-written."""
        now = time.time()
        for entry in self.root.glob(".staging-*"):
            if now - entry.stat().st_mtime >= older_than:
                shutil.rmtree(entry, ignore_errors=True)
