"""Sound event detection on frames that arrive over time, equal to :func:`~panns_infer.events.detect_events`.

:class:`EventTracker` takes framewise probabilities a few rows at a time and returns each
event once, as soon as nothing that comes later can change it: the same events, times and
scores that :func:`~panns_infer.events.detect_events` finds on all the rows at once, with the
same options. What needs to see ahead is waited for:

* the median filter (``median_filter=``): a frame's filtered value is known once half the
  filter's width of later frames has arrived (at the end, the last frame is repeated, as
  offline);
* hysteresis: an event closes at the first frame below the offset threshold;
* gap merging (``min_gap=``): a closed event is held until ``min_gap`` seconds of frames have
  passed without a new onset of its class (a new onset merges into it, as offline);
* the duration filter (``min_duration=``) then applies to the settled event.

Memory is a few numbers per class, plus the filter's width in frames: an event that goes on
for an hour costs no more than one that lasts a second.

>>> import numpy as np
>>> p = np.zeros((10, 1), dtype=np.float32)
>>> p[2:5, 0] = 0.9
>>> tracker = EventTracker(["Dog"], 0.1)
>>> [tracker.push(p[i:i + 1]) for i in range(4)]
[[], [], [], []]
>>> tracker.push(p[4:7])
[Event(label='Dog', onset=0.2, offset=0.5, score=0.8999999761581421)]
>>> tracker.finish()
[]
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from .errors import InvalidArgumentError
from .events import (
    DEFAULT_THRESHOLD,
    Event,
    Thresholds,
    _check_seconds,
    _median_filter,
    _median_width,
    _per_class,
    _select_classes,
)

__all__ = ["EventTracker"]

_TIME_DECIMALS = 6
_EPS = 1e-9  # as in events.py: tolerance of the min_gap and min_duration comparisons


class EventTracker:
    """Online hysteresis event detection (see the module docstring).

    Args:
        class_names: the name of each column of the rows pushed.
        frame_hop: seconds between two frames.
        threshold, offset_threshold, median_filter, min_duration, min_gap, classes: as in
            :func:`~panns_infer.events.detect_events` (``duration`` has no meaning for a
            stream: an event open when the stream ends closes at its last frame).
        time_offset: seconds added to every onset and offset.

    >>> EventTracker(["Dog"], 0.01, threshold=2.0)
    Traceback (most recent call last):
    ...
    panns_infer.errors.InvalidArgumentError: threshold must be a number in [0, 1], got 2.0
    """

    def __init__(self, class_names: Sequence[str], frame_hop: float, *,
                 threshold: Thresholds = DEFAULT_THRESHOLD, offset_threshold: Optional[Thresholds] = None,
                 median_filter: Optional[float] = None, min_duration: float = 0.0, min_gap: float = 0.0,
                 classes: Optional[Union[str, Sequence[str]]] = None, time_offset: float = 0.0) -> None:
        names = list(class_names)
        self.hop = _check_seconds(frame_hop, "frame_hop", positive=True)
        self.min_duration = _check_seconds(min_duration, "min_duration")
        self.min_gap = _check_seconds(min_gap, "min_gap")
        self.width = _median_width(median_filter, self.hop)
        index_of: dict = {}
        for i, name in enumerate(names):
            index_of.setdefault(name, i)
        on = _per_class(threshold, "threshold", names, index_of, np.full(len(names), DEFAULT_THRESHOLD))
        off = on if offset_threshold is None else _per_class(offset_threshold, "offset_threshold", names,
                                                             index_of, on)
        self.columns = _select_classes(classes, names, index_of)
        for c in self.columns:
            if off[c] > on[c]:
                raise InvalidArgumentError(
                    f"offset_threshold must not exceed the onset threshold, but for class {names[c]!r} it is "
                    f"{off[c]:g} > {on[c]:g}; lower offset_threshold or raise threshold")
        self.names = [names[c] for c in self.columns]
        self._on, self._off = on[self.columns], off[self.columns]
        self.time_offset = float(time_offset)
        n = len(self.columns)
        self._raw: Optional[np.ndarray] = None  # unfiltered frames still needed by the median filter
        self._raw_start = 0                     # frame index of self._raw[0] (may be negative: padding)
        self._received = 0                      # raw frames pushed
        self._t = 0                             # next frame to classify
        self._open = np.zeros(n, dtype=bool)
        self._start = np.zeros(n, dtype=np.int64)
        self._score = np.zeros(n)
        self._pending = np.zeros(n, dtype=bool)  # closed, but a later onset may still merge into it
        self._p_start = np.zeros(n, dtype=np.int64)
        self._p_end = np.zeros(n, dtype=np.int64)
        self._p_score = np.zeros(n)
        self._gap_max = np.full(n, -np.inf)
        self._finished = False

    def push(self, rows: Any) -> list[Event]:
        """Add ``(frames, classes)`` rows (every class, in ``class_names`` order); return the events
        that became final, sorted by onset, then label, then offset."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] < (max(self.columns) + 1 if self.columns else 0):
            raise InvalidArgumentError(f"rows must be (frames, classes), got shape {rows.shape}")
        if self._finished:
            raise InvalidArgumentError("this EventTracker has finished; make a new one")
        if not len(rows) or not self.columns:
            self._received += len(rows)
            return []
        return self._classify(self._filtered(rows[:, self.columns], end=False))

    def finish(self) -> list[Event]:
        """End of the stream: classify the last frames, close open events at the last frame and
        return what became final."""
        if self._finished:
            return []
        out = self._classify(self._filtered(None, end=True)) if self.columns and self._received else []
        self._finished = True
        last = self._t
        closing = self._open.copy()
        self._open[:] = False
        out += self._settle(self._pending, self._p_start, self._p_end, self._p_score)
        self._pending[:] = False
        out += self._settle(closing, self._start, np.full(len(closing), last), self._score)
        return _sorted(out)

    # -- internals -------------------------------------------------------------------------------

    def _filtered(self, rows: Optional[np.ndarray], *, end: bool) -> np.ndarray:
        """Median-filtered frames from ``self._t`` on, as far as they are final."""
        half = self.width // 2
        if rows is not None:
            if self._raw is None:  # offline pads the start by repeating the first frame
                self._raw = np.concatenate([np.repeat(rows[:1], half, axis=0), rows]) if half else rows
                self._raw_start = -half
            else:
                self._raw = np.concatenate([self._raw, rows])
            self._received += len(rows)
        if self._raw is None:
            return np.zeros((0, len(self.columns)), dtype=np.float32)
        if self.width <= 1:
            out, self._raw, self._raw_start = self._raw, self._raw[:0], self._received
            return out
        raw = self._raw
        if end:
            raw = np.concatenate([raw, np.repeat(raw[-1:], half, axis=0)])
        ready = len(raw) - 2 * half  # frames whose whole filter window is there
        if ready <= 0:
            return raw[:0]
        out = _median_filter(raw, self.width)[half:half + ready]
        keep_from = ready  # the next frame to filter needs raw[ready - half + half ...]: keep 2*half before it
        self._raw = self._raw[keep_from:]
        self._raw_start += keep_from
        return out

    def _classify(self, p: np.ndarray) -> list[Event]:
        out: list[Event] = []
        if not len(p):
            return out
        on_all = p >= self._on.astype(p.dtype)   # compared in the probabilities' dtype, as offline
        off_all = p >= self._off.astype(p.dtype)
        same = np.zeros(len(p), dtype=bool)  # a row equal to the one before changes nothing (no pending gap)
        if len(p) > 1:
            same[1:] = (p[1:] == p[:-1]).all(axis=1)
        for i in range(len(p)):
            if same[i] and not self._pending.any():
                continue
            t = self._t + i
            row, on, off = p[i], on_all[i], off_all[i]
            closing = self._open & ~off
            going = self._open & off
            self._score[going] = np.maximum(self._score[going], row[going])
            if closing.any():
                self._open[closing] = False
                self._pending[closing] = True
                self._p_start[closing] = self._start[closing]
                self._p_end[closing] = t
                self._p_score[closing] = self._score[closing]
                self._gap_max[closing] = row[closing]
            starting = ~self._open & on
            waiting = self._pending & ~closing
            if waiting.any():
                merge = starting & waiting
                if merge.any():  # a new onset close enough to a closed event of its class continues it
                    self._start[merge] = self._p_start[merge]
                    self._score[merge] = np.maximum(np.maximum(self._p_score[merge], self._gap_max[merge]),
                                                    row[merge])
                    self._pending[merge] = False
                    self._open[merge] = True
                gap = waiting & ~merge
                self._gap_max[gap] = np.maximum(self._gap_max[gap], row[gap])
                starting &= ~merge
            if starting.any():
                self._open[starting] = True
                self._start[starting] = t
                self._score[starting] = row[starting]
            if self._pending.any():  # an onset at t + 1 or later can no longer merge: settled
                free = self._pending & ~((t + 1 - self._p_end) * self.hop < self.min_gap - _EPS)
                if free.any():
                    out += self._settle(free, self._p_start, self._p_end, self._p_score)
                    self._pending[free] = False
        self._t += len(p)
        return _sorted(out)

    def _settle(self, which: np.ndarray, starts: np.ndarray, ends: np.ndarray, scores: np.ndarray) -> list[Event]:
        idx = np.flatnonzero(which)
        if not len(idx):
            return []
        onsets = np.round(starts[idx] * self.hop, _TIME_DECIMALS)
        offsets = np.round(ends[idx] * self.hop, _TIME_DECIMALS)
        keep = np.ones(len(idx), dtype=bool)
        if self.min_duration > 0:
            keep &= (offsets - onsets) >= self.min_duration - _EPS
        events = []
        for k, on_s, off_s, kept in zip(idx, onsets, offsets, keep):
            if not kept:
                continue
            if self.time_offset:
                on_s, off_s = round(self.time_offset + on_s, _TIME_DECIMALS), round(self.time_offset + off_s,
                                                                                   _TIME_DECIMALS)
            events.append(Event(self.names[k], float(on_s), float(off_s), float(scores[k])))
        return events


def _sorted(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.onset, e.label, e.offset))
