"""Building blocks shared by MSST's BS-RoFormer and Mel-Band RoFormer (inference only).

Every ``nn.Module`` attribute that owns weights carries the name MSST gives it, and every
``nn.Sequential`` keeps MSST's layer positions (weight-free layers included), so that
MSST checkpoints load with ``strict=True``. The arithmetic follows MSST step by step
(normalisations, rotary positions, attention scales) so that outputs agree with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from daw_bridge.separation.spectrum import make_one_sided_


class RMSNorm(nn.Module):
    """Unit-length rows scaled by sqrt(dim) and a learned gain (MSST's RMSNorm, no epsilon
    beyond ``F.normalize``'s)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class FeedForward(nn.Module):
    """Pre-norm GELU MLP; the dropouts hold MSST's ``net.<i>`` positions (no weights)."""

    def __init__(self, dim: int, mult: float = 4, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mult)
        self.net = nn.Sequential(
            RMSNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over the whole head dimension, rotating interleaved
    channel pairs (0,1), (2,3), ... as ``rotary_embedding_torch`` (0.9) does by default.

    ``freqs`` is a frozen parameter, as there, because checkpoints store it
    (``...rotary_embed.freqs``); the angles are computed from the stored values.
    """

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        exponents = torch.arange(0, dim, 2)[: dim // 2].float() / dim
        self.freqs = nn.Parameter(1.0 / (theta**exponents), requires_grad=False)

    def rotate(self, t: Tensor) -> Tensor:
        """``t`` rotated by its position along dim -2 (the sequence axis)."""
        # Positions in the frequencies' precision, float32 unless the model itself was cast
        # down. rotary_embedding_torch counts in ``t``'s dtype first, which under bfloat16
        # autocast rounds positions past 256; for float32 and float16 inputs up to 2048
        # tokens both are the same integers.
        positions = torch.arange(t.shape[-2], device=t.device, dtype=self.freqs.dtype)
        angles = positions[:, None] * self.freqs
        angles = angles.repeat_interleave(2, dim=-1)
        pairs = t.unflatten(-1, (-1, 2))
        swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return (t * angles.cos() + swapped * angles.sin()).to(t.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions and a sigmoid gate per head."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float,
        rotary_embed: RotaryEmbedding,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        inner = heads * dim_head
        self.rotary_embed = rotary_embed
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        batch, length, _ = x.shape
        # Channel layout of to_qkv's output: (q|k|v, head, head channel).
        q, k, v = self.to_qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q = self.rotary_embed.rotate(q)
        k = self.rotary_embed.rotate(k)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        gates = self.to_gates(x).transpose(1, 2).unsqueeze(-1).sigmoid()
        out = (out * gates).transpose(1, 2).reshape(batch, length, -1)
        return self.to_out(out)


class _SplitHeadsChannelsFirst(nn.Module):
    """(batch, tokens, 3*heads*dim_head) -> (3, batch, heads, dim_head, tokens)."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 4, 1)


class _MergeHeadsChannelsFirst(nn.Module):
    """(batch, heads, dim_head, tokens) -> (batch, tokens, heads*dim_head)."""

    def forward(self, x: Tensor) -> Tensor:
        batch, heads, dim_head, length = x.shape
        return x.permute(0, 3, 1, 2).reshape(batch, length, heads * dim_head)


class LinearAttention(nn.Module):
    """Cross-covariance attention (El-Nouby et al., arXiv:2106.09681): heads attend over
    channels, not tokens, so its cost is linear in the sequence length. MSST uses it for
    ``linear_transformer_depth > 0``; queries and keys are L2-normalised along the tokens
    and the logits scaled by 8 times a learned per-head temperature."""

    LOGIT_SCALE = 8.0

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Sequential(
            nn.Linear(dim, inner * 3, bias=False), _SplitHeadsChannelsFirst(heads)
        )
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.dropout = dropout
        self.to_out = nn.Sequential(_MergeHeadsChannelsFirst(), nn.Linear(inner, dim, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.to_qkv(self.norm(x))
        q = F.normalize(q, dim=-1) * self.temperature.exp()
        k = F.normalize(k, dim=-1)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.LOGIT_SCALE)
        return self.to_out(out)


class Transformer(nn.Module):
    """Residual (attention, feed-forward) pairs, optionally followed by an RMSNorm."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        attn_dropout: float,
        ff_dropout: float,
        norm_output: bool,
        rotary_embed: RotaryEmbedding | None = None,
        linear_attn: bool = False,
        ff_mult: float = 4,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            if linear_attn:
                attention: nn.Module = LinearAttention(dim, heads, dim_head, attn_dropout)
            else:
                if rotary_embed is None:
                    raise ValueError("token attention needs a rotary embedding")
                attention = Attention(dim, heads, dim_head, attn_dropout, rotary_embed)
            feed_forward = FeedForward(dim, mult=ff_mult, dropout=ff_dropout)
            self.layers.append(nn.ModuleList([attention, feed_forward]))
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        for attention, feed_forward in self.layers:
            x = attention(x) + x
            x = feed_forward(x) + x
        return self.norm(x)


def build_axial_layers(
    *,
    dim: int,
    depth: int,
    heads: int,
    dim_head: int,
    attn_dropout: float,
    ff_dropout: float,
    time_transformer_depth: int,
    freq_transformer_depth: int,
    linear_transformer_depth: int,
    norm_output: bool,
) -> nn.ModuleList:
    """MSST's ``layers``: per block an optional linear-attention transformer over all
    (time, band) tokens, then one over time and one over bands. All time transformers
    share one rotary embedding and all band transformers another, as in MSST."""
    time_rotary = RotaryEmbedding(dim_head)
    freq_rotary = RotaryEmbedding(dim_head)
    common: dict[str, Any] = dict(
        dim=dim,
        heads=heads,
        dim_head=dim_head,
        attn_dropout=attn_dropout,
        ff_dropout=ff_dropout,
        norm_output=norm_output,
    )
    blocks = nn.ModuleList()
    for _ in range(depth):
        block = nn.ModuleList()
        if linear_transformer_depth > 0:
            block.append(Transformer(depth=linear_transformer_depth, linear_attn=True, **common))
        block.append(Transformer(depth=time_transformer_depth, rotary_embed=time_rotary, **common))
        block.append(Transformer(depth=freq_transformer_depth, rotary_embed=freq_rotary, **common))
        blocks.append(block)
    return blocks


def run_axial_layers(layers: nn.ModuleList, x: Tensor, skip_connection: bool) -> Tensor:
    """Apply ``build_axial_layers``'s blocks to features (batch, time, bands, dim).

    With ``skip_connection`` each block's input also gets the outputs of all earlier
    blocks added (after its linear-attention stage), as MSST does.
    """
    earlier_outputs: list[Tensor] = []
    for block in layers:
        if len(block) == 3:
            linear_transformer, time_transformer, freq_transformer = block
            batch, frames, bands, dim = x.shape
            x = linear_transformer(x.reshape(batch, frames * bands, dim))
            x = x.view(batch, frames, bands, dim)
        else:
            time_transformer, freq_transformer = block
        if skip_connection:
            for earlier in earlier_outputs:
                x = x + earlier
        batch, frames, bands, dim = x.shape
        along_time = x.transpose(1, 2).reshape(batch * bands, frames, dim)
        along_time = time_transformer(along_time)
        x = along_time.view(batch, bands, frames, dim).transpose(1, 2)
        along_bands = freq_transformer(x.reshape(batch * frames, bands, dim))
        x = along_bands.view(batch, frames, bands, dim)
        if skip_connection:
            earlier_outputs.append(x)
    return x


class BandSplit(nn.Module):
    """Project each band's (frequency x channel x re/im) values to one ``dim`` vector."""

    def __init__(self, dim: int, dim_inputs: Sequence[int]) -> None:
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(width), nn.Linear(width, dim)) for width in self.dim_inputs
        )

    def forward(self, x: Tensor) -> Tensor:
        bands = x.split(self.dim_inputs, dim=-1)
        return torch.stack(
            [net(band) for band, net in zip(bands, self.to_features, strict=True)], dim=-2
        )


def _tanh_mlp(dim_in: int, dim_out: int, dim_hidden: int, hidden_layers: int) -> nn.Sequential:
    """Linear layers with Tanh between them (not after the last): ``hidden_layers`` hidden
    widths of ``dim_hidden``, so ``hidden_layers + 1`` Linear layers."""
    widths = [dim_in, *([dim_hidden] * hidden_layers), dim_out]
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(pairwise(widths)):
        if index > 0:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """One stem's complex mask: per band an MLP + GLU back to that band's input width.

    BS-RoFormer and Mel-Band RoFormer read MSST's ``mask_estimator_depth`` differently
    (``depth`` Linear layers vs ``depth + 1``), so the caller gives ``hidden_layers``.
    """

    def __init__(
        self, dim: int, dim_inputs: Sequence[int], hidden_layers: int, mlp_expansion_factor: int
    ) -> None:
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        dim_hidden = dim * mlp_expansion_factor
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_tanh_mlp(dim, width * 2, dim_hidden, hidden_layers), nn.GLU(dim=-1))
            for width in self.dim_inputs
        )

    def forward(self, x: Tensor) -> Tensor:
        bands = x.unbind(dim=-2)
        return torch.cat(
            [net(band) for band, net in zip(bands, self.to_freqs, strict=True)], dim=-1
        )


