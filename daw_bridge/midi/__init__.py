"""Stems to MIDI: drum hits and melodic notes."""

from __future__ import annotations


def parse_kinds(text: str | None) -> list[str]:
    """Stem kinds from a comma-separated setting as people type it ("drums, bass")."""
    return [kind.strip() for kind in (text or "").split(",") if kind.strip()]
