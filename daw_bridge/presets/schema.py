"""Preset files: TOML read into a :class:`Preset`, checked completely before use.

TOML rather than JSON because producers edit these by hand: it has comments,
needs no quoting of keys, and ``tomllib`` is in the standard library. Every
problem found is reported at once, each naming the file, the key and what is
allowed, so one round of fixes is enough.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daw_bridge.errors import DawBridgeError
from daw_bridge.presets.plugins import EXTERNAL, PLUGINS, STEP_KEYS
from daw_bridge.toml_files import Problems, did_you_mean, read_toml

#: ``[stems.default]`` applies to every stem the preset does not name.
DEFAULT_STEM = "default"


def model_stems() -> tuple[str, ...]:
    """Every stem a catalogue model gives (Demucs, MSST incl. drum-kit pieces, ``dsp``),
    read from the catalogues so a model added there can be given a preset at once."""
    from daw_bridge.models.stems import all_model_stems

    return all_model_stems()


def stem_keys() -> tuple[str, ...]:
    """The section names a preset may use: each model stem, two-stem mode's ``no_<stem>``,
    ``rest`` (what ``--keep`` and the drum kit leave) and ``default``."""
    from daw_bridge.models.stems import REST_STEM

    stems = model_stems()
    return (*stems, *(f"no_{stem}" for stem in stems), REST_STEM, DEFAULT_STEM)


#: The catalogue's stems when this module was imported; :func:`stem_keys` is checked.
MODEL_STEMS = model_stems()
STEM_KEYS = stem_keys()
TOP_KEYS = ("name", "description", "tail", "stems")
STEM_SETTING_KEYS = ("chain", "gain_db", "mute", "loudness_lufs")
TAILS = ("cut", "extend")
GAIN_RANGE = (-60.0, 24.0)
LOUDNESS_RANGE = (-70.0, 0.0)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class PresetError(DawBridgeError):
    """A preset that cannot be read, is invalid, or whose plugin cannot be loaded."""


@dataclass(frozen=True)
class PluginStep:
    """One effect of a chain: a pedalboard plugin, or a VST3/AU file by ``path``."""

    plugin: str
    parameters: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    plugin_name: str | None = None
    where: str = ""  # e.g. "stems.vocals.chain[2]", for errors raised when it is built


@dataclass(frozen=True)
class StemSettings:
    chain: tuple[PluginStep, ...] = ()
    gain_db: float = 0.0
    mute: bool = False
    loudness_lufs: float | None = None

    @property
    def passthrough(self) -> bool:
        return not self.chain and self.gain_db == 0.0 and self.loudness_lufs is None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str = ""
    stems: dict[str, StemSettings] = field(default_factory=dict)
    tail: str = "cut"
    source: Path | None = None

    @property
    def label(self) -> str:
        """How errors name this preset: its file, or its name."""
        return str(self.source) if self.source else f"preset {self.name!r}"

    def settings_for(self, stem: str) -> StemSettings:
        """The stem's own section, else ``[stems.default]``, else left as it is."""
        return self.stems.get(stem) or self.stems.get(DEFAULT_STEM) or StemSettings()

    @property
    def external_plugins(self) -> list[PluginStep]:
        return [s for st in self.stems.values() for s in st.chain if s.plugin in EXTERNAL]


def _allowed(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values)


