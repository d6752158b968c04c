"""Resampling with resampy's ``kaiser_best`` filter, the resampler the AudioSet training data
went through, always through resampy's own loop, so every sample is the reference pipeline's
bit for bit:

* :func:`resample` converts a whole clip at once (``resampy.resample``);
* :class:`StreamResampler` converts a signal pushed block by block, with bounded memory, into
  exactly the samples :func:`resample` gives for the whole signal (:func:`resample_span`).

>>> resample(np.zeros(44100, dtype=np.float32), 44100, 32000).shape
(32000,)
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

__all__ = ["resample", "resample_span", "output_length", "StreamResampler"]

_PIECE_SECONDS = 0.1  # output a StreamResampler collects before it runs the filter


def resample(x: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D float32 waveform with resampy's ``kaiser_best`` filter.

    Runs ``resampy.resample(x, rate, target_rate, filter="kaiser_best")``, so the samples are
    the reference pipeline's bit for bit. The output has :func:`output_length` samples, and
    at least one: a clip too short to yield a whole output sample is zero-padded until it does.

    >>> resample(np.ones(1, dtype=np.float32), 384000, 32000).shape
    (1,)
    """
    if rate == target_rate:
        return x
    ratio = float(target_rate) / rate
    length = len(x)
    if int(len(x) * ratio) < 1:  # resampy refuses such input (ValueError)
        need = max(len(x), math.ceil(rate / target_rate))
        while int(need * ratio) < 1:
            need += 1
        x = np.concatenate([x, np.zeros(need - len(x), dtype=x.dtype)])
        length = need
    n_out = int(length * ratio)
    out = _resampy().resample(x, rate, target_rate, filter="kaiser_best", axis=-1)
    return np.ascontiguousarray(out[:max(1, n_out)], dtype=np.float32)


def output_length(num_samples: int, rate: int, target_rate: int) -> int:
    """Samples resampy's ``resample`` gives for ``num_samples`` inputs (its own rule,
    ``int(n * float(target_rate) / float(rate))``).

    >>> output_length(44101, 44100, 32000)
    32000
    """
    return int(num_samples * float(target_rate) / float(rate))


def _resampy() -> Any:
    """resampy, imported on first use, with numba's on-disk cache switched on for its loop.

    resampy compiles its resampling loop with numba in every new process (1-2 s, most of a
    short run's cold start) because it does not ask numba to cache it. The cache stores the
    same machine code (same samples); it is kept in resampy's ``__pycache__`` or, where that is
    read-only, numba's user-wide cache folder. If this numba has no such switch, resampy runs
    as it is.
    """
    global _resampy_cached
    import resampy

    if not _resampy_cached:
        _resampy_cached = True
        from resampy import interpn

        for name in ("_resample_loop_p", "_resample_loop_s"):
            try:
                getattr(interpn, name).enable_caching()
            except Exception:  # another numba or resampy: it compiles each time, as before
                logging.getLogger("panns_infer").debug("no numba cache for resampy's %s", name)
    return resampy


_resampy_cached = False


class _Filter:
    """resampy's ``kaiser_best`` filter prepared for one rate pair, exactly as
    ``resampy.resample`` prepares it (scaled by the ratio when downsampling)."""

    _cache: dict[tuple[int, int], _Filter] = {}

    def __init__(self, rate: int, target_rate: int) -> None:
        self.ratio = float(target_rate) / rate
        self.time_increment = 1.0 / self.ratio
        window, self.precision, _ = _resampy().filters.get_filter("kaiser_best")
        if self.ratio < 1:
            window = self.ratio * window
        self.window = window
        self.delta = np.diff(window, append=window[-1])
        self.scale = min(1.0, self.ratio)
        # Taps on each side of an output: the loop reads x[n - i] for i < W and x[n + 1 + k]
        # for k < W, W = (len(window) - offset) // index_step <= len(window) // index_step.
        self.reach = len(window) // int(self.scale * self.precision) + 1

    @classmethod
    def get(cls, rate: int, target_rate: int) -> _Filter:
        key = (int(rate), int(target_rate))
        if key not in cls._cache:
            cls._cache[key] = cls(*key)
        return cls._cache[key]


