"""How stems are named, coloured and ordered in REAPER."""

from daw_bridge.reaper import stems


def test_stems_come_in_the_conventional_order() -> None:
    assert stems.ordered(["vocals", "other", "bass", "drums"]) == [
        "drums",
        "bass",
        "other",
        "vocals",
    ]
    six = ["vocals", "piano", "guitar", "other", "bass", "drums"]
    assert stems.ordered(six) == ["drums", "bass", "guitar", "piano", "other", "vocals"]
    assert stems.ordered(["no_vocals", "vocals"]) == ["vocals", "no_vocals"]
    assert stems.ordered(["zither", "drums"]) == ["drums", "zither"]


def test_labels_read_as_producers_say_them() -> None:
    assert stems.label("vocals") == "Vocals"
    assert stems.label("no_vocals") == "Instrumental"
    assert stems.label("no_drums") == "No drums"
    assert stems.label("sub_bass") == "Sub Bass"


def test_each_known_stem_has_its_own_colour_and_no_x_shares_x() -> None:
    colours = [stems.colour(name) for name in stems.ORDER]
    assert len(set(colours)) == len(colours)
    assert stems.colour("no_vocals") == stems.colour("vocals")