def _type_name(value: Any) -> str:
    return {bool: "true/false", str: "text", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _number(problems: Problems, key: str, value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.add(
            key,
            f"must be a number, not {_type_name(value)} ({value!r}).",
            f"Write {key.rsplit('.', 1)[-1]} as a number from {low:g} to {high:g}.",
        )
        return None
    if not low <= value <= high:
        problems.add(
            key,
            f"{value:g} is out of range.",
            f"Use a value from {low:g} to {high:g} for {key.rsplit('.', 1)[-1]}.",
        )
        return None
    return float(value)


def parse_preset(data: dict[str, Any], source: Path | None = None) -> Preset:
    """Check a decoded preset and build it; raise :class:`PresetError` listing every problem."""
    problems = Problems(
        str(source) if source else "preset", PresetError, "`daw-bridge presets validate`"
    )
    for key in data:
        if key not in TOP_KEYS:
            problems.add(
                key, "is not a preset setting.", f"Allowed at the top: {_allowed(TOP_KEYS)}."
            )
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.add(
            "name",
            "is missing." if name is None else f"{name!r} is not a valid preset name.",
            'Give the preset a name of lowercase letters, digits, "-" and "_", '
            'e.g. name = "my-vocals" (it becomes the output folder).',
        )
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.add("description", "must be text.", 'Write it in quotes: description = "..."')
    tail = data.get("tail", "cut")
    if tail not in TAILS:
        problems.add("tail", f"{tail!r} is not a tail mode.", f"Use one of: {_allowed(TAILS)}.")
    stems: dict[str, StemSettings] = {}
    raw_stems = data.get("stems")
    if not isinstance(raw_stems, dict) or not raw_stems:
        problems.add(
            "stems",
            "is missing or empty.",
            "Add at least one [stems.<stem>] section, e.g. [stems.vocals] with gain_db = -3.",
        )
        raw_stems = {}
    base = source.parent if source else Path.cwd()
    allowed_stems = stem_keys()
    for stem, section in raw_stems.items():
        key = f"stems.{stem}"
        if stem not in allowed_stems:
            problems.add(
                key,
                f"{stem!r} is not a stem of any model." + did_you_mean(str(stem), allowed_stems),
                f"Stems are: {_allowed([k for k in allowed_stems if not k.startswith('no_')])}; "
                "and no_<stem> for a two-stem split (e.g. no_vocals).",
            )
            continue
        if not isinstance(section, dict):
            problems.add(
                key, "must be a section.", f"Write it as [{key}] followed by its settings."
            )
            continue
        stems[stem] = _parse_stem(problems, key, section, base)
    problems.raise_if_any()
    return Preset(name=name, description=description, stems=stems, tail=tail, source=source)


def _parse_stem(problems: Problems, key: str, section: dict, base: Path) -> StemSettings:
    for setting in section:
        if setting not in STEM_SETTING_KEYS:
            problems.add(
                f"{key}.{setting}",
                "is not a stem setting.",
                f"Allowed in [{key}]: {_allowed(STEM_SETTING_KEYS)}.",
            )
    gain = _number(problems, f"{key}.gain_db", section.get("gain_db", 0.0), *GAIN_RANGE)
    loudness = section.get("loudness_lufs")
    if loudness is not None:
        loudness = _number(problems, f"{key}.loudness_lufs", loudness, *LOUDNESS_RANGE)
    mute = section.get("mute", False)
    if not isinstance(mute, bool):
        problems.add(f"{key}.mute", f"must be true or false, not {mute!r}.", "Write mute = true.")
    chain = section.get("chain", [])
    if not isinstance(chain, list) or not all(isinstance(step, dict) for step in chain):
        problems.add(
            f"{key}.chain",
            "must be a list of plugins.",
            f'Write each plugin as [[{key}.chain]] with plugin = "Name" and its parameters.',
        )
        chain = []
    steps = tuple(
        _parse_step(problems, f"{key}.chain[{i}]", step, base) for i, step in enumerate(chain)
    )
    return StemSettings(
        chain=tuple(step for step in steps if step is not None),
        gain_db=gain or 0.0,
        mute=mute is True,
        loudness_lufs=loudness,
    )


def _parse_step(problems: Problems, key: str, step: dict, base: Path) -> PluginStep | None:
    plugin = step.get("plugin")
    known = [*PLUGINS, *EXTERNAL]
    if plugin not in known:
        what = "has no plugin" if plugin is None else f"{plugin!r} is not a known plugin"
        problems.add(
            f"{key}.plugin",
            f"{what}.",
            f'Use one of: {_allowed(known)} (vst3/au take a path = "...").',
        )
        return None
    parameters = {k: v for k, v in step.items() if k not in STEP_KEYS}
    if plugin in EXTERNAL:
        path = step.get("path")
        suffixes = EXTERNAL[plugin]
        if not isinstance(path, str) or not path.lower().rstrip("/\\").endswith(suffixes):
            problems.add(
                f"{key}.path",
                "is missing." if path is None else f"{path!r} is not a {plugin} plugin file.",
                f'Give the plugin\'s file: path = "/path/to/Plugin{suffixes[0]}".',
            )
            return None
        plugin_name = step.get("plugin_name")
        if plugin_name is not None and not isinstance(plugin_name, str):
            problems.add(f"{key}.plugin_name", "must be text.", 'Write plugin_name = "Name".')
            plugin_name = None
        for name, value in parameters.items():
            if not isinstance(value, (bool, int, float, str)):
                problems.add(
                    f"{key}.{name}",
                    f"must be a number, true/false or text, not {_type_name(value)}.",
                    "Write the value as the plugin shows it (a number, true/false or text).",
                )
        resolved = (base / Path(path).expanduser()).resolve()
        return PluginStep(plugin, parameters, resolved, plugin_name, where=key)
    for extra in ("path", "plugin_name"):
        if extra in step:
            problems.add(
                f"{key}.{extra}",
                f"only applies to vst3/au plugins, not {plugin}.",
                f'Remove {extra}, or use plugin = "vst3" for a plugin file.',
            )
    allowed = PLUGINS[plugin]
    good: dict[str, Any] = {}
    for name, value in parameters.items():
        param = allowed.get(name)
        if param is None:
            problems.add(
                f"{key}.{name}",
                f"{plugin} has no parameter {name!r}.",
                f"{plugin} takes: {_allowed(list(allowed)) or 'no parameters'}.",
            )
        elif param.choices:
            if value in param.choices:
                good[name] = value
            else:
                problems.add(
                    f"{key}.{name}", f"{value!r} is not allowed.", f"Use {param.describe()}."
                )
        else:
            number = _number(problems, f"{key}.{name}", value, param.low, param.high)
            if number is not None:
                good[name] = number
    return PluginStep(plugin, good, where=key)


def read_preset_file(path: Path) -> Preset:
    """Read and check one preset file."""
    syntax = (
        "strings need quotes, sections look like [stems.vocals], plugins like "
        "[[stems.vocals.chain]]"
    )
    data = read_toml(Path(path), "preset", PresetError, syntax)
    return parse_preset(data, path)
