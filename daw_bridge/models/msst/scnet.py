"""SCNet (Sparse Compression Network, arXiv:2401.13276) as MSST runs it (``model_type: scnet``).

Written here for inference only. Module attribute names follow MSST's
``msst/models/scnet`` exactly, because they become the ``state_dict`` keys of
the public checkpoints; everything else (structure, helpers) is our own.

Build it as MSST does: ``SCNet(**config["model"])``. The forward pass needs
nothing else from the config: the STFT settings are model options here.
``forward`` takes ``(batch, audio_channels, samples)`` and returns
``(batch, len(sources), audio_channels, samples)``.

Shapes inside, for orientation: the spectrogram is ``(B, C, F, T)`` with the
real and imaginary parts of each audio channel as separate channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from daw_bridge.separation.spectrum import make_one_sided_

# MSST names the three bands low, mid, high; only these three exist.
_BAND_COUNT = 3


class ConvolutionModule(nn.Module):
    """Residual 1-D convolution stack applied along time to every frequency row of a band.

    Each layer is norm, pointwise conv to a gated pair (GLU), depthwise conv, norm,
    swish, pointwise conv back; the sequential indices are the checkpoint's.
    """

    def __init__(self, channels: int, depth: int, compress: float, kernel: int) -> None:
        super().__init__()
        hidden = int(channels / compress)
        same = kernel // 2
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(1, channels),
                nn.Conv1d(channels, 2 * hidden, kernel, padding=same),
                nn.GLU(dim=1),
                nn.Conv1d(hidden, hidden, kernel, padding=same, groups=hidden),
                nn.GroupNorm(1, hidden),
                nn.SiLU(),
                nn.Conv1d(hidden, channels, 1),
            )
            for _ in range(depth)
        )

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            rows = rows + layer(rows)
        return rows


def _band_bounds(freq_bins: int, low_share: float, mid_share: float) -> list[tuple[int, int]]:
    """Where the low, mid and high bands start and end (MSST rounds each edge up)."""
    low_end = math.ceil(freq_bins * low_share)
    mid_end = math.ceil(freq_bins * (low_share + mid_share))
    return [(0, low_end), (low_end, mid_end), (mid_end, freq_bins)]


class _SparseDown(nn.Module):
    """Splits the frequency axis into three bands and strides each down by its own factor."""

    def __init__(
        self,
        channels_in: int,
        channels_out: int,
        shares: Sequence[float],
        strides: Sequence[int],
        kernels: Sequence[int],
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels_in, channels_out, (kernel, 1), (stride, 1))
            for stride, kernel in zip(strides, kernels, strict=True)
        )
        self._strides = tuple(strides)
        self._kernels = tuple(kernels)
        self._low_share, self._mid_share = shares[0], shares[1]

    def forward(self, spec: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        bounds = _band_bounds(spec.shape[2], self._low_share, self._mid_share)
        bands: list[torch.Tensor] = []
        widths: list[int] = []
        for conv, stride, kernel, (start, end) in zip(
            self.convs, self._strides, self._kernels, bounds, strict=True
        ):
            band = spec[:, :, start:end]
            widths.append(end - start)
            # Stride 1 keeps the width ("same" padding); larger strides pad up to a multiple.
            extra = kernel - 1 if stride == 1 else -band.shape[2] % stride
            band = F.pad(band, (0, 0, extra // 2, extra - extra // 2))
            bands.append(conv(band))
        return bands, widths


class _SparseUp(nn.Module):
    """Undoes ``_SparseDown``: each band up by its stride, cropped back to its width."""

    def __init__(
        self,
        channels_in: int,
        channels_out: int,
        strides: Sequence[int],
        kernels: Sequence[int],
    ) -> None:
        super().__init__()
        self.convtrs = nn.ModuleList(
            nn.ConvTranspose2d(channels_in, channels_out, (kernel, 1), (stride, 1))
            for stride, kernel in zip(strides, kernels, strict=True)
        )

    def forward(
        self, spec: torch.Tensor, coarse_widths: Sequence[int], fine_widths: Sequence[int]
    ) -> torch.Tensor:
        starts = [0, coarse_widths[0], coarse_widths[0] + coarse_widths[1]]
        ends: list[int | None] = [starts[1], starts[2], None]
        pieces = []
        for convtr, start, end, width in zip(self.convtrs, starts, ends, fine_widths, strict=True):
            grown = convtr(spec[:, :, start:end])
            offset = abs(width - grown.shape[2]) // 2
            pieces.append(grown[:, :, offset : offset + width])
        return torch.cat(pieces, dim=2)


class _EncoderLevel(nn.Module):
    """One SD block: sparse down-sampling, per-band convolution modules, a global 2-D conv."""

    def __init__(
        self,
        channels_in: int,
        channels_out: int,
        band_layout: dict[str, Sequence],
        conv_depths: Sequence[int],
        compress: float,
        conv_kernel: int,
    ) -> None:
        super().__init__()
        self.SDlayer = _SparseDown(channels_in, channels_out, **band_layout)
        self.conv_modules = nn.ModuleList(
            ConvolutionModule(channels_out, depth, compress, conv_kernel) for depth in conv_depths
        )
        self.globalconv = nn.Conv2d(channels_out, channels_out, 3, 1, 1)

    def forward(
        self, spec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
        bands, widths = self.SDlayer(spec)
        processed = []
        for module, band in zip(self.conv_modules, bands, strict=True):
            batch, channels, rows, frames = band.shape
            # Every frequency row is an independent sequence over time.
            as_rows = band.transpose(1, 2).reshape(batch * rows, channels, frames)
            as_rows = module(as_rows)
            processed.append(F.gelu(as_rows.reshape(batch, rows, channels, frames).transpose(1, 2)))
        coarse_widths = [band.shape[2] for band in processed]
        joined = torch.cat(processed, dim=2)
        return self.globalconv(joined), joined, coarse_widths, widths


class _Fusion(nn.Module):
    """Adds the encoder's skip, then a gated 3x3 conv over the channel-doubled input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, 3, 1, 1)

    def forward(self, spec: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        spec = spec + skip
        return F.glu(self.conv(torch.cat([spec, spec], dim=1)), dim=1)


class _DualPathRNN(nn.Module):
    """A bidirectional LSTM across frequency, then one across time, each residual."""

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.lstm_layers = nn.ModuleList(
            nn.LSTM(channels, hidden, num_layers=1, bidirectional=True, batch_first=True)
            for _ in range(2)
        )
        self.linear_layers = nn.ModuleList(nn.Linear(2 * hidden, channels) for _ in range(2))
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, channels) for _ in range(2))

    def _along(self, path: int, spec: torch.Tensor, axis: int) -> torch.Tensor:
        """One residual pass whose sequences run along ``axis`` (2: frequency, 3: time)."""
        batch, channels = spec.shape[:2]
        other = 3 if axis == 2 else 2
        normed = self.norm_layers[path](spec)
        # (B, C, F, T) -> (B, other, along, C) -> (B * other, along, C)
        seqs = normed.permute(0, other, axis, 1).reshape(-1, spec.shape[axis], channels)
        seqs = self.linear_layers[path](self.lstm_layers[path](seqs)[0])
        seqs = seqs.reshape(batch, spec.shape[other], spec.shape[axis], channels)
        back = seqs.permute(0, 3, 2, 1) if axis == 2 else seqs.permute(0, 3, 1, 2)
        return spec + back

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self._along(1, self._along(0, spec, axis=2), axis=3)


