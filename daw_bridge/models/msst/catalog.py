"""Public MSST checkpoints daw-bridge knows by name: where they are, what they are.

Each entry names the published checkpoint (URL; size and SHA-256 where someone
published them), the YAML config it was published with (shipped in
``configs/`` where it is one of MSST's repository configs, else downloaded),
its stems and sample rate, the quality numbers as published with their ruler,
and the licence as its author states it. Rulers are never mixed:

- ``MUSDB18-HQ test, MSST SDR``: MSST's own metric, the SDR of each whole track
  averaged over the test songs (not museval's cSDR, the median over 1 s frames,
  which the Demucs numbers in the README use).
- ``Multisong, MSST table``: MSST's ``pretrained_models.md``, measured on MVSEP's
  Multisong dataset.
- ``DrumSep test, MSST table``: the drum-kit models' rows of MSST's
  ``pretrained_models.md``, measured on the DrumSep test set (per piece, no average).
- The authors' validation SDR written in a checkpoint's file name (``sdr_10.8059``):
  their own validation set, comparable with nothing else.

Facts were gathered from the authors' pages on 2026-11-27; "mirror" marks a
SHA-256 and size read from a Hugging Face mirror's copy, not from the author.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from daw_bridge.errors import ModelUnavailableError
from daw_bridge.models.catalog import OFFICIAL_HUB_URL, Download, hub_url

_MSST = "https://github.com/ZFTurbo/Music-Source-Separation-Training/releases/download/"
_UVR = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
_JARREDOU = "https://github.com/jarredou/models/releases/download/aufr33-jarredou_MDX23C_DrumSep_model_v0.1/"
MUSDB = "MUSDB18-HQ test, MSST SDR"
MULTISONG = "Multisong, MSST table"
DRUMSEP = "DrumSep test, MSST table"
DRUMSEP_MDX = "the authors' validation SDR, in the checkpoint's name"
NO_LICENCE = "no licence stated by the author"
MSST_WEIGHTS = "no licence stated for the weights (MSST's code is MIT)"


@dataclass(frozen=True)
class Score:
    """One published number and the ruler it was measured with."""

    ruler: str
    stem: str
    sdr: float


@dataclass(frozen=True)
class MsstModel:
    name: str
    model_type: str
    checkpoint: Download
    #: One of MSST's repository configs shipped in ``configs/``, or a URL to download.
    config: str
    stems: tuple[str, ...]
    author: str
    licence: str
    scores: tuple[Score, ...] = ()
    samplerate: int = 44100
    description: str = ""

    def checkpoint_download(self) -> Download:
        """The checkpoint to download; one on the Hugging Face hub from the mirror in
        ``$HF_ENDPOINT`` where that is set (same file, same checks)."""
        return _mirrored(self.checkpoint)

    def config_download(self) -> Download | None:
        """The config to download, where it is not one shipped here."""
        if not self.config.startswith("https://"):
            return None
        return _mirrored(Download(self.config.rsplit("/", 1)[1], self.config, None, ""))

    def shipped_config(self) -> Path | None:
        if self.config.startswith("https://"):
            return None
        return Path(str(resources.files("daw_bridge.models.msst.configs") / self.config))


def _mirrored(source: Download) -> Download:
    if not source.url.startswith(OFFICIAL_HUB_URL):
        return source
    return replace(source, url=hub_url() + source.url.removeprefix(OFFICIAL_HUB_URL))


def _ckpt(url: str, size: int | None = None, sha256: str = "") -> Download:
    return Download(url.rsplit("/", 1)[1], url, size, sha256)


MSST_MODELS: dict[str, MsstModel] = {
    model.name: model
    for model in (
        MsstModel(
            name="bs_roformer_vocals",
            model_type="bs_roformer",
            checkpoint=_ckpt(
                _UVR + "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
                639_331_213,  # mirror
                "5b84f37e8d444c8cb30c79d77f613a41c05868ff9c9ac6c7049c00aefae115aa",
            ),
            config="model_bs_roformer_ep_317_sdr_12.9755.yaml",
            stems=("vocals", "other"),
            author="viperx",
            licence=NO_LICENCE,
            scores=(Score(MULTISONG, "vocals", 10.87),),
            description="BS-RoFormer vocals (viperx, ep 317): vocals and the rest.",
        ),
        MsstModel(
            name="mel_roformer_vocals_kj",
            model_type="mel_band_roformer",
            checkpoint=_ckpt(
                "https://huggingface.co/KimberleyJSN/melbandroformer/resolve/main/"
                "MelBandRoformer.ckpt",
                913_106_900,  # mirror; the author's page shows the SHA-256 and "913 MB"
                "87201f4d31afb5bc79993230fc49446918425574db48c01c405e44f365c7559e",
            ),
            config="config_vocals_mel_band_roformer_kj.yaml",
            stems=("vocals", "other"),
            author="Kimberley Jensen",
            licence="unknown (as the Hugging Face model card stated; check the live card)",
            scores=(Score(MULTISONG, "vocals", 10.98),),
            description="Mel-Band RoFormer vocals (Kimberley Jensen): vocals and the rest.",
        ),
        MsstModel(
            name="mel_roformer_vocals_viperx",
            model_type="mel_band_roformer",
            checkpoint=_ckpt(
                _UVR + "model_mel_band_roformer_ep_3005_sdr_11.4360.ckpt",
                1_007_816_988,  # mirror
                "21b9d0958e35b8ebfbe2afe69bbd5444e5ffe2f5d80ae0d583b833d2f3c0d139",
            ),
            config="model_mel_band_roformer_ep_3005_sdr_11.4360.yaml",
            stems=("vocals", "other"),
            author="viperx",
            licence=NO_LICENCE,
            scores=(Score(MULTISONG, "vocals", 9.67),),
            description="Mel-Band RoFormer vocals (viperx, ep 3005).",
        ),
        MsstModel(
            name="bs_roformer_4stem",
            model_type="bs_roformer",
            checkpoint=_ckpt(_MSST + "v1.0.12/model_bs_roformer_ep_17_sdr_9.6568.ckpt"),
            # A release asset, not one of the repository's configs.
            config=_MSST + "v1.0.12/config_bs_roformer_384_8_2_485100.yaml",
            stems=("drums", "bass", "other", "vocals"),
            author="ZFTurbo",
            licence=MSST_WEIGHTS,
            scores=(
                Score(MUSDB, "average", 9.65),
                Score(MUSDB, "vocals", 11.08),
                Score(MULTISONG, "average", 9.38),
            ),
            description="BS-RoFormer 4 stems trained on MUSDB18-HQ only (ZFTurbo, ep 17).",
        ),
        MsstModel(
            name="scnet",
            model_type="scnet",
            checkpoint=_ckpt(
                _MSST + "v.1.0.6/scnet_checkpoint_musdb18.ckpt",
                None,
                "1bc0d1abb20bfdf966dcd07637bafd03e4bc13653d09ef18bc9b3e342eafe2aa",  # mirror
            ),
            config="config_musdb18_scnet.yaml",
            stems=("drums", "bass", "other", "vocals"),
            author="starrytong (SCNet's author)",
            licence="MIT (starrytong, SCNet issue #35, 2026-07-17)",
            scores=(Score(MUSDB, "average", 9.03), Score(MULTISONG, "average", 8.87)),
            description="SCNet 4 stems, 10 M parameters (starrytong).",
        ),
        MsstModel(
            name="scnet_large",
            model_type="scnet",
            checkpoint=_ckpt(
                _MSST + "v1.0.8/model_scnet_sdr_9.3244.ckpt",
                168_868_194,  # mirror
                "fe550315a76e8f4aed8475d7d5952137504a3b6c63b3adcef2443bfe73aac540",
            ),
            config="config_musdb18_scnet_large.yaml",
            stems=("drums", "bass", "other", "vocals"),
            author="ZFTurbo",
            licence=MSST_WEIGHTS,
            scores=(Score(MUSDB, "average", 9.32), Score(MULTISONG, "average", 9.19)),
            description="SCNet-large 4 stems (trained by ZFTurbo).",
        ),
        MsstModel(
            name="mdx23c_vocals",
            model_type="mdx23c",
            checkpoint=_ckpt(_MSST + "v1.0.0/model_vocals_mdx23c_sdr_10.17.ckpt"),
            config="config_vocals_mdx23c.yaml",
            stems=("vocals", "other"),
            author="ZFTurbo",
            licence=MSST_WEIGHTS,
            scores=(Score(MULTISONG, "vocals", 10.17),),
            description="MDX23C (TFC-TDF v3) vocals and the rest.",
        ),
        MsstModel(
            name="mdx23c_4stem",
            model_type="mdx23c",
            checkpoint=_ckpt(_MSST + "v1.0.1/model_mdx23c_ep_168_sdr_7.0207.ckpt"),
            config="config_musdb18_mdx23c.yaml",
            stems=("vocals", "bass", "drums", "other"),
            author="ZFTurbo",
            licence=MSST_WEIGHTS,
            scores=(Score(MUSDB, "average", 7.15), Score(MULTISONG, "average", 7.02)),
            description="MDX23C 4 stems (ZFTurbo, ep 168).",
        ),
        MsstModel(
            name="drumsep",
            model_type="htdemucs",  # MSST's Demucs family; the config says 'model: hdemucs'
            # A Demucs package (demucs's serialize_model); size and SHA-256 not published.
            checkpoint=_ckpt(_MSST + "v1.0.5/model_drumsep.th"),
            config="config_drumsep.yaml",
            stems=("kick", "snare", "cymbals", "toms"),
            author="Iñaki Goyeneche (inagoy/drumsep)",
            licence="no licence stated for the weights (the drumsep code is MIT)",
            scores=(
                Score(DRUMSEP, "kick", 10.52),
                Score(DRUMSEP, "snare", 6.05),
                Score(DRUMSEP, "toms", 4.68),
                Score(DRUMSEP, "cymbals", 5.03),  # the table's "hh-cymbals"
            ),
            description="HDemucs drum kit into kick, snare, cymbals and toms (drumsep).",
        ),
        MsstModel(
            name="drumsep_mdx23c",
            model_type="mdx23c",
            checkpoint=_ckpt(
                _JARREDOU + "aufr33-jarredou_DrumSep_model_mdx23c_ep_141_sdr_10.8059.ckpt"
            ),
            # Published with the checkpoint; not among MSST's repository configs.
            config=_JARREDOU + "aufr33-jarredou_DrumSep_model_mdx23c_ep_141_sdr_10.8059.yaml",
            stems=("kick", "snare", "toms", "hh", "ride", "crash"),
            author="aufr33 and jarredou",
            licence=(
                "not stated on the release page; a community report says the authors' "
                "earlier page named CC BY-NC-SA 4.0 (non-commercial): check before "
                "commercial use"
            ),
            scores=(Score(DRUMSEP_MDX, "average", 10.81),),
            description="MDX23C drum kit into kick, snare, toms, hi-hat, ride and crash.",
        ),
    )
}


def get_msst_model(name: str) -> MsstModel:
    try:
        return MSST_MODELS[name]
    except KeyError:
        known = ", ".join(MSST_MODELS)
        raise ModelUnavailableError(
            f"Unknown MSST model {name!r}. Known: {known}.", f"Use one of: {known}."
        ) from None
