"""The numpy filter banks and window equal librosa's / scipy's element for element, so feature
workers need neither import; the fast histogram equals numpy's on edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from etl.audio import dsp, filters

MEL_CASES = [(22050, 2048, 128, 0.0, None), (8000, 1024, 128, 300.0, 3400.0),
             (16000, 1024, 40, 50.0, 8000.0), (8000, 512, 26, 300.0, 3400.0)]


@pytest.mark.parametrize(("sr", "n_fft", "n_mels", "fmin", "fmax"), MEL_CASES)
def test_mel_equals_librosa(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> None:
    import librosa

    ours = filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert np.array_equal(ours, ref)


def test_chroma_equals_librosa_for_every_tuning_step() -> None:
    import librosa

    # estimate_tuning returns one of these 100 values (0.01-bin histogram edges)
    for tuning in np.linspace(-0.5, 0.5, 101)[:-1]:
        for sr, n_fft in ((22050, 2048), (8000, 1024)):
            ours = filters.chroma(sr=sr, n_fft=n_fft, tuning=float(tuning))
            ref = librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=float(tuning), n_chroma=12)
            assert np.array_equal(ours, ref), (tuning, sr)


@pytest.mark.parametrize("length", [320, 512, 640, 1024, 2048])
def test_hann_equals_scipy(length: int) -> None:
    from scipy.signal import get_window

    assert np.array_equal(filters.hann(length), get_window("hann", length, fftbins=True))


@pytest.mark.parametrize("length", [1, 2, 3, 320, 400, 441, 640, 882, 1024])
def test_float32_hann_is_the_periodic_window_rounded_once(length: int) -> None:
    """One window in two precisions: the float32 STFT's window is the float64 one rounded, and
    both are the periodic Hann ``0.5 - 0.5 cos(2 pi n / N)``."""
    w32 = filters.hann(length, dtype=np.float32)
    assert w32.dtype == np.float32 and filters.hann(length).dtype == np.float64
    assert np.array_equal(w32, filters.hann(length).astype(np.float32))
    n = np.arange(length, dtype=np.float64)
    closed_form = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)
    assert np.array_equal(w32, closed_form.astype(np.float32))
    np.testing.assert_allclose(filters.hann(length), closed_form, rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        w32[0] = 1.0


def test_cached_banks_are_read_only() -> None:
    bank = filters.mel(sr=22050, n_fft=2048)
    with pytest.raises(ValueError):
        bank[0, 0] = 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_histogram_equals_numpy_on_edges(dtype: type) -> None:
    rng = np.random.default_rng(0)
    edges = np.linspace(-0.5, 0.5, 101)
    for _ in range(50):
        on_edge = edges[rng.integers(0, 101, 200)].astype(dtype)
        values = np.concatenate([
            rng.uniform(-0.6, 0.6, 2000).astype(dtype), on_edge,
            np.nextafter(on_edge, dtype(1)), np.nextafter(on_edge, dtype(-1))])
        assert np.array_equal(dsp._uniform_histogram(values, edges), np.histogram(values, edges)[0])