def resample_span(x: np.ndarray, rate: int, target_rate: int, *, offset: int, start: int,
                  stop: int) -> np.ndarray:
    """Outputs ``start`` to ``stop`` of resampling a long signal with resampy's ``kaiser_best``,
    computed from a piece of it, bit for bit what ``resampy.resample`` gives for the whole.

    resampy's loop computes output ``t`` at the input position ``t_out = t * (1 / ratio)``
    (float64): it sums the filter's taps around ``n = int(t_out)`` with weights interpolated
    at ``t_out - n``, rounding to float32 after each tap. Here the same loop runs on the piece
    at the positions ``t_out - offset``: subtracting an integer no larger than a float64 below
    2**53 is exact, so the piece's ``n`` is ``n - offset`` and its fraction is the same bits,
    and the taps read the same samples in the same order. This holds where the piece has the
    filter's reach (``StreamResampler(rate, target_rate).reach`` input samples) on each side
    of the outputs' positions, or ends where the signal does (resampy takes no samples beyond
    the signal's ends: zeros).

    Args:
        x: float32 samples ``offset`` to ``offset + len(x)`` of the signal.
        rate: their rate, Hz.
        target_rate: the rate wanted, Hz.
        offset: index of ``x[0]`` in the signal.
        start: the first output wanted (index in the whole signal's output).
        stop: the output after the last one wanted.

    >>> x = np.random.default_rng(0).standard_normal(4410).astype(np.float32)
    >>> whole = resample(x, 44100, 32000)
    >>> part = resample_span(x[1000:], 44100, 32000, offset=1000, start=1000, stop=3200)
    >>> bool(np.array_equal(part, whole[1000:]))
    True
    """
    interpn = _resampy().interpn
    f = _Filter.get(rate, target_rate)
    t_out = np.arange(start, stop) * f.time_increment  # resampy: np.arange(n_out) * time_increment
    if offset:
        t_out -= offset
    y = np.zeros(stop - start, dtype=np.float32)
    interpn.resample_f_s(np.asarray(x, dtype=np.float32), t_out, f.window, f.delta, f.precision, f.scale, y)
    return y


class StreamResampler:
    """Resample a signal pushed block by block into exactly the samples of
    ``resampy.resample(whole_signal, rate, target_rate, filter="kaiser_best")``, however the
    signal was cut, keeping only the filter's reach of input.

    Each output is computed (:func:`resample_span`) once the input holds its filter's reach on
    the right, or at :meth:`finish` (the signal's end, where resampy's filter sees zeros);
    the output has :func:`output_length` samples in all.

    Args:
        rate: the input's rate, Hz.
        target_rate: the output's rate, Hz.
        piece_seconds: output collected before the filter runs (fewer calls on tiny blocks).

    >>> r = StreamResampler(48000, 32000)
    >>> sum(len(r.push(np.zeros(4800, dtype=np.float32))) for _ in range(10)) + len(r.finish())
    32000
    """

    def __init__(self, rate: int, target_rate: int, *, piece_seconds: float = _PIECE_SECONDS) -> None:
        self.rate, self.target_rate = int(rate), int(target_rate)
        self.reach = 0 if rate == target_rate else _Filter.get(rate, target_rate).reach
        self.piece = max(1, int(piece_seconds * target_rate))
        self._pending: list[np.ndarray] = []
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # index of _buffer[0] in the signal
        self._total = 0  # input samples pushed
        self._emitted = 0  # outputs returned

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add samples at ``rate``; return the output samples that became final."""
        block = np.asarray(block, dtype=np.float32)
        if self.rate == self.target_rate:
            return block
        self._pending.append(block)
        self._total += len(block)
        # output t is final once x[int(t_out) + reach] exists: t * rate <= (total - reach - 1) * target
        ready = max(0, (self._total - self.reach - 1) * self.target_rate // self.rate + 1)
        if ready - self._emitted < self.piece:
            return np.zeros(0, dtype=np.float32)
        return self._run(ready)

    def finish(self) -> np.ndarray:
        """The remaining output samples (the signal ended)."""
        if self.rate == self.target_rate:
            return np.zeros(0, dtype=np.float32)
        end = output_length(self._total, self.rate, self.target_rate)
        if end <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        return self._run(end)

    def _run(self, stop: int) -> np.ndarray:
        self._buffer = np.concatenate([self._buffer, *self._pending])
        self._pending = []
        out = resample_span(self._buffer, self.rate, self.target_rate, offset=self._buffer_start,
                            start=self._emitted, stop=stop)
        self._emitted = stop
        # the next output sits at or after int(t_out) >= stop * rate // target - 1
        keep_from = max(0, stop * self.rate // self.target_rate - self.reach - 1)
        self._buffer = self._buffer[keep_from - self._buffer_start:]
        self._buffer_start = keep_from
        return out
