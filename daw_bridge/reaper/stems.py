"""How stems look in a REAPER project: track names, colours and order."""

from __future__ import annotations

#: Conventional order, top to bottom, as producers lay out a multitrack.
#: "rest" (what is left when only some stems are kept) goes last.
ORDER = ("drums", "bass", "guitar", "piano", "other", "vocals", "rest")

#: (label, RGB colour) per stem; unknown stems get a neutral grey.
LOOK: dict[str, tuple[str, tuple[int, int, int]]] = {
    "drums": ("Drums", (232, 148, 52)),
    "bass": ("Bass", (66, 126, 232)),
    "guitar": ("Guitar", (214, 186, 64)),
    "piano": ("Piano", (96, 200, 196)),
    "other": ("Other", (156, 112, 204)),
    "vocals": ("Vocals", (92, 196, 104)),
    "rest": ("Rest", (120, 120, 128)),
}
_NEUTRAL = (150, 150, 150)


def label(stem: str) -> str:
    """``no_vocals`` reads as "Instrumental"; other ``no_X`` as "No X"."""
    if stem == "no_vocals":
        return "Instrumental"
    if stem.startswith("no_"):
        return "No " + label(stem.removeprefix("no_")).lower()
    return LOOK.get(stem, (stem.replace("_", " ").title(), _NEUTRAL))[0]


def colour(stem: str) -> tuple[int, int, int]:
    return LOOK.get(stem.removeprefix("no_"), ("", _NEUTRAL))[1]


def ordered(stems: list[str]) -> list[str]:
    """Known stems in conventional order, then the rest as given."""
    rank = {name: index for index, name in enumerate(ORDER)}
    return sorted(
        stems, key=lambda s: (rank.get(s.removeprefix("no_"), len(ORDER)), s.startswith("no_"), s)
    )
