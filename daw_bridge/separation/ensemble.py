"""Each stem from the model that does it best, e.g. vocals from a RoFormer and drums,
bass and other from ``htdemucs_ft``.

An ensemble is written ``stem=[rule:]model[+model...],...``, e.g.
``vocals=mel_roformer_vocals_kj,drums=htdemucs_ft,bass=htdemucs_ft,other=htdemucs_ft``.
A stem given several models is combined by a rule of MSST's ensemble script (UVR
users know "Max Spec" and "Min Spec"), by default their average: ``avg_wave``,
``median_wave``, ``min_wave``, ``max_wave`` (sample by sample, by magnitude), or the
same per bin of the spectrum (``avg_fft``, ``median_fft``, ``min_fft``, ``max_fft``;
a 2048-point STFT, hop 1024). ``vocals=max_fft:mel_roformer_vocals_kj+bs_roformer_vocals``
keeps the louder of the two in each bin. Each model runs once on the mix, whatever
number of stems it gives. The stems are not forced to sum to the mix here: the
pipeline's residual (sum-to-input, on by default) goes to ``other``, as for any model.
"""

from __future__ import annotations

from collections.abc import Callable

import librosa
import numpy as np

from daw_bridge.errors import InvalidOptionError
from daw_bridge.separation.base import CancelCheck, ProgressCallback, Separator


def is_ensemble(model: str) -> bool:
    return "=" in model


RULES = (
    "avg_wave",
    "median_wave",
    "min_wave",
    "max_wave",
    "avg_fft",
    "median_fft",
    "min_fft",
    "max_fft",
)
_N_FFT, _HOP = 2048, 1024  # MSST's ensemble STFT


def parse_ensemble(spec: str) -> dict[str, tuple[str, list[str]]]:
    """``{stem: (rule, [model, ...])}`` from ``stem=rule:model+model,stem=model``."""
    picks: dict[str, tuple[str, list[str]]] = {}
    for part in spec.split(","):
        stem, _, models = part.partition("=")
        rule, colon, models = models.partition(":")
        if not colon:
            rule, models = "avg_wave", rule
        rule = rule.strip()
        if rule not in RULES:
            raise InvalidOptionError(
                f"The ensemble {spec!r} names an unknown rule {rule!r}.",
                f"Use one of: {', '.join(RULES)}.",
            )
        stem, names = stem.strip(), [name.strip() for name in models.split("+")]
        if not stem or not all(names):
            raise InvalidOptionError(
                f"The ensemble {spec!r} has a part {part.strip()!r} without a stem or a model.",
                "Write it as stem=model, e.g. vocals=mel_roformer_vocals_kj,drums=htdemucs_ft.",
            )
        if stem in picks:
            raise InvalidOptionError(
                f"The ensemble {spec!r} names {stem!r} twice.",
                f"Name each stem once; to average models, join them: {stem}=model_a+model_b.",
            )
        picks[stem] = (rule, names)
    return picks


class EnsembleSeparator:
    """A :class:`Separator` made of others, one stem (or an average) from each."""

    def __init__(
        self, spec: str, load: Callable[[str], Separator], name: str | None = None
    ) -> None:
        self.name = name or spec  # a named ensemble's name gives its output folder
        picks = parse_ensemble(spec)
        self.members: dict[str, Separator] = {}
        for _rule, names in picks.values():
            for name in names:
                if name not in self.members:
                    self.members[name] = load(name)
        rates = {member.samplerate for member in self.members.values()}
        if len(rates) > 1:
            raise InvalidOptionError(
                f"The models of the ensemble {spec!r} work at different sample rates {rates}.",
                "Combine models of one sample rate.",
            )
        for stem, (_rule, names) in picks.items():
            for name in names:
                if stem not in self.members[name].sources:
                    raise InvalidOptionError(
                        f"Model {name!r} has no stem {stem!r} for the ensemble.",
                        f"Its stems: {', '.join(self.members[name].sources)}.",
                    )
        self.picks = picks
        self.sources = tuple(picks)
        self.samplerate = rates.pop()

    def separate(
        self,
        mix: np.ndarray,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> np.ndarray:
        outputs: dict[str, np.ndarray] = {}
        count = len(self.members)
        for done, (name, member) in enumerate(self.members.items()):

            def share(fraction: float, done: int = done) -> None:
                if progress is not None:
                    progress((done + fraction) / count)

            outputs[name] = member.separate(mix, share, should_cancel)
        stems = []
        for stem, (rule, names) in self.picks.items():
            picked = [outputs[name][self.members[name].sources.index(stem)] for name in names]
            stems.append(combine(np.stack(picked), rule).astype(np.float32))
        return np.stack(stems)


def combine(estimates: np.ndarray, rule: str) -> np.ndarray:
    """One stem from several models' estimates ``(models, channels, samples)``, as MSST's
    ensemble combines them with equal weights."""
    if len(estimates) == 1:
        return estimates[0]
    how, _, domain = rule.partition("_")
    length = estimates.shape[-1]
    values = _spectra(estimates) if domain == "fft" else estimates
    if how == "avg":
        merged = values.sum(axis=0) / len(values)
    elif how == "median":
        merged = np.median(values, axis=0)
    else:  # the value of largest or smallest magnitude, per sample or per bin
        pick = np.argmax if how == "max" else np.argmin
        index = np.expand_dims(pick(np.abs(values), axis=0), 0)
        merged = np.take_along_axis(values, index, axis=0)[0]
    if domain == "fft":
        return np.stack(
            [librosa.istft(channel, hop_length=_HOP, length=length) for channel in merged]
        )
    return merged


def _spectra(estimates: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            np.stack([librosa.stft(channel, n_fft=_N_FFT, hop_length=_HOP) for channel in wave])
            for wave in estimates
        ]
    )
