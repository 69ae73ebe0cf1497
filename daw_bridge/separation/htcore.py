"""HTDemucs split in three: spectrogram in torch, network core anywhere, iSTFT in torch.

The whole HTDemucs does not export to ONNX/OpenVINO because its STFT tensors
are complex. Everything between the magnitude ("complex as channels") input
and the decoder outputs is real, so :class:`HTDemucsCore` wraps exactly that
part and :func:`forward_with_core` re-assembles ``HTDemucs.forward`` around any
callable that computes it (the torch module itself, ONNX Runtime, OpenVINO).
With the torch core the result equals ``HTDemucs.forward`` bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from demucs.htdemucs import HTDemucs
from einops import rearrange
from torch import nn
from torch.nn import functional as F

#: ``(mix, mag) -> (freq branch output, time branch output)``
CoreFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def supports_core(model: nn.Module) -> bool:
    """The split applies to inference-mode HTDemucs models with complex-as-channels."""
    return (
        isinstance(model, HTDemucs) and model.cac and model.use_train_segment and not model.training
    )


class HTDemucsCore(nn.Module):
    """``HTDemucs.forward`` from the normalised inputs to the branch outputs, unscaled.

    Inputs: ``mix`` (B, C, L) already padded to the training length and ``mag``
    (B, 2C, F, T), the complex-as-channels spectrogram, each normalised as
    ``forward`` normalises them (:func:`_normalised`). Outputs: the frequency
    branch ``(B, S, 2C, F, T)`` and the time branch ``(B, S, C, L)`` before their
    scale is restored.

    The normalisation stays outside, in PyTorch's float32: its standard deviation
    divides by the element count less one (2.75 million for a full-size segment's
    spectrogram), which float16 cannot hold (its largest number is 65504), the
    likely cause of the NaN an exported core computed in float16 gave (README,
    Precision). In float32 it is also more exact there: -111 dB from PyTorch
    instead of -88.
    """

    def __init__(self, model: HTDemucs) -> None:
        super().__init__()
        self.model = model

    def forward(self, mix: torch.Tensor, mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        x, xt = mag, mix
        B, _C, Fq, T = x.shape

        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(m.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(m.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = m.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt
            x = encode(x, inject)
            if idx == 0 and m.freq_emb is not None:
                frs = torch.arange(x.shape[-2], device=x.device)
                emb = m.freq_emb(frs).t()[None, :, :, None].expand_as(x)
                x = x + m.freq_emb_scale * emb
            saved.append(x)
        if m.crosstransformer:
            if m.bottom_channels:
                _b, _c, f, _t = x.shape
                x = rearrange(x, "b c f t-> b c (f t)")
                x = m.channel_upsampler(x)
                x = rearrange(x, "b c (f t)-> b c f t", f=f)
                xt = m.channel_upsampler_t(xt)
            x, xt = m.crosstransformer(x, xt)
            if m.bottom_channels:
                x = rearrange(x, "b c f t-> b c (f t)")
                x = m.channel_downsampler(x)
                x = rearrange(x, "b c (f t)-> b c f t", f=f)
                xt = m.channel_downsampler_t(xt)

        for idx, decode in enumerate(m.decoder):
            skip = saved.pop(-1)
            x, pre = decode(x, skip, lengths.pop(-1))
            offset = m.depth - len(m.tdecoder)
            if idx >= offset:
                tdec = m.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    pre = pre[:, :, 0]
                    xt, _ = tdec(pre, None, length_t)
                else:
                    skip = saved_t.pop(-1)
                    xt, _ = tdec(xt, skip, length_t)

        S = len(m.sources)
        return x.view(B, S, -1, Fq, T), xt.view(B, S, -1, mix.shape[-1])


def _normalised(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """``x`` scaled as ``HTDemucs.forward`` scales its inputs, with the mean and
    standard deviation that restore the outputs' scale."""
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True)
    return (x - mean) / (1e-5 + std), mean, std


def forward_with_core(model: HTDemucs, mix: torch.Tensor, core: CoreFn) -> torch.Tensor:
    """``model(mix)`` in eval mode, with the network core computed by ``core``."""
    length = mix.shape[-1]
    training_length = int(model.segment * model.samplerate)
    length_pre_pad = None
    if length < training_length:
        length_pre_pad = length
        mix = F.pad(mix, (0, training_length - length))
    elif length > training_length:
        raise ValueError(f"input of {length} frames is longer than the segment {training_length}")
    z = model._spec(mix)
    mag, mean, std = _normalised(model._magnitude(z), (1, 2, 3))
    normalised_mix, meant, stdt = _normalised(mix, (1, 2))
    x, xt = core(normalised_mix, mag)
    x = x * std[:, None] + mean[:, None]
    xt = xt * stdt[:, None] + meant[:, None]
    zout = model._mask(z, x)
    out = model._ispec(zout, training_length) + xt
    if length_pre_pad:
        out = out[..., :length_pre_pad]
    return out
