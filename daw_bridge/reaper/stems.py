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

#: A drum kit's pieces, top to bottom as drummers' multitracks run; "rest" (the drums
#: minus the pieces) last. Each a shade of the drums' orange, so the folder reads as one.
KIT_ORDER = ("kick", "snare", "toms", "cymbals", "rest")
KIT_LOOK: dict[str, tuple[str, tuple[int, int, int]]] = {
    "kick": ("Kick", (204, 112, 36)),
    "snare": ("Snare", (240, 168, 76)),
    "toms": ("Toms", (220, 136, 60)),
    "cymbals": ("Cymbals", (248, 196, 120)),
    "rest": ("Drums rest", (150, 120, 96)),
}


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


def kit_label(piece: str) -> str:
    return KIT_LOOK[piece][0] if piece in KIT_LOOK else label(piece)


def kit_colour(piece: str) -> tuple[int, int, int]:
    return KIT_LOOK[piece][1] if piece in KIT_LOOK else colour(piece)


def kit_ordered(pieces: list[str]) -> list[str]:
    """Known pieces in kit order; others (a model that gives stems) in stem order, before
    "rest"."""
    rank = {name: index for index, name in enumerate(KIT_ORDER)}
    others = ordered([p for p in pieces if p not in rank])
    return sorted(
        pieces,
        key=lambda p: (rank.get(p, rank["rest"] - 0.5), others.index(p) if p in others else 0),
    )
