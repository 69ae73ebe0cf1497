"""Mel-Band RoFormer (Wang et al., arXiv:2310.01809) as MSST builds it: same constructor
keywords (a public config's ``model:`` section), same ``state_dict`` names and shapes,
same output. Inference only."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import librosa
import torch
from torch import Tensor, nn

from daw_bridge.models.msst.roformer import (
    BandSplit,
    MaskEstimator,
    SpectrogramCodec,
    as_batch_channels_samples,
    build_axial_layers,
    check_inference_options,
    complex_mask,
    interleave_channels,
    masked_to_audio,
    run_axial_layers,
)


def mel_band_membership(sample_rate: int, n_fft: int, num_bands: int) -> Tensor:
    """(bands, bins) booleans: which STFT bins each band covers. The bands are the nonzero
    supports of librosa's mel filters (overlapping neighbours), as in MSST, which also
    forces the first bin into the first band and the last bin into the last band."""
    filters = torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=num_bands))
    filters[0, 0] = 1.0
    filters[-1, -1] = 1.0
    membership = filters > 0
    if not membership.any(dim=0).all():
        raise ValueError(
            f"{num_bands} mel bands at {sample_rate} Hz leave some of the {n_fft}-point "
            "STFT bins uncovered"
        )
    return membership


class MelBandRoformer(nn.Module):
    """Stereo or mono mixture -> one complex STFT mask per stem, estimated per
    (overlapping) mel band by transformers that alternate over time and over bands; where
    bands overlap, their mask values are averaged.

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
        num_bands: int = 60,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.1,
        ff_dropout: float = 0.1,
        flash_attn: bool = True,
        dim_freqs_in: int = 1025,
        sample_rate: int = 44100,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        stft_window_fn: Callable[..., Tensor] | None = None,
        zero_dc: bool = True,
        mask_estimator_depth: int = 1,
        multi_stft_resolution_loss_weight: float = 1.0,
        multi_stft_resolutions_window_sizes: Sequence[int] = (4096, 2048, 1024, 512, 256),
        multi_stft_hop_size: int = 147,
        multi_stft_normalized: bool = False,
        multi_stft_window_fn: Callable[..., Tensor] = torch.hann_window,
        match_input_audio_length: bool = False,
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
        self.match_input_audio_length = match_input_audio_length

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
            norm_output=True,  # Mel-Band RoFormer normalises after every transformer
        )

        self.codec = SpectrogramCodec(
            stft_n_fft, stft_hop_length, stft_win_length, stft_normalized, window_fn
        )
        membership = mel_band_membership(sample_rate, stft_n_fft, num_bands)
        channels = self.audio_channels
        # Rows of the (bin, channel)-interleaved spectrum that each band reads, band after
        # band (overlapping bins repeat), and how many bands read each row.
        bins = torch.arange(self.codec.num_freqs, device="cpu").expand_as(membership)
        band_bins = bins[membership]
        band_rows = (band_bins[:, None] * channels + torch.arange(channels, device="cpu")).flatten()
        bands_per_row = membership.sum(dim=0).repeat_interleave(channels)
        self.register_buffer("band_rows", band_rows, persistent=False)
        self.register_buffer("bands_per_row", bands_per_row.float()[:, None], persistent=False)

        bins_per_band = membership.sum(dim=1).tolist()
        band_widths = tuple(2 * count * channels for count in bins_per_band)
        self.band_split = BandSplit(dim, band_widths)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(
                dim,
                band_widths,
                hidden_layers=max(mask_estimator_depth, 0),
                mlp_expansion_factor=mlp_expansion_factor,
            )
            for _ in range(num_stems)
        )

    def forward(self, mix: Tensor) -> Tensor:
        """(batch, channels, samples) or mono (batch, samples) -> separated stems
        (batch, num_stems, channels, samples); for a one-stem model (batch, channels,
        samples), as MSST returns. As in MSST, the output holds (frames - 1) * hop samples
        (the input length rounded down to whole hops) unless ``match_input_audio_length``."""
        mix = as_batch_channels_samples(mix, self.audio_channels)
        batch, channels, samples = mix.shape
        spectrum = interleave_channels(self.codec.stft(mix))
        frames = spectrum.shape[2]
        features = spectrum[:, self.band_rows].transpose(1, 2).reshape(batch, frames, -1)

        x = self.band_split(features)
        x = run_axial_layers(self.layers, x, self.skip_connection)

        masks = torch.stack([estimator(x) for estimator in self.mask_estimators], dim=1)
        masks = complex_mask(masks, spectrum.dtype)
        spectrum = torch.view_as_complex(spectrum).unsqueeze(1)
        summed = torch.zeros(
            (batch, masks.shape[1], *spectrum.shape[2:]), dtype=spectrum.dtype, device=mix.device
        )
        summed.index_add_(2, self.band_rows, masks)
        masked = spectrum * (summed / self.bands_per_row)

        length = samples if self.match_input_audio_length else None
        audio = masked_to_audio(self.codec, masked, channels, self.zero_dc, length=length)
        return audio.squeeze(1) if audio.shape[1] == 1 else audio
