"""A network's spectrum made a real signal's before the inverse STFT.

A real signal's spectrum has no imaginary part at 0 Hz or, for an even FFT size,
at the Nyquist frequency. A network's output has some there. ``torch.istft``
ignores them on the CPU (as the documentation of ``torch.fft.irfft`` says), but
cuFFT's batched complex-to-real transforms may not: they may combine several
transforms of a batch into one ("Performance optimizations in batched mode can
combine signal from different batches", cuFFT's guide; PyTorch issues 113956
and 154496), and then these parts leak into a neighbour's output. A segment's
stems then depended on the segments it shared a forward pass with: 0.97 % on a
tiny HTDemucs batched 4 to a pass on an H200, where such a leak, modelled on
the CPU, moves that network's output by 1.07 %. Zeroing them is what the CPU
already does, bit for bit, so every device, batch size and FFT algorithm then
computes the same inverse.
"""

from __future__ import annotations

import torch
from torch import nn


def make_one_sided_(spectrum: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Zero, in place, the imaginary parts of the 0 Hz bin and (for an even ``n_fft``)
    the Nyquist bin, where ``spectrum`` (complex, ``(..., freqs, frames)``) holds them.

    In place because the spectra are large (hundreds of MB on a GPU batch): pass a
    tensor the caller owns, such as a fresh product or copy. Returns ``spectrum``.
    """
    if not spectrum.is_complex():
        raise TypeError(f"a complex spectrum is needed, not {spectrum.dtype}")
    torch.imag(spectrum[..., 0, :]).zero_()
    nyquist = n_fft // 2
    if n_fft % 2 == 0 and spectrum.shape[-2] > nyquist:
        torch.imag(spectrum[..., nyquist, :]).zero_()
    return spectrum


def give_one_sided_spectra(model: nn.Module) -> nn.Module:
    """Make a demucs model (HTDemucs, HDemucs) hand its iSTFT one-sided spectra, on every
    path that calls its ``_ispec`` (its own ``forward`` and ``htcore.forward_with_core``);
    a model without an iSTFT (waveform Demucs) is returned as it is.

    demucs has no hook between its mask and its iSTFT, so this instance's ``_ispec`` is
    wrapped, once and for good: its class and other instances are untouched, and a deep
    or pickled copy stays wrapped.
    """
    if hasattr(type(model), "_ispec") and "_ispec" not in vars(model):
        model._ispec = _OneSidedIspec(model)
    return model


class _OneSidedIspec:
    """``model._ispec`` with its input made one-sided. An object, not a closure or bound
    method, so that a model carrying it can still be pickled."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, z: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # ``z`` is ``_mask``'s output, made for this call only: writing into it is safe.
        model = self.model
        return type(model)._ispec(model, make_one_sided_(z, model.nfft), *args, **kwargs)