def check_inference_options(
    *, use_pope: bool, stft_window_fn: Callable[..., Tensor] | None
) -> Callable[..., Tensor]:
    """Refuse what this implementation lacks; return the STFT window function."""
    if use_pope:
        raise NotImplementedError(
            "use_pope=True (PoPE positional embeddings from the optional PoPE_pytorch "
            "package) is not implemented; no public config uses it"
        )
    return torch.hann_window if stft_window_fn is None else stft_window_fn


class SpectrogramCodec:
    """MSST's STFT / inverse STFT settings for a model (centred, reflect-padded).

    On Apple's MPS the transforms run on the CPU, where MSST's BS-RoFormer falls back to
    when they fail on that device.
    """

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        win_length: int,
        normalized: bool,
        window_fn: Callable[..., Tensor],
    ) -> None:
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.normalized = normalized
        self.window_fn = window_fn

    @property
    def num_freqs(self) -> int:
        """Frequency bins of the one-sided spectrum."""
        return self.n_fft // 2 + 1

    def _settings(self, device: torch.device) -> dict[str, Any]:
        return dict(
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            normalized=self.normalized,
            window=self.window_fn(self.win_length, device=device),
        )

    def stft(self, audio: Tensor) -> Tensor:
        """(..., samples) -> real view of the spectrum (..., freqs, frames, 2)."""
        device = _transform_device(audio.device)
        leading = audio.shape[:-1]
        spectrum = torch.stft(
            audio.reshape(-1, audio.shape[-1]).to(device),
            **self._settings(device),
            return_complex=True,
        )
        spectrum = torch.view_as_real(spectrum).to(audio.device)
        return spectrum.view(*leading, *spectrum.shape[1:])

    def istft(self, spectrum: Tensor, length: int | None) -> Tensor:
        """Complex (rows, freqs, frames) -> (rows, samples)."""
        device = _transform_device(spectrum.device)
        audio = torch.istft(
            spectrum.to(device), **self._settings(device), return_complex=False, length=length
        )
        return audio.to(spectrum.device)


