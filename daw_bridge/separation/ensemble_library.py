"""Named ensembles: TOML files that say which model gives each stem, found like presets.

An inline ensemble (``vocals=max_fft:mel_roformer_vocals_kj+bs_roformer_vocals,...``)
is hard to type and to share; a file gives it a name, a description and comments::

    name = "vocals-max"
    description = "Vocals as the louder of two RoFormers per bin; the rest from htdemucs_ft."

    [stems.vocals]
    models = ["mel_roformer_vocals_kj", "bs_roformer_vocals"]
    rule = "max_fft"          # optional; avg_wave when left out

    [stems.drums]
    models = ["htdemucs_ft"]  # a single name without brackets works too

A file is checked completely against the model catalogues before any model is
loaded (every problem at once, each with its fix), then turned into the inline
spec that :class:`~daw_bridge.separation.ensemble.EnsembleSeparator` runs, so the
combining and the stems' sum to the input are exactly those of inline ensembles.

Built-ins live in the repository's ``ensembles/`` folder, installed as the package
data ``daw_bridge.separation.builtin_ensembles``; the user's folder comes first, so
a copy there under a built-in's name changes what that name means on this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daw_bridge.errors import InvalidOptionError
from daw_bridge.separation.ensemble import RULES, is_ensemble, parse_ensemble
from daw_bridge.toml_files import SUFFIX, Library, LibraryEntry, Problems, did_you_mean, read_toml

USER_DIR_ENV = "DAW_BRIDGE_ENSEMBLE_DIR"
DEFAULT_RULE = "avg_wave"
TOP_KEYS = ("name", "description", "stems")
STEM_KEYS = ("models", "rule")
#: Where the pipeline puts what the chosen stems leave out, so the stems sum to the input.
RESIDUAL_STEM = "other"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class EnsembleError(InvalidOptionError):
    """An ensemble file that cannot be found, read, or does not fit the catalogue."""


@dataclass(frozen=True)
class StemPick:
    """The model(s) one stem comes from, and how several are combined."""

    models: tuple[str, ...]
    rule: str = DEFAULT_RULE

    @property
    def inline(self) -> str:
        """``rule:a+b``, or just the model where there is one (a rule has nothing to do)."""
        joined = "+".join(self.models)
        return f"{self.rule}:{joined}" if len(self.models) > 1 else joined


@dataclass(frozen=True)
class Ensemble:
    name: str
    description: str
    stems: dict[str, StemPick]
    source: Path | None = None

    @property
    def spec(self) -> str:
        """The inline form ``stem=rule:model+model,...`` that the separator runs."""
        return ",".join(f"{stem}={pick.inline}" for stem, pick in self.stems.items())

    @property
    def models(self) -> tuple[str, ...]:
        """Every model it runs, each once, in the order they first appear."""
        return tuple(dict.fromkeys(m for pick in self.stems.values() for m in pick.models))


# -- where files are --------------------------------------------------------------------


def builtin_dir() -> Path:
    """The built-in ensembles: installed beside this module, else the checkout's ``ensembles/``."""
    installed = Path(__file__).resolve().parent / "builtin_ensembles"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "ensembles"


_ENSEMBLES = Library(
    "ensemble", EnsembleError, builtin_dir, USER_DIR_ENV, "ensembles", "`daw-bridge models`"
)


def user_dir() -> Path:
    """``$DAW_BRIDGE_ENSEMBLE_DIR``, else ``ensembles`` in the user's daw-bridge config folder
    (beside the user's ``presets``)."""
    return _ENSEMBLES.user_dir()


def available() -> list[LibraryEntry]:
    """Every ensemble file by name (a user file hides a built-in of the same name), sorted."""
    return _ENSEMBLES.available()


def ensemble_names() -> list[str]:
    """Every ensemble name ``--model`` accepts (built-in and the user's)."""
    return [entry.name for entry in available()]


