"""Long recordings: streaming decode and resampling, window plans, and stitching.

With ``AudioTagger(window=10.0)`` (the training clip length), a recording longer than
``whole_up_to`` runs as overlapping windows (by default it runs in exact chunks instead,
:mod:`panns_infer.chunks`; both stream the file). Files are decoded block by block and resampled in a streaming
way that gives bit for bit the samples of resampling the whole file at once, so memory does
not grow with the recording's length.

Window starts are multiples of one *segment* (32 STFT frames, 0.32 s at every released
rate): the decision-level networks output one value per segment, so windows then agree on
the segment grid and their framewise outputs stitch without seams (each window keeps the
centre of its overlaps).

>>> plan_windows(100, window=40, hop=20, align=10)
[(0, 40), (20, 60), (40, 80), (60, 100)]
>>> plan_windows(30, window=40, hop=20, align=10)
[(0, 30)]
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence, Union

import numpy as np

from .audio import decode_blocks, probe_file
from .resampling import StreamResampler

__all__ = ["plan_windows", "grid_spans", "resample_stream", "read_blocks", "iter_windows",
           "stitch_segments"]

_BLOCK_SECONDS = 10.0
_PIECE_SECONDS = 1.0  # output resampled per call at least (the last piece may be shorter)


def plan_windows(num_samples: int, *, window: int, hop: int, align: int = 1) -> list[tuple[int, int]]:
    """Spans ``(start, end)`` covering ``num_samples`` with windows of ``window`` samples.

    Starts are multiples of ``align`` stepping by ``hop`` (rounded down to ``align``, at
    least ``align``); the last window ends at ``num_samples`` and starts at the last aligned
    position that keeps it at least ``window`` long. An input no longer than one window is
    one span, the whole input.
    """
    if num_samples <= window:
        return [(0, num_samples)]
    step = max(align, hop // align * align)
    last = (num_samples - window) // align * align
    starts = list(range(0, last, step)) + [last]
    return [(s, num_samples if s == last else s + window) for s in starts]


def grid_spans(num_samples: int, *, segment: int, hop: int) -> list[tuple[int, int]]:
    """Consecutive segments ``[k*hop, k*hop + segment)`` (the last cut at the end), enough to
    cover the input; one span for an input no longer than a segment.

    >>> grid_spans(10, segment=4, hop=3)
    [(0, 4), (3, 7), (6, 10)]
    """
    count = 1 + max(0, -(-(num_samples - segment) // hop))
    return [(k * hop, min(k * hop + segment, num_samples)) for k in range(count)]


def resample_stream(blocks: Iterable[np.ndarray], rate: int, target_rate: int) -> Iterator[np.ndarray]:
    """Resample a stream of 1-D float32 blocks with resampy's ``kaiser_best`` filter.

    The concatenated output is bit for bit ``resampy.resample`` of the whole signal (what
    :func:`panns_infer.audio.resample` gives when the input runs in one pass), computed piece
    by piece with the filter's context (:class:`~panns_infer.resampling.StreamResampler`).

    >>> from panns_infer.audio import resample
    >>> x = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    >>> pieces = resample_stream((x[i:i + 1000] for i in range(0, 48000, 1000)), 48000, 32000)
    >>> bool(np.array_equal(np.concatenate(list(pieces)), resample(x, 48000, 32000)))
    True
    """
    resampler = StreamResampler(rate, target_rate, piece_seconds=_PIECE_SECONDS)
    for block in blocks:
        out = resampler.push(block)
        if len(out):
            yield out
    out = resampler.finish()
    if len(out):
        yield out


def read_blocks(path: Union[str, os.PathLike], target_rate: int, *,
                block_seconds: float = _BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Decode a file block by block to mono float32 at ``target_rate``.

    Raises:
        AudioDecodeError: the file cannot be decoded.
        InvalidAudioError: it contains NaN, infinite or out-of-range samples.
    """
    _, rate = probe_file(path)
    blocks = decode_blocks(path, block_samples=max(1, int(block_seconds * rate)))
    yield from resample_stream(blocks, rate, target_rate)


def iter_windows(blocks: Iterable[np.ndarray], spans: Sequence[tuple[int, int]]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, samples)`` for each span as soon as the block stream covers it.

    Only the samples still needed by a pending span are kept. If the stream ends early,
    the last spans are cut to what was there (and dropped when nothing is left).
    """
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start = 0
    pending = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while pending < len(spans) and spans[pending][1] <= buffer_start + len(buffer):
            start, end = spans[pending]
            yield pending, buffer[start - buffer_start:end - buffer_start].copy()
            pending += 1
            if pending < len(spans):
                drop = spans[pending][0] - buffer_start
                buffer, buffer_start = buffer[drop:], buffer_start + drop
        if pending == len(spans):
            return
    available = buffer_start + len(buffer)
    for index in range(pending, len(spans)):
        start, end = spans[index]
        if start < available:
            yield index, buffer[start - buffer_start:min(end, available) - buffer_start].copy()


def stitch_segments(pieces: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """Join per-window segment outputs ``(start_segment, (S, K))`` into one ``(S_total, K)``.

    Where windows overlap, each keeps the half of the overlap nearer its centre, so every
    kept value is at least half an overlap away from a window edge (where the networks'
    smoothing sees zero padding).
    """
    if len(pieces) == 1:
        return pieces[0][1]
    out = []
    for i, (start, seg) in enumerate(pieces):
        own_from = start
        if i > 0:
            prev_start, prev = pieces[i - 1]
            own_from = (start + prev_start + len(prev)) // 2
        own_to = start + len(seg)
        if i + 1 < len(pieces):
            next_start = pieces[i + 1][0]
            own_to = (next_start + start + len(seg)) // 2
        out.append(seg[own_from - start:own_to - start])
    return np.concatenate(out)