def _transform_device(device: torch.device) -> torch.device:
    return torch.device("cpu") if device.type == "mps" else device


def interleave_channels(spectrum: Tensor) -> Tensor:
    """(batch, channels, freqs, frames, 2) -> (batch, freqs*channels, frames, 2), channel
    minor: MSST's frequency-major layout in which stereo bins sit side by side."""
    batch, channels, freqs, frames, parts = spectrum.shape
    return spectrum.permute(0, 2, 1, 3, 4).reshape(batch, freqs * channels, frames, parts)


def masked_to_audio(
    codec: SpectrogramCodec,
    masked: Tensor,
    channels: int,
    zero_dc: bool,
    length: int | None,
) -> Tensor:
    """Complex masked spectra (batch, stems, freqs*channels, frames) -> audio
    (batch, stems, channels, samples); ``zero_dc`` silences the 0 Hz bin first, and the
    iSTFT is given a real signal's spectrum (:func:`make_one_sided_`)."""
    batch, stems, rows, frames = masked.shape
    per_channel = masked.view(batch, stems, rows // channels, channels, frames)
    per_channel = per_channel.transpose(2, 3).reshape(batch * stems * channels, -1, frames)
    if zero_dc:
        per_channel[:, 0] = 0.0  # ``masked`` is a fresh product: writing into it is safe
    audio = codec.istft(make_one_sided_(per_channel, codec.n_fft), length=length)
    return audio.view(batch, stems, channels, audio.shape[-1])


def as_batch_channels_samples(mix: Tensor, channels: int) -> Tensor:
    """Accept (batch, samples) for mono like MSST; check the channel count."""
    if mix.ndim == 2:
        mix = mix.unsqueeze(1)
    if mix.ndim != 3 or mix.shape[1] != channels:
        raise ValueError(
            f"expected audio of shape (batch, {channels}, samples) for a "
            f"{'stereo' if channels == 2 else 'mono'} model, got {tuple(mix.shape)}"
        )
    return mix


def complex_mask(mask_features: Tensor, dtype: torch.dtype) -> Tensor:
    """Mask estimator outputs (batch, stems, frames, freqs*2) -> complex masks
    (batch, stems, freqs, frames) with real parts of ``dtype``, the spectrum's (under
    autocast the estimators may give halves; MSST's products promote them the same way)."""
    batch, stems, frames, width = mask_features.shape
    pairs = mask_features.to(dtype).view(batch, stems, frames, width // 2, 2)
    return torch.view_as_complex(pairs.transpose(2, 3).contiguous())
