"""Each stem from the model that does it best, e.g. vocals from a RoFormer and drums,
bass and other from ``htdemucs_ft``.

An ensemble is written ``stem=model[+model...],...``: ``vocals=mel_roformer_vocals_kj,
drums=htdemucs_ft,bass=htdemucs_ft,other=htdemucs_ft``. A stem given several models is
their average (MSST's ``avg_wave``). Each model runs once on the mix, whatever number of
stems it gives. The stems are not forced to sum to the mix here: the pipeline's residual
(sum-to-input, on by default) goes to ``other``, as for any model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from daw_bridge.errors import InvalidOptionError
from daw_bridge.separation.base import CancelCheck, ProgressCallback, Separator


def is_ensemble(model: str) -> bool:
    return "=" in model


def parse_ensemble(spec: str) -> dict[str, list[str]]:
    """``{stem: [model, ...]}`` from ``stem=model+model,stem=model``."""
    picks: dict[str, list[str]] = {}
    for part in spec.split(","):
        stem, _, models = part.partition("=")
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
        picks[stem] = names
    return picks


class EnsembleSeparator:
    """A :class:`Separator` made of others, one stem (or an average) from each."""

    def __init__(self, spec: str, load: Callable[[str], Separator]) -> None:
        self.name = spec
        picks = parse_ensemble(spec)
        self.members: dict[str, Separator] = {}
        for names in picks.values():
            for name in names:
                if name not in self.members:
                    self.members[name] = load(name)
        rates = {member.samplerate for member in self.members.values()}
        if len(rates) > 1:
            raise InvalidOptionError(
                f"The models of the ensemble {spec!r} work at different sample rates {rates}.",
                "Combine models of one sample rate.",
            )
        for stem, names in picks.items():
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
        for stem, names in self.picks.items():
            picked = [outputs[name][self.members[name].sources.index(stem)] for name in names]
            stems.append(np.mean(picked, axis=0, dtype=np.float64).astype(np.float32))
        return np.stack(stems)