def _to_time_spectrum(spec: torch.Tensor) -> torch.Tensor:
    """Real FFT along time; real and imaginary parts stacked as channels (doubles C)."""
    spectrum = torch.fft.rfft(spec.float(), dim=3, norm="ortho")
    return torch.cat([spectrum.real, spectrum.imag], dim=1)


def _from_time_spectrum(spec: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_to_time_spectrum`` (needs an even frame count to round-trip)."""
    real, imag = spec.float().chunk(2, dim=1)
    return torch.fft.irfft(torch.complex(real, imag), dim=3, norm="ortho")


class _SeparationNet(nn.Module):
    """Dual-path RNN layers alternating between the frame domain and its time spectrum."""

    def __init__(self, channels: int, expand: int, num_layers: int) -> None:
        super().__init__()
        # Odd layers see the time spectrum: twice the channels (real and imaginary).
        self.dp_modules = nn.ModuleList(
            _DualPathRNN(channels * (1 + index % 2), expand) for index in range(num_layers)
        )

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.dp_modules):
            spec = layer(spec)
            spec = _to_time_spectrum(spec) if index % 2 == 0 else _from_time_spectrum(spec)
        return spec


class SCNet(nn.Module):
    """SCNet with MSST's options and parameter names (defaults are MSST's SCNet base).

    ``band_SR``, ``band_stride`` and ``band_kernel`` give the low, mid and high band's
    share of the frequency axis, down-sampling stride and kernel height.
    """

    def __init__(
        self,
        sources: Sequence[str] = ("drums", "bass", "other", "vocals"),
        audio_channels: int = 2,
        dims: Sequence[int] = (4, 32, 64, 128),
        nfft: int = 4096,
        hop_size: int = 1024,
        win_size: int = 4096,
        normalized: bool = True,
        band_SR: Sequence[float] = (0.175, 0.392, 0.433),
        band_stride: Sequence[int] = (1, 4, 16),
        band_kernel: Sequence[int] = (3, 4, 16),
        conv_depths: Sequence[int] = (3, 2, 1),
        compress: float = 4,
        conv_kernel: int = 3,
        num_dplayer: int = 6,
        expand: int = 1,
    ) -> None:
        super().__init__()
        _check_options(
            audio_channels, dims, band_SR, band_stride, band_kernel, conv_depths, conv_kernel,
            num_dplayer,
        )  # fmt: skip
        self.sources = list(sources)
        self.audio_channels = audio_channels
        self.dims = list(dims)
        self.hop_length = hop_size
        self.nfft = nfft
        self.win_size = win_size
        self.normalized = normalized

        band_layout = {"shares": band_SR, "strides": band_stride, "kernels": band_kernel}
        self.encoder = nn.ModuleList()
        decoder_levels = []
        for level, (outer, inner) in enumerate(zip(self.dims[:-1], self.dims[1:], strict=True)):
            self.encoder.append(
                _EncoderLevel(outer, inner, band_layout, conv_depths, compress, conv_kernel)
            )
            # The outermost decoder level emits every source's spectrogram channels at once.
            emitted = outer * len(self.sources) if level == 0 else outer
            up = _SparseUp(inner, emitted, band_stride, band_kernel)
            decoder_levels.append(nn.ModuleList([_Fusion(inner), up]))
        # Deepest level first, the order the decoder runs in (and MSST's indices).
        self.decoder = nn.ModuleList(reversed(decoder_levels))
        self.separation_net = _SeparationNet(self.dims[-1], expand, num_dplayer)

    def _stft_options(self, like: torch.Tensor) -> dict:
        # A rectangular window: MSST passes none to torch.stft, which means all ones. Made
        # per call, not a buffer, so a model built on the meta device needs nothing extra.
        window = torch.ones(self.win_size, device=like.device, dtype=like.real.dtype)
        return {
            "n_fft": self.nfft,
            "hop_length": self.hop_length,
            "win_length": self.win_size,
            "window": window,
            "center": True,
            "normalized": self.normalized,
        }

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, audio_channels, L)`` audio to ``(B, sources, audio_channels, L)`` estimates."""
        batch, _, length = audio.shape
        # Pad to whole hops and to an odd hop count, so the STFT has an even frame count
        # (the separation net's real FFT along time must round-trip). Always pads >= 1.
        padding = self.hop_length - length % self.hop_length
        if ((length + padding) // self.hop_length) % 2 == 0:
            padding += self.hop_length
        padded = F.pad(audio, (0, padding))

        spec = torch.stft(
            padded.reshape(-1, padded.shape[-1]), **self._stft_options(padded), return_complex=True
        )
        freq, frames = spec.shape[-2:]
        # (B * C, F, T) complex -> (B, C * 2, F, T): re, im of channel 0, then channel 1, ...
        spec = torch.view_as_real(spec).permute(0, 3, 1, 2).reshape(batch, -1, freq, frames)

        skips = []
        for level in self.encoder:
            spec, skip, coarse_widths, fine_widths = level(spec)
            skips.append((skip, coarse_widths, fine_widths))
        spec = self.separation_net(spec)
        for fusion, up in self.decoder:
            skip, coarse_widths, fine_widths = skips.pop()
            spec = up(fusion(spec, skip), coarse_widths, fine_widths)

        # Channels are now (source, audio channel, re/im): one complex STFT per source-channel.
        spec = spec.reshape(-1, 2, freq, frames).permute(0, 2, 3, 1).contiguous()
        spec = torch.view_as_complex(spec)
        waves = torch.istft(make_one_sided_(spec, self.nfft), **self._stft_options(spec))
        waves = waves.reshape(batch, len(self.sources), self.audio_channels, -1)
        return waves[..., :-padding]


def _check_options(
    audio_channels: int,
    dims: Sequence[int],
    band_shares: Sequence[float],
    band_strides: Sequence[int],
    band_kernels: Sequence[int],
    conv_depths: Sequence[int],
    conv_kernel: int,
    num_dplayer: int,
) -> None:
    """Reject settings MSST cannot run either, or runs differently from what they say."""
    for name, values in (
        ("band_SR", band_shares),
        ("band_stride", band_strides),
        ("band_kernel", band_kernels),
        ("conv_depths", conv_depths),
    ):
        if len(values) != _BAND_COUNT:
            raise ValueError(f"SCNet {name} needs one value per band (low, mid, high): {values}")
    if any(depth < 0 for depth in conv_depths):
        # MSST takes abs() of these (a leftover of Demucs' convention); no public config has one.
        raise NotImplementedError(f"SCNet conv_depths with negative values: {conv_depths}")
    if len(dims) < 2 or dims[0] != 2 * audio_channels:
        raise ValueError(f"SCNet dims[0] must be 2 * audio_channels (re, im per channel): {dims}")
    if conv_kernel % 2 != 1:
        raise ValueError(f"SCNet conv_kernel must be odd: {conv_kernel}")
    if num_dplayer % 2 != 0:
        raise ValueError(
            f"SCNet num_dplayer must be even (layers alternate domains): {num_dplayer}"
        )
