"""The log-mel front end: STFT power spectrum, Slaney mel filter bank, decibels.

Written from ``ARCHITECTURES.md`` section 1. The modules keep the released checkpoints' key
names (``spectrogram_extractor.stft.conv_real.weight``, ``logmel_extractor.melW``) so that a
checkpoint loads with strict matching. The STFT runs as two 1-D convolutions whose kernels
are the checkpoint's own matrices, which is what the reference does and gives the closest
numbers. Our own window, DFT and mel matrices are computed here too, and a loaded checkpoint
is checked against them (:func:`check_frontend_tensors`): a mismatch means the checkpoint
was trained with another configuration than the one we detected.

>>> cfg = FRONTEND_32K
>>> cfg.frames(320_000)      # 10 s at 32 kHz
1001
>>> mel = mel_filterbank(cfg)
>>> mel.shape, round(float(mel.max()), 9)
((513, 64), 0.018149516)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, InvalidArgumentError

__all__ = [
    "FrontEndConfig",
    "FRONTEND_32K",
    "FRONTEND_16K",
    "mel_filterbank",
    "stft_kernels",
    "Spectrogram",
    "LogmelFilterBank",
    "check_frontend_tensors",
    "build_frontend_state",
    "SPECTROGRAMS",
    "check_spectrogram",
    "fft_power",
    "is_hann_dft",
]

AMIN = 1e-10  # floor of the mel power before the log (digital silence gives -100 dB)


@dataclass(frozen=True)
class FrontEndConfig:
    """STFT and mel settings of a log-mel checkpoint.

    Attributes:
        sample_rate: the rate the network was trained at, in Hz.
        window_size: FFT size, equal to the (periodic Hann) window length.
        hop_size: samples between frame centres.
        mel_bins: number of mel bands.
        fmin: lowest mel edge frequency, Hz.
        fmax: highest mel edge frequency, Hz.
    """

    sample_rate: int
    window_size: int
    hop_size: int
    mel_bins: int
    fmin: float
    fmax: float

    @property
    def freq_bins(self) -> int:
        """Number of one-sided STFT bins, ``window_size // 2 + 1``."""
        return self.window_size // 2 + 1

    @property
    def frame_seconds(self) -> float:
        """Seconds between two STFT frames."""
        return self.hop_size / self.sample_rate

    def frames(self, num_samples: int) -> int:
        """STFT frame count for an input of ``num_samples`` (centred, reflect-padded)."""
        return num_samples // self.hop_size + 1


FRONTEND_32K = FrontEndConfig(32000, 1024, 320, 64, 50.0, 14000.0)
FRONTEND_16K = FrontEndConfig(16000, 512, 160, 64, 50.0, 8000.0)


# --- matrices ------------------------------------------------------------------------------

_F_SP = 200.0 / 3  # Hz per mel below 1 kHz (Slaney)
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(f: Union[float, np.ndarray]) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    linear = f / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, linear)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    linear = _F_SP * m
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(cfg: FrontEndConfig) -> np.ndarray:
    """Slaney-scale, area-normalised mel filter bank, shape ``(freq_bins, mel_bins)``, float32.

    Rows are FFT bins and columns mel bands, the layout the checkpoints store.
    """
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.mel_bins + 2))
    bins = np.arange(cfg.freq_bins, dtype=np.float64) * cfg.sample_rate / cfg.window_size
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return weights.T.astype(np.float32)


