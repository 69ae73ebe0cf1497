"""Stems to MIDI: drum hits and melodic notes."""

from __future__ import annotations

import re


def parse_kinds(text: str | None) -> list[str]:
    """Stem kinds as people type them: "drums,bass", "drums, bass" or "drums bass"."""
    return [kind for kind in re.split(r"[,\s]+", text or "") if kind]
