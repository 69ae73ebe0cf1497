"""The effects a preset may name, their parameters and ranges, and how they are built.

pedalboard's own plugins do not expose their parameter ranges, so they are
spelled out here: a preset is then checked completely before any audio is
touched, and an error can list what is allowed. Plugins that drop or delay
audio when streamed block by block in a way we cannot line up again (PitchShift,
GSMFullRateCompressor) are left out. Third-party VST3 / Audio Unit plugins are
loaded by path only when a preset using them is applied.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daw_bridge.presets.schema import PluginStep


@dataclass(frozen=True)
class Param:
    """A number in ``[low, high]``, or one of ``choices`` (an enum of the plugin)."""

    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(f'"{choice}"' for choice in self.choices)
        return f"a number from {self.low:g} to {self.high:g}"


_HZ = Param(10.0, 22000.0)
_Q = Param(0.1, 20.0)
_EQ_GAIN = Param(-24.0, 24.0)
_UNIT = Param(0.0, 1.0)
_THRESHOLD = Param(-60.0, 0.0)
_ATTACK = Param(0.01, 1000.0)
_RELEASE = Param(1.0, 5000.0)
_RATIO = Param(1.0, 100.0)
_SHELF = {"cutoff_frequency_hz": _HZ, "gain_db": _EQ_GAIN, "q": _Q}

#: pedalboard plugin class name -> its parameters.
PLUGINS: dict[str, dict[str, Param]] = {
    "Gain": {"gain_db": Param(-60.0, 24.0)},
    "HighpassFilter": {"cutoff_frequency_hz": _HZ},
    "LowpassFilter": {"cutoff_frequency_hz": _HZ},
    "HighShelfFilter": _SHELF,
    "LowShelfFilter": _SHELF,
    "PeakFilter": _SHELF,
    "LadderFilter": {
        "mode": Param(choices=("LPF12", "HPF12", "BPF12", "LPF24", "HPF24", "BPF24")),
        "cutoff_hz": _HZ,
        "resonance": _UNIT,
        "drive": Param(1.0, 100.0),
    },
    "Compressor": {
        "threshold_db": _THRESHOLD,
        "ratio": _RATIO,
        "attack_ms": _ATTACK,
        "release_ms": _RELEASE,
    },
    "Limiter": {"threshold_db": _THRESHOLD, "release_ms": _RELEASE},
    "NoiseGate": {
        "threshold_db": Param(-100.0, 0.0),
        "ratio": _RATIO,
        "attack_ms": _ATTACK,
        "release_ms": _RELEASE,
    },
    "Reverb": {
        name: _UNIT
        for name in ("room_size", "damping", "wet_level", "dry_level", "width", "freeze_mode")
    },
    "Delay": {"delay_seconds": Param(0.0, 30.0), "feedback": _UNIT, "mix": _UNIT},
    "Chorus": {
        "rate_hz": Param(0.0, 99.0),
        "depth": _UNIT,
        "centre_delay_ms": Param(1.0, 100.0),
        "feedback": Param(-1.0, 1.0),
        "mix": _UNIT,
    },
    "Phaser": {
        "rate_hz": Param(0.0, 99.0),
        "depth": _UNIT,
        "centre_frequency_hz": _HZ,
        "feedback": Param(-1.0, 1.0),
        "mix": _UNIT,
    },
    "Distortion": {"drive_db": Param(0.0, 60.0)},
    "Clipping": {"threshold_db": _THRESHOLD},
    "Bitcrush": {"bit_depth": Param(1.0, 32.0)},
    "Resample": {
        "target_sample_rate": Param(1000.0, 192000.0),
        "quality": Param(
            choices=("ZeroOrderHold", "Linear", "CatmullRom", "Lagrange", "WindowedSinc")
        ),
    },
    "MP3Compressor": {"vbr_quality": Param(0.0, 10.0)},
    "Invert": {},
}
#: ``plugin = "vst3"`` / ``"au"``: a third-party plugin file loaded by path.
EXTERNAL = {"vst3": (".vst3",), "au": (".component",)}
#: Keys of a chain step that are not parameters.
STEP_KEYS = ("plugin", "path", "plugin_name")
#: Frequencies are kept below this fraction of the sample rate (filters need < Nyquist).
_MAX_FREQUENCY_FRACTION = 0.45


def build(step: PluginStep, samplerate: int, preset_label: str) -> Any:
    """A fresh pedalboard plugin for ``step`` (each stem gets its own: plugins keep state)."""
    import pedalboard

    if step.plugin in EXTERNAL:
        return _load_external(step, preset_label)
    cls = getattr(pedalboard, step.plugin)
    values: dict[str, Any] = {}
    for name, value in step.parameters.items():
        param = PLUGINS[step.plugin][name]
        if param.choices:
            enum = cls.Quality if name == "quality" else cls.Mode
            value = getattr(enum, value)
        elif name.endswith("_hz") and name != "rate_hz":
            value = min(float(value), _MAX_FREQUENCY_FRACTION * samplerate)
        values[name] = value
    return cls(**values)


def _load_external(step: PluginStep, preset_label: str) -> Any:
    import pedalboard

    from daw_bridge.presets.schema import PresetError

    where = f"{preset_label}, {step.where}"
    kind = "VST3" if step.plugin == "vst3" else "Audio Unit"
    path = Path(step.path or "")
    if step.plugin == "au" and sys.platform != "darwin":
        raise PresetError(
            f"{where}: Audio Unit plugins exist only on macOS ({path}).",
            'Use the plugin\'s VST3 version (plugin = "vst3") on this system.',
        )
    if not path.exists():
        raise PresetError(
            f"{where}: the {kind} plugin {path} was not found.",
            f"Install the plugin or correct `path` (it must point at the {kind} "
            f"{'bundle' if step.plugin == 'au' else 'file or bundle'}).",
        )
    try:
        plugin = pedalboard.load_plugin(str(path), plugin_name=step.plugin_name)
    except (ImportError, ValueError, RuntimeError, OSError) as error:
        raise PresetError(
            f"{where}: the {kind} plugin {path} could not be loaded ({error}).",
            "Check that it is a 64-bit plugin for this system; for a file holding several "
            "plugins set `plugin_name` to the one you want.",
        ) from error
    known = list(getattr(plugin, "parameters", {}))
    for name, value in step.parameters.items():
        if name not in known:
            raise PresetError(
                f"{where}: {path.name} has no parameter {name!r}.",
                f"Use one of: {', '.join(known) or '(this plugin has no parameters)'}.",
            )
        try:
            setattr(plugin, name, value)
        except (ValueError, TypeError) as error:
            raise PresetError(
                f"{where}: {name} = {value!r} is not accepted by {path.name} ({error}).",
                "Use a value in the range the plugin shows for this parameter.",
            ) from error
    return plugin