def stft_kernels(cfg: FrontEndConfig) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary DFT kernels with a periodic Hann window, each ``(F, 1, n_fft)``."""
    real, imag = _stft_kernels(cfg)
    return real.copy(), imag.copy()


@functools.lru_cache(maxsize=4)
def _stft_kernels(cfg: FrontEndConfig) -> tuple[np.ndarray, np.ndarray]:
    # computed once per configuration: every model build and checkpoint check needs them
    n_fft = cfg.window_size
    n = np.arange(n_fft, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)
    angle = 2.0 * np.pi * np.outer(np.arange(cfg.freq_bins), n) / n_fft
    real = (window * np.cos(angle)).astype(np.float32)[:, None, :]
    imag = (-window * np.sin(angle)).astype(np.float32)[:, None, :]
    return real, imag


# --- modules -------------------------------------------------------------------------------


class _STFT(nn.Module):
    def __init__(self, cfg: FrontEndConfig) -> None:
        super().__init__()
        kernel: dict[str, Any] = dict(kernel_size=cfg.window_size, stride=cfg.hop_size, bias=False)
        self.conv_real = nn.Conv1d(1, cfg.freq_bins, **kernel)
        self.conv_imag = nn.Conv1d(1, cfg.freq_bins, **kernel)
        real, imag = stft_kernels(cfg)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(real))
            self.conv_imag.weight.copy_(torch.from_numpy(imag))
        for p in self.parameters():
            p.requires_grad_(False)


class Spectrogram(nn.Module):
    """Waveform ``(B, N)`` to power spectrogram ``(B, 1, T, F)``, T = N // hop + 1."""

    def __init__(self, cfg: FrontEndConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stft = _STFT(cfg)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        pad = self.cfg.window_size // 2
        x = nn.functional.pad(waveform[:, None, :], (pad, pad), mode="reflect")
        real = self.stft.conv_real(x)  # (B, F, T)
        imag = self.stft.conv_imag(x)
        power = real * real + imag * imag
        return power.transpose(1, 2)[:, None, :, :]


class LogmelFilterBank(nn.Module):
    """Power spectrogram ``(B, 1, T, F)`` to log-mel in dB ``(B, 1, T, mel_bins)``."""

    def __init__(self, cfg: FrontEndConfig) -> None:
        super().__init__()
        self.melW = nn.Parameter(torch.from_numpy(mel_filterbank(cfg)), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(power, self.melW)
        return 10.0 * torch.log10(torch.clamp(mel, min=AMIN))


# --- the power spectrogram by FFT (an opt-in of the CPU fast path) ------------------------------

# How the fast path computes the power spectrogram: "reference" (the model's DFT as a
# convolution, exact) or "fft" (faster, deviates on tonal audio; see panns_infer.fast).
SPECTROGRAMS = ("reference", "fft")
SpectrogramMethod = Literal["reference", "fft"]


def check_spectrogram(spectrogram: object) -> None:
    """Raise :class:`InvalidArgumentError` unless ``spectrogram`` is one of :data:`SPECTROGRAMS`.

    >>> check_spectrogram("fft")
    >>> check_spectrogram("stft")
    Traceback (most recent call last):
    ...
    panns_infer.errors.InvalidArgumentError: spectrogram must be one of ('reference', 'fft'), got 'stft'
    """
    if not isinstance(spectrogram, str) or spectrogram not in SPECTROGRAMS:
        raise InvalidArgumentError(f"spectrogram must be one of {SPECTROGRAMS}, got {spectrogram!r}")


def is_hann_dft(spectrogram: "Spectrogram", cfg: FrontEndConfig) -> bool:
    """Whether a :class:`Spectrogram`'s kernels (real and imaginary) are the periodic-Hann DFT
    of ``cfg`` (the checkpoint loader checks this too; a model built another way is checked
    here), so that :func:`fft_power` computes its transform.

    >>> is_hann_dft(Spectrogram(FRONTEND_16K), FRONTEND_16K)
    True
    """
    real, imag = stft_kernels(cfg)
    stft = spectrogram.stft
    return (stft.conv_real.weight.shape == real.shape
            and bool(torch.allclose(stft.conv_real.weight, torch.from_numpy(real), atol=1e-6))
            and bool(torch.allclose(stft.conv_imag.weight, torch.from_numpy(imag), atol=1e-6)))


def fft_power(waveform: torch.Tensor, window: torch.Tensor, hop: int) -> torch.Tensor:
    """Power spectrogram ``(B, 1, T, n_fft // 2 + 1)`` of ``(B, N)``, reflect-padded by
    ``n_fft // 2`` on each side: what the reference's DFT-as-convolution computes, by FFT
    (2 GFLOP per 10 s clip become ~1 ms). Closer to the exact float64 result than the
    convolution (1.4e-4 vs 3.8e-4 worst relative error on 10 s of noise), but not equal to
    the reference where that matters: in the bins of a tonal spectrum that hold only
    rounding noise, which the log-mel magnifies (the opt-in ``spectrogram="fft"``).

    >>> x = torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))
    >>> from panns_infer.frontend import FRONTEND_32K, Spectrogram
    >>> ref = Spectrogram(FRONTEND_32K)(x)
    >>> got = fft_power(x, torch.hann_window(1024, periodic=True), 320)
    >>> got.shape == ref.shape, bool(((got - ref).abs() <= 1e-3 * ref + 1e-4).all())
    (True, True)
    """
    n_fft = window.shape[0]
    padded = nn.functional.pad(waveform[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    b, n = padded.shape
    frames = padded.as_strided((b, (n - n_fft) // hop + 1, n_fft), (padded.stride(0), hop, 1))
    spectrum = torch.fft.rfft(frames * window)
    return (spectrum.real.square_() + spectrum.imag.square_())[:, None]


def build_frontend_state(cfg: FrontEndConfig) -> dict[str, torch.Tensor]:
    """The three front-end tensors of a log-mel checkpoint, computed from ``cfg``."""
    real, imag = stft_kernels(cfg)
    return {"spectrogram_extractor.stft.conv_real.weight": torch.from_numpy(real),
            "spectrogram_extractor.stft.conv_imag.weight": torch.from_numpy(imag),
            "logmel_extractor.melW": torch.from_numpy(mel_filterbank(cfg))}


def check_frontend_tensors(state: dict, cfg: FrontEndConfig, *, source: str = "checkpoint",
                           reduced_precision: bool = False) -> None:
    """Compare a state dict's front-end matrices with the ones ``cfg`` gives.

    With ``reduced_precision`` (the file stored float16/bfloat16 weights) the comparison
    allows that rounding (relative 1e-2); a different configuration still differs by far more.

    Raises:
        CheckpointError: when a matrix differs (beyond float32 rounding), which means the
            checkpoint was trained with another sample rate, FFT size or mel setting.
    """
    rtol = 1e-2 if reduced_precision else 0.0
    mel = state.get("logmel_extractor.melW")
    if mel is not None:
        ours = mel_filterbank(cfg)
        theirs = mel.detach().cpu().float().numpy()
        if theirs.shape != ours.shape or not np.allclose(theirs, ours, rtol=rtol, atol=1e-6):
            raise CheckpointError(
                f"{source}: its mel filter bank (logmel_extractor.melW, shape {tuple(theirs.shape)}) "
                f"does not match the {cfg.sample_rate} Hz configuration {cfg} (shape {ours.shape}). "
                "The file was trained with another front end; pass the right arch= or report it."
            )
    real = state.get("spectrogram_extractor.stft.conv_real.weight")
    if real is not None:
        ours_real, _ = stft_kernels(cfg)
        theirs = real.detach().cpu().float().numpy()
        if theirs.shape != ours_real.shape or not np.allclose(theirs, ours_real, rtol=rtol, atol=1e-5):
            raise CheckpointError(
                f"{source}: its STFT kernels (spectrogram_extractor.stft.conv_real.weight, shape "
                f"{tuple(theirs.shape)}) are not a periodic-Hann DFT of size {cfg.window_size}."
            )