def builtin_names() -> set[str]:
    """Built-in names no user file hides: the ones that mean the same on every machine."""
    return {entry.name for entry in available() if entry.origin == "built-in"}


def describe_all() -> list[tuple[LibraryEntry, Ensemble | None, str]]:
    """Each ensemble with its parsed form, or None and the problem for a broken file, so a
    listing shows every file instead of failing at the first bad one."""
    described: list[tuple[LibraryEntry, Ensemble | None, str]] = []
    for entry in available():
        try:
            described.append((entry, load_ensemble(entry.name), ""))
        except EnsembleError as error:
            described.append((entry, None, error.problem))
    return described


def is_ensemble_file(model: str) -> bool:
    return model.endswith(SUFFIX)


def is_named_ensemble(model: str) -> bool:
    """Whether ``model`` is an ensemble file's name or path (catalogue names come first)."""
    from daw_bridge.models.loader import model_names

    if is_ensemble_file(model):
        return True
    if is_ensemble(model) or model in model_names():
        return False
    return model in ensemble_names()


def expand(model: str) -> str:
    """An ensemble name or file as its inline spec; any other model string unchanged.

    What a name stands for can change when its file is edited, so caches key on this.
    """
    return load_ensemble(model).spec if is_named_ensemble(model) else model


def find(reference: str) -> Path:
    """The file of an ensemble given by name or by ``.toml`` path."""
    return _ENSEMBLES.find(reference, by_path=is_ensemble_file(reference))


def load_ensemble(reference: str) -> Ensemble:
    """Find, read and check an ensemble by name or path; no model is loaded."""
    path = find(reference)
    ensemble = read_ensemble_file(path)
    if not is_ensemble_file(reference):
        _ENSEMBLES.check_name(path, ensemble.name)
    return ensemble


def inline_models(spec: str) -> list[str] | None:
    """The models an inline ensemble names, or None if it is not a well-formed one."""
    try:
        picks = parse_ensemble(spec)
    except InvalidOptionError:
        return None
    return [name for _rule, names in picks.values() for name in names]


# -- reading and checking ---------------------------------------------------------------


def read_ensemble_file(path: Path) -> Ensemble:
    """Read and check one ensemble file."""
    path = Path(path)
    syntax = 'strings need quotes, lists look like ["a", "b"], sections like [stems.vocals]'
    data = read_toml(path, "ensemble", EnsembleError, syntax)
    return parse_ensemble_file(data, path)


