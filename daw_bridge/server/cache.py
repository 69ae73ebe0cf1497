"""Stems already separated, found again by what was separated and how.

The key is the content hash of the audio span plus the model and options, so
the same clip split twice (from any file, any project) costs a file copy, not
inference. The cache lives in its own folder, bounded by size, evicting the
least recently used entries. A hit is handed to a project as hard links where
the output folder is on the same drive (no bytes copied), else as copies; the
cache never writes into a published file, and eviction only removes its own
names, so a project's stems are never touched. Each entry's manifest records the SHA-256 of its
files when it is published; an entry that no longer matches (damaged, or
altered behind the server's back) is dropped and separated again, never served.
Files are hashed again only when they changed since they were last found
intact, so a hit stays the cost of a copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from daw_bridge.files import file_sha256

log = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
#: File times are at most this coarse (Linux: a jiffy; NTFS and APFS: finer).
_TICK_NS = 100_000_000


def cache_key(span_sha256: str, model: str, options: dict) -> str:
    payload = json.dumps({"span": span_sha256, "model": model, **options}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class StemCache:
    """``root/<key>/`` folders holding stems and a manifest; bounded by ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        # Entry -> its files' identity when they were last found intact: a hit hashes
        # them again only if it changed (a rewritten file gets a new change time, which
        # no program can set back).
        self._checked: dict[str, list[tuple]] = {}
        self._found: dict[str, list[tuple]] = {}  # entry -> identity at its last lookup

    def lookup(self, key: str) -> Path | None:
        folder = self.root / key
        if not (folder / MANIFEST_NAME).is_file():
            return None
        seen, identity = time.time_ns(), _identity(folder)
        if self._checked.get(key) != identity:
            if not _intact(folder):
                log.warning("cache entry %s does not match its recorded hashes; dropped", key)
                shutil.rmtree(folder, ignore_errors=True)
                return None
            if _settled(identity, seen):
                self._checked[key] = identity
        self._found[key] = identity
        os.utime(folder)  # mark as recently used
        return folder

    def hand_out(self, entry: Path, place: Callable[[str], Path]) -> list[Path]:
        """Put each file of ``entry`` (just found by :meth:`lookup`) at ``place(name)``:
        a hard link where the drive allows, else a copy. Call :meth:`handed_out` once
        the links have their final names."""
        placed = []
        for source in sorted(entry.iterdir()):
            target = place(source.name)
            try:
                os.link(source, target)
            except OSError:  # another drive, or a file system without hard links
                shutil.copyfile(source, target)
            placed.append(target)
        return placed

    def handed_out(self, entry: Path) -> None:
        """Linking and renaming the links changed the files' change times; this job did
        that right after the entry was found intact, so if nothing else changed (names,
        inodes, sizes, modification times) the new identity counts as checked. The gap:
        a same-size rewrite that keeps the modification time, during that one delivery.
        """
        found, now = self._found.pop(entry.name, None), _identity(entry)
        if found is not None and [f[:4] for f in found] == [f[:4] for f in now]:
            self._checked[entry.name] = now

    def staging(self) -> Path:
        """A private folder to write a new entry into before :meth:`commit`."""
        folder = self.root / f".staging-{uuid.uuid4().hex[:12]}"
        folder.mkdir()
        return folder

    def commit(self, staging: Path, key: str) -> Path:
        """Publish a complete entry atomically, then evict down to the size bound."""
        final = self.root / key
        _record_hashes(staging)
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
            self._checked.pop(entry.name, None)
            self._found.pop(entry.name, None)
            total -= sizes[entry]

    def clean_staging(self, older_than: float = 0.0) -> None:
        """Remove entries a killed server left half-written."""
        now = time.time()
        for entry in self.root.glob(".staging-*"):
            if now - entry.stat().st_mtime >= older_than:
                shutil.rmtree(entry, ignore_errors=True)


def _record_hashes(folder: Path) -> None:
    """Add each file's SHA-256 to the entry's manifest, as ``sha256: {file name: hex}``."""
    manifest = folder / MANIFEST_NAME
    document = json.loads(manifest.read_text(encoding="utf-8"))
    document["sha256"] = {path.name: file_sha256(path) for path in _stems(folder)}
    manifest.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _intact(folder: Path) -> bool:
    """Whether the entry's files are exactly those its manifest recorded, byte for byte."""
    try:
        recorded = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")).get("sha256")
        found = {path.name: path for path in _stems(folder)}
        return (
            isinstance(recorded, dict)
            and set(recorded) == set(found)
            and all(file_sha256(path) == recorded[name] for name, path in found.items())
        )
    except (OSError, ValueError, AttributeError):  # unreadable, or not a JSON object
        return False


def _identity(folder: Path) -> list[tuple]:
    """Each file's name, inode, size, and modification and change times (cheap: no reading)."""
    identity = []
    for path in sorted(folder.iterdir()):
        facts = path.stat()
        identity.append(
            (path.name, facts.st_ino, facts.st_size, facts.st_mtime_ns, facts.st_ctime_ns)
        )
    return identity


def _settled(identity: list[tuple], seen_ns: int) -> bool:
    """Whether every file's times predate ``seen_ns`` by more than a clock tick of the
    file system: only then does any later change show in them (as in git's racy check)."""
    return all(seen_ns - max(facts[3], facts[4]) > _TICK_NS for facts in identity)


def _stems(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.name != MANIFEST_NAME)
