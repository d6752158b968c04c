"""The log-mel front end, checked against ARCHITECTURES.md's check values and the fixture
front-end matrices (which equal torchlibrosa + librosa output exactly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FIXTURES, requires_fixtures
from panns_infer.errors import CheckpointError
from panns_infer.frontend import (
    FRONTEND_16K,
    FRONTEND_32K,
    LogmelFilterBank,
    Spectrogram,
    check_frontend_tensors,
    mel_filterbank,
    stft_kernels,
)


@pytest.mark.parametrize("cfg, rows, peak", [(FRONTEND_32K, (2, 447), 0.018149516),
                                             (FRONTEND_16K, (2, 255), 0.02162881)])
def test_mel_filterbank_check_values(cfg, rows, peak):
    mel = mel_filterbank(cfg)
    assert mel.shape == (cfg.freq_bins, 64) and mel.dtype == np.float32
    nonzero = np.flatnonzero(mel.any(axis=1))
    assert (nonzero.min(), nonzero.max()) == rows
    assert float(mel.max()) == pytest.approx(peak, abs=1e-9)


@requires_fixtures
@pytest.mark.parametrize("cfg", [FRONTEND_32K, FRONTEND_16K])
def test_matrices_equal_the_released_ones(cfg):
    ref = np.load(FIXTURES / "specs" / f"frontend_{cfg.sample_rate}_64.npz")
    assert np.abs(mel_filterbank(cfg) - ref["logmel_extractor.melW"]).max() < 1e-8
    real, imag = stft_kernels(cfg)
    assert np.abs(real - ref["spectrogram_extractor.stft.conv_real.weight"]).max() < 1e-7
    assert np.abs(imag - ref["spectrogram_extractor.stft.conv_imag.weight"]).max() < 1e-7


@pytest.mark.parametrize("n, frames", [(320_000, 1001), (224_000, 701), (75_040, 235), (513, 2)])
def test_frame_count(n, frames):
    assert FRONTEND_32K.frames(n) == frames
    spec = Spectrogram(FRONTEND_32K)(torch.zeros(1, n))
    assert spec.shape == (1, 1, frames, 513)


def test_power_spectrum_of_a_sine_peaks_at_its_bin():
    cfg = FRONTEND_32K
    t = np.arange(32000) / cfg.sample_rate
    bin_ = 100  # 100 * 32000 / 1024 = 3125 Hz
    x = torch.from_numpy(np.sin(2 * np.pi * bin_ * cfg.sample_rate / cfg.window_size * t).astype(np.float32))
    power = Spectrogram(cfg)(x[None])[0, 0, 50]
    assert int(power.argmax()) == bin_
    # Periodic Hann, no normalisation: |X[k]| = N/4 for a unit sine on a bin centre.
    assert float(power[bin_]) == pytest.approx((cfg.window_size / 4) ** 2, rel=1e-3)


def test_silence_is_minus_100_db():
    logmel = LogmelFilterBank(FRONTEND_32K)(Spectrogram(FRONTEND_32K)(torch.zeros(1, 4000)))
    assert torch.all(logmel == -100.0)


def test_checkpoint_front_end_mismatch_is_reported():
    state = {"logmel_extractor.melW": torch.from_numpy(mel_filterbank(FRONTEND_16K))}
    with pytest.raises(CheckpointError, match="mel filter bank"):
        check_frontend_tensors(state, FRONTEND_32K)
    wrong_scale = mel_filterbank(FRONTEND_32K) * 1.01
    with pytest.raises(CheckpointError):
        check_frontend_tensors({"logmel_extractor.melW": torch.from_numpy(wrong_scale)}, FRONTEND_32K)
    check_frontend_tensors({"logmel_extractor.melW": torch.from_numpy(mel_filterbank(FRONTEND_32K))},
                           FRONTEND_32K)
