"""Our chunked inference gives what MSST's ``demix`` gives, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from daw_bridge.errors import CancelledError, ModelOutputError
from daw_bridge.models.msst.demix import Chunking, demix, demix_stream, fade_window
from tests.models.msst.conftest import reference_config

reference = pytest.importorskip(
    "msst.utils.model_utils",
    reason="the MSST reference: pip install --no-deps msst==0.1.0 (see README, Tests)",
)


class PositionSensitive(torch.nn.Module):
    """Output depends on every input sample and its place in the chunk, so any
    difference in chunking, padding or weighting shows; ``stems`` outputs, or a
    squeezed single stem as one-stem MSST models return."""

    def __init__(self, stems: int, squeeze: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(2, 2 * stems, kernel_size=9, padding=4)
        self.stems, self.squeeze = stems, squeeze

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0.5, 1.5, mix.shape[-1])
        out = torch.tanh(self.conv(mix)) * ramp + mix.repeat(1, self.stems, 1) * 0.1
        out = out.reshape(mix.shape[0], self.stems, 2, mix.shape[-1])
        return out[:, 0] if self.squeeze and self.stems == 1 else out


def msst_config(chunk: int, overlap: int, batch: int, instruments: list[str], target=None):
    training = {"instruments": instruments, "use_amp": True}
    if target:
        training["target_instrument"] = target
    return reference_config(
        {
            "audio": {"chunk_size": chunk, "num_channels": 2},
            "inference": {"num_overlap": overlap, "batch_size": batch},
            "training": training,
        }
    )


def ours_and_theirs(model, mix, chunk, overlap, batch, instruments, target=None):
    config = msst_config(chunk, overlap, batch, instruments, target)
    theirs = reference.demix(config, model, mix, "cpu", "mdx23c")
    theirs = np.stack([theirs[name] for name in ([target] if target else instruments)])
    index = instruments.index(target) if target else None
    stems = 1 if target else len(instruments)
    ours = demix(
        model,
        mix,
        Chunking(chunk, overlap, batch),
        stems,
        target_index=index,
        configured_stems=len(instruments),
    )
    return ours, theirs


@pytest.mark.parametrize(
    ("frames", "chunk", "overlap", "batch"),
    [
        (10_000, 1000, 4, 1),  # padded, many chunks, one per batch
        (10_000, 1000, 4, 3),  # batches: fades decided per batch, as MSST does
        (10_000, 1000, 2, 4),
        (7_777, 1000, 4, 2),  # a short last chunk, reflect-padded (over half a chunk)
        (7_300, 1000, 4, 8),  # a short last chunk, zero-padded (under half)
        (1_200, 1000, 4, 2),  # too short to pad: not reflect-padded at all
        (600, 1000, 4, 1),  # shorter than one chunk
        (4_000, 1000, 1, 2),  # no overlap: border 0
    ],
)
def test_stems_equal_msst_demix_for_every_chunking(frames, chunk, overlap, batch):
    mix = np.random.default_rng(frames).standard_normal((2, frames)).astype(np.float32)
    ours, theirs = ours_and_theirs(
        PositionSensitive(4), mix, chunk, overlap, batch, ["drums", "bass", "other", "vocals"]
    )
    assert ours.shape == theirs.shape == (4, 2, frames)
    np.testing.assert_array_equal(ours, theirs)


def test_mono_in_gives_mono_out_as_msst():
    mix = np.random.default_rng(1).standard_normal((1, 5_000)).astype(np.float32)
    ours, theirs = ours_and_theirs(PositionSensitive(2), mix, 1000, 4, 2, ["vocals", "other"])
    assert ours.shape == (2, 1, 5_000)
    np.testing.assert_array_equal(ours, theirs)


def test_a_one_stem_model_that_squeezes_its_output_and_a_target_instrument():
    mix = np.random.default_rng(2).standard_normal((2, 5_000)).astype(np.float32)
    model = PositionSensitive(1, squeeze=True)
    ours, theirs = ours_and_theirs(model, mix, 1000, 2, 4, ["vocals", "other"], "vocals")
    assert ours.shape == (1, 2, 5_000)
    np.testing.assert_array_equal(ours, theirs)


def test_a_target_instrument_of_a_model_with_every_head_keeps_only_that_stem():
    mix = np.random.default_rng(3).standard_normal((2, 4_000)).astype(np.float32)
    model = PositionSensitive(2)
    ours, theirs = ours_and_theirs(model, mix, 1000, 4, 1, ["vocals", "other"], "other")
    np.testing.assert_array_equal(ours, theirs)


def test_the_window_fades_linearly_over_a_tenth_of_a_chunk():
    window = fade_window(10, 3)
    assert window.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]


def test_progress_rises_to_one_and_cancel_stops_between_batches():
    mix = np.zeros((2, 10_000), dtype=np.float32)
    seen: list[float] = []
    demix(PositionSensitive(1), mix, Chunking(1000, 4, 2), 1, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 5
    calls = []
    with pytest.raises(CancelledError):
        demix(
            PositionSensitive(1),
            mix,
            Chunking(1000, 4, 2),
            1,
            should_cancel=lambda: calls.append(1) or len(calls) > 2,
        )
    assert len(calls) == 3


class OverflowsInHalfPrecision(PositionSensitive):
    """As a network whose activations outgrow float16: NaN under autocast, fine in float32."""

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        out = super().forward(mix)
        return out * float("nan") if torch.is_autocast_enabled("cpu") else out


def test_an_overflow_in_mixed_precision_is_recomputed_in_float32_loudly(caplog):
    # MSST's demix turns the NaN into 0: silent stems. Here the batch costs a float32 pass.
    mix = np.random.default_rng(0).standard_normal((2, 10_000)).astype(np.float32)
    chunking = Chunking(1000, 4, 2)
    float32 = demix(PositionSensitive(2), mix, chunking, 2)
    with caplog.at_level("WARNING"):
        recovered = demix(OverflowsInHalfPrecision(2), mix, chunking, 2, autocast=torch.bfloat16)
    assert np.array_equal(recovered, float32)
    assert "overflowed" in caplog.text and "float32" in caplog.text


def test_not_a_number_in_float32_is_an_error_not_silence():
    class Damaged(PositionSensitive):
        def forward(self, mix: torch.Tensor) -> torch.Tensor:
            return super().forward(mix) * float("nan")

    mix = np.ones((2, 5000), dtype=np.float32)
    with pytest.raises(ModelOutputError, match="damaged"):
        demix(Damaged(2), mix, Chunking(1000, 4, 2), 2)


def test_chunkings_msst_refuses_are_refused():
    with pytest.raises(ValueError):
        Chunking(100, 200, 1)  # more overlaps than samples: a zero step
    with pytest.raises(ValueError):
        Chunking(100, 4, 0)


def in_blocks(mix: np.ndarray, sizes: list[int]):
    """The mix cut at the given block sizes (cycled), as a file reader hands it out."""
    at, index = 0, 0
    while at < mix.shape[-1]:
        size = sizes[index % len(sizes)]
        yield mix[:, at : at + size]
        at, index = at + size, index + 1


@pytest.mark.parametrize(
    ("frames", "chunking", "sizes"),
    [
        (10_000, Chunking(1000, 4, 3), [1]),  # sample by sample: the mirrored head waits
        (10_000, Chunking(1000, 4, 3), [777, 5, 4096]),
        (7_777, Chunking(1000, 4, 2), [1500]),  # a reflect-padded short last chunk
        (7_300, Chunking(1000, 4, 8), [333]),
        (1_200, Chunking(1000, 4, 2), [100]),  # too short to pad
        (4_000, Chunking(1000, 1, 2), [999]),  # no overlap
        (9_000, Chunking(1000, 3, 2, mode="demucs"), [640, 2]),  # MSST's demucs mode
    ],
)
def test_a_mix_in_blocks_gives_the_whole_mix_stems_bit_for_bit(frames, chunking, sizes):
    mix = np.random.default_rng(frames).standard_normal((2, frames)).astype(np.float32)
    whole = demix(PositionSensitive(2), mix, chunking, 2)
    parts = list(demix_stream(PositionSensitive(2), in_blocks(mix, sizes), frames, chunking, 2))
    np.testing.assert_array_equal(np.concatenate(parts, axis=-1), whole)


def test_a_mono_mix_in_blocks_comes_back_mono():
    mix = np.random.default_rng(4).standard_normal((1, 6_000)).astype(np.float32)
    chunking = Chunking(1000, 4, 2)
    parts = list(demix_stream(PositionSensitive(2), in_blocks(mix, [700]), 6_000, chunking, 2))
    assert all(part.shape[:2] == (2, 1) for part in parts)
    np.testing.assert_array_equal(
        np.concatenate(parts, axis=-1), demix(PositionSensitive(2), mix, chunking, 2)
    )


def test_stems_come_out_while_the_mix_is_still_being_read():
    """Memory stays bounded: when a block of stems comes out, the reader is at most a
    batch of chunks ahead of it."""
    chunking = Chunking(1000, 4, 2)
    frames, read = 200_000, [0]
    mix = np.random.default_rng(5).standard_normal((2, frames)).astype(np.float32)

    def reader():
        for block in in_blocks(mix, [500]):
            read[0] += block.shape[-1]
            yield block

    written = 0
    for part in demix_stream(PositionSensitive(1), reader(), frames, chunking, 1):
        written += part.shape[-1]
        assert read[0] - written <= chunking.batch_size * chunking.step + 2 * chunking.chunk_size
    assert written == frames


def test_a_mix_shorter_or_longer_than_announced_is_an_error():
    mix = np.zeros((2, 5_000), np.float32)
    with pytest.raises(ValueError, match="not the 6000 announced"):
        list(demix_stream(PositionSensitive(1), [mix], 6_000, Chunking(1000, 4, 2), 1))
    with pytest.raises(ValueError, match="more than the 4000"):
        list(demix_stream(PositionSensitive(1), [mix], 4_000, Chunking(1000, 4, 2), 1))
