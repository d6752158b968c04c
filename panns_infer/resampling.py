"""Resampling with resampy's ``kaiser_best`` filter, the resampler the AudioSet training data
went through: resampy's own loop for exact samples, and a polyphase form of the same filter
for the streamed blocks of long recordings.

>>> resample(np.zeros(44100, dtype=np.float32), 44100, 32000).shape
(32000,)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["resample"]


def resample(x: np.ndarray, rate: int, target_rate: int, *, exact: bool = True) -> np.ndarray:
    """Resample a 1-D float32 waveform with resampy's ``kaiser_best`` filter.

    The output has ``int(len(x) * target_rate / rate)`` samples, and at least one: a clip
    too short to yield a whole output sample is zero-padded until it does.

    Args:
        x: the samples.
        rate: their rate, Hz.
        target_rate: the rate wanted, Hz.
        exact: ``True`` (default) runs ``resampy.resample(x, rate, target_rate,
            filter="kaiser_best")`` itself, so the samples are the reference pipeline's bit
            for bit. ``False`` computes the same filter as one matrix product per filter
            phase period (:func:`_polyphase`, 5-10x faster, no numba compilation), summed in
            float64 where resampy rounds to float32 after every tap: samples differ by ~7e-7,
            which is harmless on noise-like audio but moved Cnn14 probabilities by 2e-4 on a
            steady tone (the STFT bins that hold only rounding noise change, and the log-mel
            magnifies them). The streaming resampler of long, windowed inputs uses it.

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
    table = None if exact else _polyphase(int(rate), int(target_rate))
    if table is None:
        out = _resampy().resample(x, rate, target_rate, filter="kaiser_best", axis=-1)
    else:
        out = _apply_polyphase(np.asarray(x, dtype=np.float32), table, n_out)
    return np.ascontiguousarray(out[:max(1, n_out)], dtype=np.float32)


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


# Largest per-phase matrix (phases x span) built; larger ones (ratios such as 44100 -> 32001)
# use resampy itself.
_POLYPHASE_MAX_ENTRIES = 4_000_000
_MIN_PHASES = 64  # output samples per period of the polyphase table, at least
_polyphase_cache: dict[tuple[int, int], Optional[tuple[np.ndarray, int, int]]] = {}


def _kaiser_best() -> tuple[np.ndarray, int]:
    """resampy's precomputed ``kaiser_best`` half window and table precision, read from its
    data file without importing resampy (whose import compiles numba kernels)."""
    import importlib.util

    spec = importlib.util.find_spec("resampy")
    if spec is None or spec.origin is None:
        raise ImportError("resampy is not installed")
    data = np.load(Path(spec.origin).parent / "data" / "kaiser_best.npz")
    return data["half_window"], int(data["precision"])


def _polyphase(rate: int, target_rate: int) -> Optional[tuple[np.ndarray, int, int]]:
    """``(W, Q, left)`` for resampling ``rate`` -> ``target_rate``, cached, or ``None`` when
    too large. With ``P = target_rate / g`` and ``Q = rate / g`` (``g`` their gcd), output
    ``p + m P`` is ``W[p] @ x[m Q - left : m Q - left + W.shape[1]]`` (zero outside ``x``).
    Row ``p`` holds the left and right wings resampy's loop uses for output ``p``, weights
    linearly interpolated from the table exactly as it does, in float64.
    """
    key = (rate, target_rate)
    if key in _polyphase_cache:
        return _polyphase_cache[key]
    g = math.gcd(rate, target_rate)
    phases, step_in = target_rate // g, rate // g
    win, num_table = _kaiser_best()
    ratio = float(target_rate) / rate
    if ratio < 1:
        win = ratio * win
    delta = np.diff(win, append=win[-1])
    scale = min(1.0, ratio)
    index_step = int(scale * num_table)
    nwin = win.shape[0]
    t_out = np.arange(phases) * (1.0 / ratio)
    n = t_out.astype(np.int64)
    frac = scale * (t_out - n)
    wings = []
    for side_frac in (frac, scale - frac):  # left wing: x[n - i]; right wing: x[n + 1 + k]
        index_frac = side_frac * num_table
        offset = index_frac.astype(np.int64)
        eta = index_frac - offset
        taps = (nwin - offset) // index_step
        idx = offset[:, None] + np.arange(taps.max())[None, :] * index_step
        valid = np.arange(taps.max())[None, :] < taps[:, None]
        idx = np.where(valid, idx, 0)
        wings.append(np.where(valid, win[idx] + eta[:, None] * delta[idx], 0.0))
    left_w, right_w = wings
    left, right = left_w.shape[1], right_w.shape[1]
    span = int(n[-1]) + left + right + 1
    if phases * span > _POLYPHASE_MAX_ENTRIES:
        _polyphase_cache[key] = None
        return None
    table = np.zeros((phases, span))
    rows = np.arange(phases)[:, None]
    # column c holds x[c - left] (relative to the period start): x[n - i] -> n - i + left
    table[rows, n[:, None] - np.arange(left)[None, :] + left] += left_w
    table[rows, n[:, None] + 1 + np.arange(right)[None, :] + left] += right_w
    # Few phases (16 -> 32 kHz has 2, 48 -> 32 kHz 2) would make the product a tall, thin one
    # over a patch matrix ~span/step_in times the input (166 MB for 10 s at 16 kHz, 86 ms);
    # k periods taken as one make it square enough for BLAS (same weights, same sums).
    k = -(-_MIN_PHASES // phases)
    if k > 1:
        wide = np.zeros((phases * k, span + (k - 1) * step_in))
        for j in range(k):
            wide[j * phases:(j + 1) * phases, j * step_in:j * step_in + span] = table
        table, step_in = wide, step_in * k
    _polyphase_cache[key] = (table, step_in, left)
    return _polyphase_cache[key]


def _apply_polyphase(x: np.ndarray, table: tuple[np.ndarray, int, int], n_out: int) -> np.ndarray:
    """The first ``n_out`` outputs of the polyphase filter ``table`` on ``x`` (float64 sums)."""
    weights, step_in, left = table
    phases, span = weights.shape
    periods = -(-n_out // phases)
    padded = np.zeros(max((periods - 1) * step_in + span, left + len(x)), dtype=np.float64)
    padded[left:left + len(x)] = x
    frames = np.lib.stride_tricks.as_strided(padded, (periods, span), (step_in * 8, 8), writeable=False)
    return (frames @ weights.T).ravel()[:n_out]
