"""Test signals whose spectra are tonal, sparse, near-silent or clipped: the inputs on which
two roundings of the same STFT sum differ visibly after the log-mel.

Every generator takes the sample rate and a length in samples and returns float32 samples in
[-1, 1]. Frequencies are in Hz, chosen against the 32 kHz, 1024-point STFT of the networks
(31.25 Hz bins) and their 64-band mel scale (50 Hz to 14 kHz), so a signal is "between bins"
or "on a mel band edge" whatever rate it is generated at.

>>> sorted(named_signals(32000, 3200))[:3]
['chord', 'click_in_zeros', 'clipped_noise']
>>> all(s.dtype == np.float32 and np.abs(s).max() <= 1 for s in named_signals(16000, 800).values())
True
"""

from __future__ import annotations

from typing import Callable

import numpy as np

BIN_HZ = 32000 / 1024  # the STFT bin spacing of the 32 kHz networks
Generator = Callable[[int, int], np.ndarray]


def _time(rate: int, n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / rate


def tone(freq: float, amplitude: float = 0.5, phase: float = 0.0) -> Generator:
    """A pure sine."""
    return lambda rate, n: amplitude * np.sin(2 * np.pi * freq * _time(rate, n) + phase)


def chord(freqs: tuple[float, ...], amplitude: float = 0.25) -> Generator:
    """Equal-amplitude sines, summed."""
    return lambda rate, n: sum(amplitude * np.sin(2 * np.pi * f * _time(rate, n)) for f in freqs)


def sweep(start: float, stop: float, amplitude: float = 0.5) -> Generator:
    """A linear chirp from ``start`` to ``stop`` Hz over the whole length."""
    def make(rate: int, n: int) -> np.ndarray:
        t = _time(rate, n)
        duration = max(n / rate, 1e-9)
        return amplitude * np.sin(2 * np.pi * (start * t + (stop - start) / (2 * duration) * t * t))
    return make


def square(freq: float, amplitude: float = 0.5) -> Generator:
    """A naive square wave (with its aliased harmonics)."""
    return lambda rate, n: amplitude * np.sign(np.sin(2 * np.pi * freq * _time(rate, n) + 0.1))


def impulse_train(per_second: float, amplitude: float = 0.9) -> Generator:
    """Single-sample impulses ``per_second`` times a second, zeros between."""
    def make(rate: int, n: int) -> np.ndarray:
        x = np.zeros(n)
        x[(np.arange(0, n / rate, 1 / per_second) * rate).astype(int)] = amplitude
        return x
    return make


def click(amplitude: float = 0.9) -> Generator:
    """All zeros with one sample in the middle."""
    def make(rate: int, n: int) -> np.ndarray:
        x = np.zeros(n)
        x[n // 2] = amplitude
        return x
    return make


def noise(rms: float, *, seed: int = 0, clip: bool = False) -> Generator:
    """Seeded Gaussian white noise of the given RMS, optionally clipped to [-1, 1]."""
    def make(rate: int, n: int) -> np.ndarray:
        x = np.random.default_rng(seed).standard_normal(n) * rms
        return np.clip(x, -1.0, 1.0) if clip else x
    return make


def dc(level: float) -> Generator:
    """A constant."""
    return lambda rate, n: np.full(n, level)


def gated(inner: Generator, on: float, off: float) -> Generator:
    """``inner`` switched on for ``on`` seconds, off for ``off`` seconds, repeatedly."""
    def make(rate: int, n: int) -> np.ndarray:
        t = _time(rate, n)
        return inner(rate, n) * ((t % (on + off)) < on)
    return make


def mel_band_edge(index: int) -> float:
    """The ``index``-th edge frequency (Hz) of the 64-band Slaney mel scale, 50 Hz-14 kHz."""
    from panns_infer.frontend import _hz_to_mel, _mel_to_hz

    return float(_mel_to_hz(np.linspace(_hz_to_mel(50.0), _hz_to_mel(14000.0), 66))[index])


def _finish(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -1.0, 1.0).astype(np.float32)


# name -> (generator, seconds at most; None: the length the caller asks for)
NAMED: dict[str, tuple[Generator, float | None]] = {
    "tone_on_bin": (tone(40 * BIN_HZ), None),
    "tone_between_bins": (tone(31.5 * BIN_HZ), None),
    "tone_high_between_bins": (tone(300.5 * BIN_HZ, 0.3), None),
    "tone_mel_edge_low": (tone(mel_band_edge(5)), None),
    "tone_mel_edge_high": (tone(mel_band_edge(60), 0.3), None),
    "chord": (chord((440.0, 554.37, 659.25)), None),
    "sweep": (sweep(100.0, 12000.0), None),
    "square": (square(300.0), None),
    "impulse_train": (impulse_train(50.0), None),
    "click_in_zeros": (click(), None),
    "noise_minus_100_dbfs": (noise(1e-5, seed=1), None),
    "clipped_noise": (noise(1.0, seed=2, clip=True), None),
    "dc_offset": (dc(0.25), None),
    "gated_beeps": (gated(tone(1000.0), 0.1, 0.15), None),
    "short_tone": (tone(2000.0), 0.3),
    "short_chord": (chord((261.63, 329.63, 392.0)), 1.2),
}


def named_signals(rate: int, num_samples: int) -> dict[str, np.ndarray]:
    """Every signal of :data:`NAMED` at ``rate``, ``num_samples`` long (short ones shorter)."""
    out = {}
    for name, (make, seconds) in NAMED.items():
        n = num_samples if seconds is None else min(num_samples, int(seconds * rate))
        out[name] = _finish(make(rate, n))
    return out


def mixture_strategy(rate: int, num_samples: int):
    """A hypothesis strategy: sums of one to three tones, sweeps, square waves, impulse
    trains, noises and DC levels with drawn parameters, optionally gated, clipped to [-1, 1]."""
    from hypothesis import strategies as st

    freq = st.floats(20.0, 15000.0)
    amp = st.floats(1e-5, 0.8)
    part = st.one_of(
        st.builds(tone, freq, amp, st.floats(0.0, 6.3)),
        st.builds(sweep, freq, freq, amp),
        st.builds(square, st.floats(20.0, 4000.0), amp),
        st.builds(impulse_train, st.floats(1.0, 200.0), amp),
        st.builds(lambda rms, seed: noise(rms, seed=seed), st.floats(1e-6, 0.3), st.integers(0, 2**16)),
        st.builds(dc, st.floats(-0.5, 0.5)),
    )
    gate = st.one_of(st.none(), st.tuples(st.floats(0.02, 0.5), st.floats(0.02, 0.5)))

    @st.composite
    def mixture(draw):
        parts = draw(st.lists(part, min_size=1, max_size=3))
        x = sum(p(rate, num_samples) for p in parts)
        g = draw(gate)
        if g is not None:
            x = x * ((_time(rate, num_samples) % sum(g)) < g[0])
        return _finish(x)

    return mixture()