def parse_ensemble_file(data: dict[str, Any], source: Path | None = None) -> Ensemble:
    """Check a decoded ensemble against the catalogues and build it; raise
    :class:`EnsembleError` listing every problem."""
    from daw_bridge.models.stems import catalogue_samplerates, catalogue_stems

    catalogue = catalogue_stems()
    problems = Problems(str(source) if source else "ensemble", EnsembleError, "`daw-bridge models`")
    for key in data:
        if key not in TOP_KEYS:
            problems.add(
                key,
                f"is not an ensemble setting.{did_you_mean(key, TOP_KEYS)}",
                f"Allowed at the top: {', '.join(TOP_KEYS)}; each stem goes in [stems.<stem>].",
            )
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.add(
            "name",
            "is missing." if name is None else f"{name!r} is not a valid ensemble name.",
            'Give it a name of lowercase letters, digits, "-" and "_", e.g. name = "my-vocals" '
            "(it is what --model takes).",
        )
    elif name in catalogue:
        problems.add(
            "name",
            f"{name!r} is already a model's name.",
            "Choose another name, so that --model NAME means one thing.",
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.add("description", "must be text.", 'Write it in quotes: description = "..."')
        description = ""
    raw = data.get("stems")
    if not isinstance(raw, dict) or not raw:
        problems.add(
            "stems",
            "is missing or empty." if raw is None or raw == {} else "must be sections.",
            "Add a [stems.<stem>] section per stem, e.g. [stems.vocals] with models = "
            '["mel_roformer_vocals_kj"].',
        )
        raw = {}
    stems: dict[str, StemPick] = {}
    for stem, section in raw.items():
        pick = _parse_stem(problems, stem, section, catalogue)
        if pick is not None:
            stems[stem] = pick
    if stems and len(stems) == len(raw):
        _check_whole(problems, stems, catalogue, catalogue_samplerates())
    problems.raise_if_any()
    return Ensemble(name=name, description=description, stems=stems, source=source)


def _parse_stem(
    problems: Problems, stem: str, section: Any, catalogue: dict[str, tuple[str, ...]]
) -> StemPick | None:
    key = f"stems.{stem}"
    if not isinstance(section, dict):
        problems.add(
            key,
            "must be a section.",
            f'Write it as [{key}] followed by models = ["..."] (and rule = "..." for several).',
        )
        return None
    for setting in section:
        if setting not in STEM_KEYS:
            problems.add(
                f"{key}.{setting}",
                f"is not a stem setting.{did_you_mean(setting, STEM_KEYS)}",
                f"Allowed in [{key}]: {', '.join(STEM_KEYS)}.",
            )
    models = section.get("models")
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        problems.add(
            f"{key}.models",
            "is missing or empty." if not models else "must be a list of model names.",
            'Name the model(s) this stem comes from, e.g. models = ["htdemucs_ft"] '
            "(`daw-bridge models` lists them).",
        )
        return None
    ok = True
    for model in models:
        if model not in catalogue:
            ok = False
            problems.add(
                f"{key}.models",
                f"{model!r} is not a model name.{did_you_mean(model, list(catalogue))}",
                f"Use models from the catalogue: {', '.join(catalogue)}.",
            )
        elif stem not in catalogue[model]:
            ok = False
            problems.add(
                key,
                f"model {model!r} gives no {stem!r} stem (its stems: "
                f"{', '.join(catalogue[model])}).",
                f"Take {stem} from a model that gives it ({_givers(stem, catalogue)}), or "
                f"rename the section to one of {model}'s stems.",
            )
    if len(set(models)) != len(models):
        ok = False
        problems.add(
            f"{key}.models",
            "names a model twice.",
            "Name each model once; every model counts equally in the rule.",
        )
    rule = section.get("rule", DEFAULT_RULE)
    if rule not in RULES:
        ok = False
        problems.add(
            f"{key}.rule",
            f"{rule!r} is not an ensemble rule.{did_you_mean(str(rule), RULES)}",
            f"Use one of: {', '.join(RULES)} (avg_wave when left out).",
        )
    return StemPick(tuple(models), rule) if ok else None


def _givers(stem: str, catalogue: dict[str, tuple[str, ...]]) -> str:
    givers = [model for model, stems in catalogue.items() if stem in stems]
    return f"e.g. {', '.join(givers)}" if givers else "no catalogue model gives it"


def _check_whole(
    problems: Problems,
    stems: dict[str, StemPick],
    catalogue: dict[str, tuple[str, ...]],
    rates: dict[str, int],
) -> None:
    """What only the whole file shows: one sample rate, and somewhere for the residual."""
    models = list(dict.fromkeys(m for pick in stems.values() for m in pick.models))
    by_rate = {model: rates[model] for model in models}
    if len(set(by_rate.values())) > 1:
        listed = ", ".join(f"{model} {rate} Hz" for model, rate in by_rate.items())
        problems.add(
            "stems",
            f"its models work at different sample rates ({listed}).",
            "Combine models of one sample rate.",
        )
    if RESIDUAL_STEM not in stems and any(RESIDUAL_STEM in catalogue[m] for m in models):
        last = list(stems)[-1]
        problems.add(
            "stems",
            f"has no [stems.{RESIDUAL_STEM}], so whatever the chosen stems miss (the stems "
            f"always sum to the input) would be added to {last!r}.",
            f"Add [stems.{RESIDUAL_STEM}] with the model it comes from, e.g. models = "
            f'["{models[-1]}"].',
        )
