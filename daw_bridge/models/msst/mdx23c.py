"""MDX23C (TFC-TDF v3 U-Net on the complex spectrogram) as MSST runs it (``model_type: mdx23c``).

Written here for inference only. Module attribute names follow MSST's
``msst/models/mdx23c_tfc_tdf_v3.py`` exactly, because they become the
``state_dict`` keys of the public checkpoints; everything else is our own.

Build it from the whole config, as MSST does: ``MDX23C(config)`` with ``config``
the plain dict from ``load_config`` (the model reads its ``audio``, ``model`` and
``training`` sections; the STFT and the stem list live outside ``model``).
``forward`` takes ``(batch, 2, samples)`` and returns
``(batch, stems, 2, hop_length * (samples // hop_length))``; MSST feeds it chunks
of ``audio.chunk_size`` samples, a whole number of hops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from daw_bridge.separation.spectrum import make_one_sided_


def _norm_factory(kind: str) -> Callable[[int], nn.Module]:
    """MSST's ``model.norm`` names; any other name means no normalisation, as in MSST."""
    if kind == "BatchNorm":
        return nn.BatchNorm2d
    if kind == "InstanceNorm":
        return lambda channels: nn.InstanceNorm2d(channels, affine=True)
    if "GroupNorm" in kind:
        groups = int(kind.replace("GroupNorm", ""))
        return lambda channels: nn.GroupNorm(groups, channels)
    return lambda channels: nn.Identity()


def _activation_factory(kind: str) -> Callable[[], nn.Module]:
    """MSST's ``model.act`` names: ``gelu``, ``relu`` or ``elu<alpha>`` (e.g. ``elu1.0``)."""
    if kind == "gelu":
        return nn.GELU
    if kind == "relu":
        return nn.ReLU
    if kind.startswith("elu"):
        alpha = float(kind[3:])
        return lambda: nn.ELU(alpha)
    raise ValueError(f"MDX23C model.act {kind!r}: MSST knows gelu, relu and elu<alpha>")


class _Layers:
    """The per-model norm and activation choice, handed to every block."""

    def __init__(self, norm: str, act: str) -> None:
        self.norm = _norm_factory(norm)
        self.act = _activation_factory(act)

    def pre_activated(self, channels: int, layer: nn.Module) -> nn.Sequential:
        """norm, activation, then ``layer``: the ordering (and indices) of MSST's blocks."""
        return nn.Sequential(self.norm(channels), self.act(), layer)


