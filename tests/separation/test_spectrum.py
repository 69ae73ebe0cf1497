"""A network's spectrum is made a real signal's before the inverse STFT: the result is
then the same whichever FFT algorithm, device or batch computes it."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from demucs.demucs import Demucs

from daw_bridge.separation.spectrum import give_one_sided_spectra, make_one_sided_
from tests.conftest import tiny_hdemucs, tiny_htdemucs, watch_istft

#: A second of stereo noise, a demucs model's input.
MIX = 0.1 * torch.randn(1, 2, 44100, generator=torch.Generator().manual_seed(0))


def network_like_spectrum(rows: int, n_fft: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Complex values in every bin, imaginary parts at 0 Hz and Nyquist included."""
    generator = torch.Generator().manual_seed(seed)
    shape = (rows, n_fft // 2 + 1, frames)
    real, imag = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    return torch.complex(real, imag)


def hermitian_extension(half: np.ndarray, n_fft: int) -> np.ndarray:
    """The full spectrum (..., n_fft) a one-sided one (..., n_fft // 2 + 1) stands for."""
    mirrored = np.conj(half[..., 1 : (n_fft + 1) // 2][..., ::-1])
    return np.concatenate([half, mirrored], axis=-1)


@pytest.mark.parametrize("n_fft", [1024, 2048, 4096])
def test_the_cpus_inverse_stft_is_unchanged_bit_for_bit(n_fft):
    raw = network_like_spectrum(6, n_fft, 9)
    options = dict(n_fft=n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft))
    before = torch.istft(raw, **options)
    after = torch.istft(make_one_sided_(raw.clone(), n_fft), **options)
    assert torch.equal(after, before)


def test_only_the_imaginary_parts_of_0_hz_and_nyquist_change():
    raw = network_like_spectrum(3, 16, 5)
    fixed = make_one_sided_(raw.clone(), 16)
    assert torch.equal(fixed.real, raw.real)
    assert torch.equal(fixed.imag[:, 1:8], raw.imag[:, 1:8])
    assert not fixed.imag[:, [0, 8]].any()
    assert raw.imag[:, [0, 8]].all()


def test_an_odd_fft_size_has_no_nyquist_bin_to_change():
    raw = network_like_spectrum(3, 15, 5)  # 8 bins, the last one a true complex pair
    fixed = make_one_sided_(raw.clone(), 15)
    assert torch.equal(fixed.imag[:, 1:], raw.imag[:, 1:])
    assert not fixed.imag[:, 0].any()


def test_a_spectrum_without_its_nyquist_bin_keeps_its_top_bin():
    """HTDemucs drops the Nyquist bin and pads it back as zero inside its iSTFT."""
    raw = network_like_spectrum(2, 16, 4)[:, :8].clone()
    fixed = make_one_sided_(raw, 16)
    assert torch.equal(fixed.imag[:, 1:], raw.imag[:, 1:]) and not fixed.imag[:, 0].any()


def test_a_real_tensor_is_refused():
    with pytest.raises(TypeError, match="complex"):
        make_one_sided_(torch.zeros(2, 9, 3), 16)


@pytest.mark.parametrize("network", [tiny_htdemucs, tiny_hdemucs])
def test_a_demucs_model_gives_its_istft_one_sided_spectra_and_the_same_audio(monkeypatch, network):
    """demucs's own forward, its ``_ispec`` wrapped: on the CPU the stems stay the same
    bit for bit."""
    largest = watch_istft(monkeypatch)
    with torch.inference_mode():
        plain = network(seed=1)(MIX)
        assert max(largest) > 1e-4  # the raw network's spectrum has them
        largest.clear()
        wrapped = give_one_sided_spectra(network(seed=1))(MIX)
    assert largest and max(largest) == 0.0
    assert torch.equal(wrapped, plain)


def test_only_that_model_is_wrapped_and_only_once():
    model, other = give_one_sided_spectra(tiny_hdemucs()), tiny_hdemucs()
    assert "_ispec" in vars(model) and "_ispec" not in vars(other)
    wrapper = model._ispec
    assert give_one_sided_spectra(model)._ispec is wrapper


@pytest.mark.parametrize(
    "duplicate", [copy.deepcopy, lambda model: pickle.loads(pickle.dumps(model))]
)
def test_a_copy_of_a_wrapped_model_stays_wrapped(monkeypatch, duplicate):
    model = give_one_sided_spectra(tiny_hdemucs(seed=1))
    twin = duplicate(model)
    largest = watch_istft(monkeypatch)
    with torch.inference_mode():
        assert torch.equal(twin(MIX), model(MIX))
    assert len(largest) == 2 and max(largest) == 0.0


def test_a_model_without_an_istft_is_left_as_it_is():
    waveform_only = Demucs(["drums", "bass"], channels=4, depth=2)
    assert "_ispec" not in vars(give_one_sided_spectra(waveform_only))


def two_transforms_as_one(first: np.ndarray, second: np.ndarray, n_fft: int) -> np.ndarray:
    """Two real inverse FFTs computed as one complex one, as batched FFT libraries may do
    (cuFFT: "batched mode can combine signal from different batches"): the first comes
    out as the real part, the second as the imaginary part."""
    both = np.fft.ifft(hermitian_extension(first, n_fft) + 1j * hermitian_extension(second, n_fft))
    return np.stack([both.real, both.imag])


@pytest.mark.parametrize("n_fft", [1024, 4096])
def test_a_batched_inverse_no_longer_mixes_neighbours(n_fft):
    """Checked with numpy's FFT, not torch's: a raw network spectrum leaks into the
    transform it is paired with; a one-sided one gives each exactly its own inverse."""
    raw = network_like_spectrum(2, n_fft, 1, seed=3)  # two transforms of one frame
    for spectrum, leaks in ((raw, True), (make_one_sided_(raw.clone(), n_fft), False)):
        halves = spectrum[..., 0].numpy().astype(np.complex128)
        alone = np.fft.irfft(halves, n=n_fft)
        paired = two_transforms_as_one(halves[0], halves[1], n_fft)
        error = np.linalg.norm(paired - alone) / np.linalg.norm(alone)
        assert (error > 1e-3) if leaks else (error < 1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("n_fft", [1024, 4096])
def test_on_a_gpu_a_one_sided_spectrum_inverts_alone_as_in_a_batch_and_as_on_the_cpu(n_fft):
    spectrum = make_one_sided_(network_like_spectrum(64, n_fft, 40), n_fft)
    window = torch.hann_window(n_fft)
    options = dict(n_fft=n_fft, hop_length=n_fft // 4, normalized=True)
    on_cpu = torch.istft(spectrum, window=window, **options)
    batched = torch.istft(spectrum.cuda(), window=window.cuda(), **options).cpu()
    alone = torch.istft(spectrum[:1].cuda(), window=window.cuda(), **options).cpu()

    def relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
        return float((ours - reference).norm() / reference.norm())

    assert relative(batched[:1], alone) < 1e-5
    assert relative(batched, on_cpu) < 1e-5
