"""BS-RoFormer (band-split RoPE transformer, Lu et al., arXiv:2309.02612) as MSST builds it:
same constructor keywords (a public config's ``model:`` section), same ``state_dict``
names and shapes, same output. Inference only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from daw_bridge.models.msst.roformer import (
    BandSplit,
    MaskEstimator,
    RMSNorm,
    SpectrogramCodec,
    as_batch_channels_samples,
    build_axial_layers,
    check_inference_options,
    complex_mask,
    interleave_channels,
    masked_to_audio,
    run_axial_layers,
)

# MSST's default band layout for a 2048-point STFT (1025 bins in 62 bands).
DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)


class BSRoformer(nn.Module):
    """Stereo or mono mixture -> one complex STFT mask per stem, estimated per band of
    fixed frequency bins by transformers that alternate over time and over bands.

    Options that only matter for training are accepted so that public configs load:
    ``attn_dropout``/``ff_dropout`` (inactive in eval mode), the ``multi_stft_*`` loss
    settings and ``use_torch_checkpoint`` (memory saving for backprop) change nothing
    here; ``dim_freqs_in`` is unused in MSST as well. ``flash_attn`` chooses nothing:
    attention always runs through ``scaled_dot_product_attention`` (MSST's non-flash
    path computes the same softmax attention explicitly).
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        stereo: bool = False,
        num_stems: int = 1,
        time_transformer_depth: int = 2,
        freq_transformer_depth: int = 2,
        linear_transformer_depth: int = 0,
        freqs_per_bands: Sequence[int] = DEFAULT_FREQS_PER_BANDS,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        flash_attn: bool = True,
        dim_freqs_in: int = 1025,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        stft_window_fn: Callable[..., Tensor] | None = None,
        zero_dc: bool = True,
        mask_estimator_depth: int = 2,
        multi_stft_resolution_loss_weight: float = 1.0,
        multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
        multi_stft_hop_size: int = 147,
        multi_stft_normalized: bool = False,
        multi_stft_window_fn: Callable[..., Tensor] = torch.hann_window,
        mlp_expansion_factor: int = 4,
        use_torch_checkpoint: bool = False,
        skip_connection: bool = False,
        use_pope: bool = False,
    ) -> None:
        super().__init__()
        window_fn = check_inference_options(use_pope=use_pope, stft_window_fn=stft_window_fn)
        self.stereo = stereo
        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.skip_connection = skip_connection
        self.zero_dc = zero_dc

        self.layers = build_axial_layers(
            dim=dim,
            depth=depth,
            heads=heads,
            dim_head=dim_head,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            time_transformer_depth=time_transformer_depth,
            freq_transformer_depth=freq_transformer_depth,
            linear_transformer_depth=linear_transformer_depth,
            norm_output=False,  # BS-RoFormer normalises once, after all blocks
        )
        self.final_norm = RMSNorm(dim)

        self.codec = SpectrogramCodec(
            stft_n_fft, stft_hop_length, stft_win_length, stft_normalized, window_fn
        )
        freqs_per_bands = tuple(freqs_per_bands)
        if len(freqs_per_bands) < 2 or sum(freqs_per_bands) != self.codec.num_freqs:
            raise ValueError(
                f"freqs_per_bands must split the {self.codec.num_freqs} STFT bins into at "
                f"least 2 bands, got {len(freqs_per_bands)} bands of {sum(freqs_per_bands)}"
            )
        # Each band's input: its bins x audio channels x (real, imaginary).
        band_widths = tuple(2 * bins * self.audio_channels for bins in freqs_per_bands)
        self.band_split = BandSplit(dim, band_widths)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(
                dim,
                band_widths,
                hidden_layers=max(mask_estimator_depth - 1, 0),
                mlp_expansion_factor=mlp_expansion_factor,
            )
            for _ in range(num_stems)
        )

    def forward(self, mix: Tensor) -> Tensor:
        """(batch, channels, samples) or mono (batch, samples) -> separated stems
        (batch, num_stems, channels, samples); the stem axis stays for one stem too."""
        mix = as_batch_channels_samples(mix, self.audio_channels)
        batch, channels, samples = mix.shape
        spectrum = interleave_channels(self.codec.stft(mix))
        frames = spectrum.shape[2]
        features = spectrum.transpose(1, 2).reshape(batch, frames, -1)

        x = self.band_split(features)
        x = run_axial_layers(self.layers, x, self.skip_connection)
        x = self.final_norm(x)

        masks = torch.stack([estimator(x) for estimator in self.mask_estimators], dim=1)
        masks = complex_mask(masks, spectrum.dtype)
        masked = torch.view_as_complex(spectrum).unsqueeze(1) * masks
        return masked_to_audio(self.codec, masked, channels, self.zero_dc, length=samples)