class _TfcTdfBlock(nn.Module):
    """Time-frequency convolutions around a frequency-only bottleneck MLP, with a shortcut."""

    def __init__(
        self, channels_in: int, channels: int, freq: int, bottleneck: int, layers: _Layers
    ) -> None:
        super().__init__()
        self.tfc1 = layers.pre_activated(
            channels_in, nn.Conv2d(channels_in, channels, 3, 1, 1, bias=False)
        )
        squeezed = nn.Linear(freq, freq // bottleneck, bias=False)
        expanded = nn.Linear(freq // bottleneck, freq, bias=False)
        self.tdf = nn.Sequential(
            *layers.pre_activated(channels, squeezed), *layers.pre_activated(channels, expanded)
        )
        self.tfc2 = layers.pre_activated(
            channels, nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        )
        self.shortcut = nn.Conv2d(channels_in, channels, 1, 1, 0, bias=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        hidden = self.tfc1(spec)
        hidden = hidden + self.tdf(hidden)
        return self.tfc2(hidden) + self.shortcut(spec)


class _TfcTdf(nn.Module):
    """``count`` TFC-TDF blocks in a row; the first one changes the channel count."""

    def __init__(
        self,
        channels_in: int,
        channels: int,
        count: int,
        freq: int,
        bottleneck: int,
        layers: _Layers,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            _TfcTdfBlock(
                channels_in if index == 0 else channels, channels, freq, bottleneck, layers
            )
            for index in range(count)
        )

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            spec = block(spec)
        return spec


class _Rescale(nn.Module):
    """norm, activation, then a strided (transposed) convolution by ``scale``."""

    def __init__(self, conv: nn.Module, channels_in: int, layers: _Layers) -> None:
        super().__init__()
        self.conv = layers.pre_activated(channels_in, conv)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.conv(spec)


class _EncoderLevel(nn.Module):
    def __init__(self, tfc_tdf: _TfcTdf, downscale: _Rescale) -> None:
        super().__init__()
        self.tfc_tdf = tfc_tdf
        self.downscale = downscale


class _DecoderLevel(nn.Module):
    def __init__(self, upscale: _Rescale, tfc_tdf: _TfcTdf) -> None:
        super().__init__()
        self.upscale = upscale
        self.tfc_tdf = tfc_tdf


def _target_stems(training: Mapping[str, Any]) -> list[str]:
    """MSST's rule: a set ``target_instrument`` means a one-stem model, else all instruments."""
    target = training.get("target_instrument")
    return [target] if target else list(training["instruments"])


class MDX23C(nn.Module):
    """TFC-TDF v3 with MSST's options and parameter names; see the module docstring."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        audio, model = config["audio"], config["model"]
        if audio["num_channels"] != 2:
            # MSST's inverse STFT reshapes to two channels whatever this says.
            raise NotImplementedError(
                f"MDX23C audio.num_channels {audio['num_channels']}: MSST's model runs stereo only"
            )
        self.instruments = _target_stems(config["training"])
        self.num_subbands = int(model["num_subbands"])
        self.audio_channels = int(audio["num_channels"])
        self.n_fft = int(audio["n_fft"])
        self.hop_length = int(audio["hop_length"])
        self.dim_f = int(audio["dim_f"])
        self.num_scales = int(model["num_scales"])
        self.scale = tuple(int(step) for step in model["scale"])

        layers = _Layers(model["norm"], model["act"])
        # Each sub-band's re/im of each channel is an input channel of the U-Net.
        spec_channels = self.num_subbands * self.audio_channels * 2
        channels = int(model["num_channels"])
        growth = int(model["growth"])
        per_scale = int(model["num_blocks_per_scale"])
        bottleneck = int(model["bottleneck_factor"])
        freq = self.dim_f // self.num_subbands
        if self.dim_f % self.num_subbands or freq % self.scale[1] ** self.num_scales:
            raise ValueError(
                f"MDX23C audio.dim_f {self.dim_f} must split into {self.num_subbands} sub-bands "
                f"that halve cleanly {self.num_scales} times by {self.scale[1]}"
            )

        self.first_conv = nn.Conv2d(spec_channels, channels, 1, 1, 0, bias=False)

        self.encoder_blocks = nn.ModuleList()
        for _ in range(self.num_scales):
            down = nn.Conv2d(channels, channels + growth, self.scale, self.scale, bias=False)
            self.encoder_blocks.append(
                _EncoderLevel(
                    _TfcTdf(channels, channels, per_scale, freq, bottleneck, layers),
                    _Rescale(down, channels, layers),
                )
            )
            channels += growth
            freq //= self.scale[1]

        self.bottleneck_block = _TfcTdf(channels, channels, per_scale, freq, bottleneck, layers)

        self.decoder_blocks = nn.ModuleList()
        for _ in range(self.num_scales):
            up = nn.ConvTranspose2d(channels, channels - growth, self.scale, self.scale, bias=False)
            upscale = _Rescale(up, channels, layers)
            channels -= growth
            freq *= self.scale[1]
            # The input is the upscaled path and the encoder's skip side by side.
            self.decoder_blocks.append(
                _DecoderLevel(
                    upscale, _TfcTdf(2 * channels, channels, per_scale, freq, bottleneck, layers)
                )
            )

        self.final_conv = nn.Sequential(
            nn.Conv2d(channels + spec_channels, channels, 1, 1, 0, bias=False),
            layers.act(),
            nn.Conv2d(channels, len(self.instruments) * spec_channels, 1, 1, 0, bias=False),
        )

    def _window(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.hann_window(self.n_fft, periodic=True, device=device, dtype=dtype)

    def _spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, C, L)`` to ``(B, C * 2, dim_f, T)``: re and im of channel 0, then channel 1."""
        batch, channels, length = audio.shape
        spec = torch.stft(
            audio.reshape(-1, length),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self._window(audio.device, torch.float32),
            center=True,
            return_complex=True,
        )
        spec = torch.view_as_real(spec).permute(0, 3, 1, 2)
        return spec.reshape(batch, channels * 2, *spec.shape[-2:])[:, :, : self.dim_f]

    def _waveform(self, spec: torch.Tensor) -> torch.Tensor:
        """``(B, S, C * 2, dim_f, T)`` to ``(B, S, C, samples)``; bins above dim_f are zero."""
        batch, stems, _, freq, frames = spec.shape
        # MSST concatenates float32 zeros here, which also lifts half precision to float32.
        dtype = torch.promote_types(spec.dtype, torch.float32)
        full = spec.new_zeros(batch, stems, spec.shape[2], self.n_fft // 2 + 1, frames, dtype=dtype)
        full[..., :freq, :] = spec
        pairs = full.reshape(-1, 2, full.shape[-2], frames)
        waves = torch.istft(
            make_one_sided_(torch.complex(pairs[:, 0], pairs[:, 1]), self.n_fft),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self._window(spec.device, dtype),
            center=True,
        )
        return waves.reshape(batch, stems, self.audio_channels, -1)

    def _split_subbands(self, spec: torch.Tensor) -> torch.Tensor:
        """Cut the frequency axis into ``num_subbands`` equal bands, stacked as channels."""
        batch, channels, freq, frames = spec.shape
        return spec.reshape(batch, channels * self.num_subbands, freq // self.num_subbands, frames)

    def _join_subbands(self, spec: torch.Tensor) -> torch.Tensor:
        batch, channels, freq, frames = spec.shape
        return spec.reshape(batch, channels // self.num_subbands, freq * self.num_subbands, frames)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, 2, L)`` audio to ``(B, stems, 2, hop_length * (L // hop_length))`` estimates."""
        frames = audio.shape[-1] // self.hop_length + 1
        if frames % self.scale[0] ** self.num_scales:
            raise ValueError(
                f"MDX23C needs a frame count divisible by {self.scale[0] ** self.num_scales}; "
                f"{audio.shape[-1]} samples give {frames} (use the config's chunk_size)"
            )
        mix = self._split_subbands(self._spectrogram(audio))
        first = self.first_conv(mix)

        # The U-Net runs on (B, C, T, F): the TDF layers are Linear over the last axis.
        hidden = first.transpose(-1, -2)
        skips = []
        for level in self.encoder_blocks:
            hidden = level.tfc_tdf(hidden)
            skips.append(hidden)
            hidden = level.downscale(hidden)
        hidden = self.bottleneck_block(hidden)
        for level in self.decoder_blocks:
            hidden = level.tfc_tdf(torch.cat([level.upscale(hidden), skips.pop()], dim=1))
        # Gating by the first conv's output is MSST's artefact reduction.
        hidden = hidden.transpose(-1, -2) * first

        out = self._join_subbands(self.final_conv(torch.cat([mix, hidden], dim=1)))
        batch, _, freq, frames = out.shape
        return self._waveform(out.reshape(batch, len(self.instruments), -1, freq, frames))
