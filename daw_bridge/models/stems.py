"""Which stems each named model gives, read from the catalogues without loading a model.

Ensemble files and presets are checked against these names before anything is
downloaded, so a typo is found in a second rather than after minutes of inference.
The catalogues are the single source: a model added there is known here at once.
"""

from __future__ import annotations

from daw_bridge.models.catalog import FOUR_SOURCES, MODELS

#: The classical separator (``loader.DSP_MODEL``) and its stems (``dsp.SOURCES``), named
#: here so preset checks import no audio library; tests keep them equal.
DSP_MODEL = "dsp"
DSP_STEMS = FOUR_SOURCES
#: What ``--keep`` and the drum kit call the sum of what they leave (``keep.REST_STEM``).
REST_STEM = "rest"
#: Every Demucs v4 model works at this rate; the catalogue does not repeat it per model.
DEMUCS_SAMPLERATE = 44100
#: What an MSST model aiming at one of several instruments calls the mix minus its target.
INSTRUMENTAL = "instrumental"


def catalogue_stems() -> dict[str, tuple[str, ...]]:
    """Each catalogue model's stems in output order, by name (``dsp`` included)."""
    from daw_bridge.models.msst.catalog import MSST_MODELS

    stems = {name: spec.sources for name, spec in MODELS.items()}
    stems.update({name: entry.stems for name, entry in MSST_MODELS.items()})
    stems[DSP_MODEL] = DSP_STEMS
    return stems


def catalogue_samplerates() -> dict[str, int]:
    """Each catalogue model's sample rate: an ensemble may only mix models of one rate."""
    from daw_bridge.models.msst.catalog import MSST_MODELS

    rates = dict.fromkeys(MODELS, DEMUCS_SAMPLERATE)
    rates.update({name: entry.samplerate for name, entry in MSST_MODELS.items()})
    rates[DSP_MODEL] = DEMUCS_SAMPLERATE
    return rates


def all_model_stems() -> tuple[str, ...]:
    """Every stem name some catalogue model gives, each once, the 4-stem names first."""
    names: dict[str, None] = dict.fromkeys(FOUR_SOURCES)
    for stems in catalogue_stems().values():
        names.update(dict.fromkeys(stems))
    names[INSTRUMENTAL] = None
    return tuple(names)
