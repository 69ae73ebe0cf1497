"""The pick lists of the REAPER Settings: models, ensembles and drum-kit models.

REAPER's GetUserInputs has no list, so Settings shows ``gfx.showmenu`` popups
whose lines come from here (``daw-bridge reaper choices <file>``): the Lua never
holds a model name of its own, and a model added to the catalogue, or an
ensemble file the user drops in, shows up in REAPER at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from daw_bridge.reaper import keyvalue

log = logging.getLogger(__name__)

#: What the drum-kit action uses when Settings names no drum-kit model.
DEFAULT_DRUM_KIT = "drumsep"
#: Pieces a drum-kit model gives; a catalogue model giving any of them is one.
KIT_PIECES = ("kick", "snare", "toms", "cymbals")
#: The sections of the choices file, one per setting that has a pick list.
LISTS = ("model", "drum_kit")
#: Characters gfx.showmenu reads as markup at the start of a line ("#" greys out, "!"
#: ticks, ">" and "<" open and close submenus) or anywhere ("|" separates lines).
_MENU_MARKUP = "#!<>"


@dataclass(frozen=True)
class Choice:
    """One menu line: the value the setting stores ("" for the default) and what it says."""

    name: str
    description: str = ""
    licence: str = ""

    @property
    def label(self) -> str:
        """One menu line, safe for gfx.showmenu."""
        text = " - ".join(part for part in (self.name, self.description) if part) or "(none)"
        if self.licence:
            text += f" [licence: {self.licence}]"
        return text.replace("|", "/").lstrip(_MENU_MARKUP).strip()


def _catalogue() -> list[Choice]:
    from daw_bridge.models.catalog import MODELS
    from daw_bridge.models.loader import DSP_MODEL, model_names
    from daw_bridge.models.msst.catalog import MSST_MODELS

    facts: dict[str, Choice] = {
        name: Choice(name, spec.description, "MIT (Meta's Demucs weights)")
        for name, spec in MODELS.items()
    }
    facts.update(
        {
            name: Choice(name, entry.description, entry.licence)
            for name, entry in MSST_MODELS.items()
        }
    )
    facts[DSP_MODEL] = Choice(DSP_MODEL, "classical separator, low quality", "no weights")
    return [facts.get(name, Choice(name)) for name in model_names()]


def _models(models: tuple[str, ...]) -> str:
    return "those of " + ", ".join(models)


def _ensembles() -> list[Choice]:
    """Named ensembles, if this install has them; a broken file still gets its line."""
    try:
        from daw_bridge.separation import ensemble_library
    except ImportError:
        return []
    describe = getattr(ensemble_library, "describe_all", None)
    try:
        if describe is not None:
            return [
                Choice(entry.name, f"ensemble: {ensemble.description}", _models(ensemble.models))
                if ensemble
                else Choice(entry.name, f"ensemble, broken: {problem}")
                for entry, ensemble, problem in describe()
            ]
        names = getattr(ensemble_library, "ensemble_names", None) or getattr(
            ensemble_library, "list_ensembles", None
        )
        return [Choice(str(name), "ensemble") for name in (names() if names else [])]
    except Exception as error:  # a bad ensemble folder must not take the model list with it
        log.warning("could not list the ensembles: %s", error)
        return []


def model_choices() -> list[Choice]:
    """The server's default first, then every catalogue model, then the ensembles."""
    from daw_bridge.models.loader import DEFAULT_MODEL

    default = Choice(
        "", f"Server default (the model the server was started with, normally {DEFAULT_MODEL})"
    )
    return [default, *_catalogue(), *_ensembles()]


def drum_kit_models() -> list[str]:
    """Catalogue models that split a drums stem into kit pieces."""
    from daw_bridge.models.stems import catalogue_stems

    return [
        name
        for name, stems in catalogue_stems().items()
        if any(piece in stems for piece in KIT_PIECES)
    ]


def drum_kit_choices() -> list[Choice]:
    """Off first (whole-clip splits keep the drums whole), then the drum-kit models."""
    kit = set(drum_kit_models())
    off = Choice(
        "", f"Off (splits keep the drums whole; the drum-kit action uses {DEFAULT_DRUM_KIT})"
    )
    return [off, *(choice for choice in _catalogue() if choice.name in kit)]


def render(lists: dict[str, list[Choice]]) -> dict[str, str]:
    """``<list>.count`` and ``<list>.<n>.name/label/licence``, as the Lua reads them."""
    values: dict[str, str] = {}
    for list_name, choices in lists.items():
        values[f"{list_name}.count"] = str(len(choices))
        for number, choice in enumerate(choices, start=1):
            values[f"{list_name}.{number}.name"] = choice.name
            values[f"{list_name}.{number}.label"] = choice.label
            values[f"{list_name}.{number}.licence"] = choice.licence
    return values


def write_choices(path: Path) -> Path:
    keyvalue.write(Path(path), render({"model": model_choices(), "drum_kit": drum_kit_choices()}))
    return Path(path)
