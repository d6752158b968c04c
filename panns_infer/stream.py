"""Live audio as windows (``mode="windows"``): tags, framewise rows and events of a stream,
equal to the windowed offline results; the update record and the stream resampler, shared
with the exact mode (:mod:`panns_infer.stream_exact`, the default).

:class:`LiveRun` takes samples at the model's rate in chunks of any size and, every ``hop``
of input, runs the network on the latest window:

* before a whole window has arrived, on everything so far (``[0, end)``, as ``tag()`` would
  compute that prefix), then on ``[end - window, end)``: each update's tags are ``tag()`` of
  that slice of the signal;
* for decision-level checkpoints the hop is rounded down to whole segments (0.32 s) and the
  windows are the ones ``framewise()`` plans for the whole recording (same window and hop,
  run as windows), so their segment outputs stitch the same way. A window's rows are final
  once the next window has run (they keep the centre of each overlap); when the stream ends,
  the last window is planned as offline, from the recording's length, so *every* row, the
  tail included, equals ``framewise()`` of the whole recording;
* events (:class:`~panns_infer.online_events.EventTracker`) are detected on the final rows and
  reported once each, when they close; at the end open events close at the last frame.

Updates happen at fixed sample positions, and the stream resampler (:class:`StreamResampler`)
gives bit for bit the samples of resampling the whole recording at once, so results never
depend on how the input was chunked.

Memory is bounded by the window: a run keeps at most ``window + hop`` samples, one window's
segment outputs and the event tracker's few numbers per class.

>>> import numpy as np
>>> from panns_infer import AudioTagger
>>> tagger = AudioTagger("Cnn14")                                                 # doctest: +SKIP
>>> chunks = (np.zeros(4800, dtype=np.float32) for _ in range(100))
>>> [(u.start, u.end) for u in tagger.stream(chunks, sample_rate=48000, hop=5.0)]  # doctest: +SKIP
[(0.0, 5.0), (0.0, 10.0), (0.0, 10.0)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .engine import Engine
from .errors import InvalidArgumentError
from .events import Event
from .online_events import EventTracker
from .resampling import StreamResampler
from .results import Tags, expand_segments

__all__ = ["StreamUpdate", "LiveRun", "LivePlan", "StreamResampler", "plan_live"]


@dataclass(frozen=True, repr=False)
class StreamUpdate:
    """What one hop of a stream brought.

    Attributes:
        start: start of the window tagged, in seconds of stream time.
        end: end of the window tagged: the stream position of this update (windows), the end
            of the rows that became final (exact chunks; the stream's end in the final update).
        tags: the window's tags (``None`` in an update that only flushes rows and events).
        embedding: the window's embedding, when asked for (clip-level checkpoints).
        framewise: frame rows ``(frames, classes)`` that became final (decision-level
            checkpoints; an empty array when none did).
        frames_start: stream time in seconds of ``framewise[0]`` (frame ``t`` of a run sits at
            ``run start + t * frame_hop``).
        first_frame: index of ``framewise[0]`` among the run's frames.
        events: the events that closed, each reported once.
        skipped: ``(start, end)`` seconds of audio left out just before this update because the
            model fell behind (see ``max_lag``), else ``None``.
        final: ``True`` for the updates of the stream's end.
    """

    start: float
    end: float
    tags: Optional[Tags]
    embedding: Optional[np.ndarray] = None
    framewise: Optional[np.ndarray] = None
    frames_start: float = 0.0
    first_frame: int = 0
    events: list = field(default_factory=list)
    skipped: Optional[tuple] = None
    final: bool = False

    def to_dict(self, *, full: bool = False) -> dict:
        """JSON-ready dict: ``start``, ``end``, ``labels``, ``scores`` (and with ``full`` every
        class's ``probabilities``); events are reported separately (``Event.to_dict``)."""
        out: dict = {"start": self.start, "end": self.end}
        if self.tags is not None:
            tags = self.tags.to_dict(full=full)
            tags.pop("source", None)
            out.update(tags)
        if self.skipped is not None:
            out["skipped"] = list(self.skipped)
        if self.final:
            out["final"] = True
        return out

    def __repr__(self) -> str:
        shown = "" if self.tags is None else f", {self.tags!r}"
        return (f"StreamUpdate({self.start:.2f}-{self.end:.2f} s{shown}, events={len(self.events)}"
                f"{', final' if self.final else ''})")


@dataclass(frozen=True)
class LivePlan:
    """Sample counts of a live run: the window, the hop between updates, the segment grid."""

    window: int
    hop: int
    segment: int


def plan_live(engine: Engine, *, window: float, hop: float) -> LivePlan:
    """Window and hop in samples at the model's rate.

    The window is at least the network's shortest input. For decision-level checkpoints the
    hop is rounded down to whole segments (as offline windows are), at least one segment.

    >>> from types import SimpleNamespace as NS
    >>> cfg = NS(hop_size=320, sample_rate=32000)
    >>> eng = NS(model=NS(sample_rate=32000, min_samples=1, frames_per_segment=32, has_framewise=True,
    ...                   frontend_config=cfg))
    >>> plan_live(eng, window=10.0, hop=1.0)
    LivePlan(window=320000, hop=30720, segment=10240)
    """
    for name, value in (("window", window), ("hop", hop)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise InvalidArgumentError(f"{name} must be a positive number of seconds, got {value!r}")
    if hop > window:
        raise InvalidArgumentError(f"hop must not exceed the window, got hop={hop!r} > window={window!r}")
    model = engine.model
    rate = model.sample_rate
    segment = model.frontend_config.hop_size * model.frames_per_segment
    win = max(int(round(window * rate)), model.min_samples)
    step = max(1, int(round(hop * rate)))
    if model.has_framewise:
        step = max(segment, step // segment * segment)
    return LivePlan(win, step, segment)


class LiveRunBase:
    """What every live run holds: the engine and labels, the output options, the event tracker,
    and the updates computed but not yet returned. The windowed :class:`LiveRun` and the exact
    :class:`~panns_infer.stream_exact.ExactRun` build on it, each with its own plan."""

    def __init__(self, engine: Engine, class_names: Sequence[str], *, top_k: int, events: Optional[dict],
                 offset: float) -> None:
        self.engine, self.names = engine, list(class_names)
        model = engine.model
        self.rate = model.sample_rate
        self.top_k, self.offset = top_k, offset
        self.sed = model.has_framewise
        self.fps = model.frames_per_segment
        self.frontend = model.frontend_config
        self.tracker = EventTracker(self.names, self.frontend.frame_seconds, time_offset=offset, **events) \
            if events is not None and self.sed else None
        self._outbox: list[StreamUpdate] = []  # computed, not yet returned
        self._done = False


class LiveRun(LiveRunBase):
    """Updates for one uninterrupted stretch of samples at the model's rate.

    Args:
        engine: runs the network.
        class_names: the labels.
        plan: window and hop (:func:`plan_live`).
        top_k: labels kept in each update's tags.
        embeddings: add each window's embedding (clip-level checkpoints).
        events: options of :class:`~panns_infer.online_events.EventTracker` (decision-level
            checkpoints), or ``None`` for no events.
        offset: stream time in seconds of the run's first sample.
    """

    def __init__(self, engine: Engine, class_names: Sequence[str], plan: LivePlan, *, top_k: int = 10,
                 embeddings: bool = False, events: Optional[dict] = None, offset: float = 0.0) -> None:
        super().__init__(engine, class_names, top_k=top_k, events=events, offset=offset)
        self.plan = plan
        self.outputs = ["clipwise_output"] + (["segmentwise_output"] if self.sed else []) + \
            (["embedding"] if embeddings else [])
        self.frame_hop = self.frontend.frame_seconds
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0          # sample index of self._buffer[0]
        self._chunks: list = []          # pushed, not yet in self._buffer
        self._received = 0               # samples pushed
        self._next_end = min(plan.hop, plan.window)
        self._last_end = 0               # end of the last update
        self._windows = 0                # full windows run
        self._window_segments: Optional[np.ndarray] = None  # the last full window's segment outputs
        self._window_start = 0
        self._own_from = 0               # first segment of that window not yet emitted
        self._frames_out = 0             # frames emitted

    @property
    def received(self) -> int:
        """Samples pushed so far."""
        return self._received

    def push(self, samples: np.ndarray) -> list[StreamUpdate]:
        """Add 1-D float32 samples; return the updates that became due."""
        if len(samples):
            self._chunks.append(samples)
            self._received += len(samples)
        while self._received >= self._next_end:  # kept in an outbox: an interrupt loses none of them
            self._outbox.append(self._update(self._next_end))
        updates, self._outbox = self._outbox, []
        return updates

    def finish(self) -> list[StreamUpdate]:
        """The stream ended: the last (partial) hop's window, the remaining rows, the open events."""
        if self._done:
            return []
        pending, self._outbox = self._outbox, []  # what an interrupted push computed
        while self.sed and self._received >= self._next_end:  # windows it did not: the tail plan needs them
            pending.append(self._update(self._next_end))
        self._done = True
        n = self._received
        self._gather()
        tags_update = self._update(n, final=True) if n > self._last_end else None
        rows, first = self._tail_rows(n) if self.sed else (None, self._frames_out)
        events = self._events(rows, end=True)
        if tags_update is None:
            if rows is None and not events:
                return pending
            return pending + [StreamUpdate(self._t(max(0, n - self.plan.window)), self._t(n), None, framewise=rows,
                                 frames_start=self._frame_time(first), first_frame=first, events=events, final=True)]
        return pending + [_with(tags_update, rows, first, self._frame_time(first), events)]

    # -- internals -------------------------------------------------------------------------------

    def _t(self, samples: int) -> float:
        return round(self.offset + samples / self.rate, 6)

    def _frame_time(self, frame: int) -> float:
        return round(self.offset + frame * self.frame_hop, 6)

    def _gather(self) -> None:
        if self._chunks:
            self._buffer = np.concatenate([self._buffer, *self._chunks])
            self._chunks = []

    def _slice(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._buffer_start:end - self._buffer_start]

    def _run(self, start: int, end: int) -> dict:
        return self.engine.forward([(0, self._slice(start, end))], self.outputs)[0]

    def _update(self, end: int, *, final: bool = False) -> StreamUpdate:
        plan = self.plan
        self._gather()
        start = max(0, end - plan.window)
        out = self._run(start, end)
        tags = Tags.from_probabilities(out["clipwise_output"], self.names, top_k=self.top_k)
        rows, first = None, self._frames_out
        if not final:
            if end - start == plan.window and self.sed:
                rows, first = self._new_window(start, out["segmentwise_output"])
            elif self.sed:
                rows = np.zeros((0, len(self.names)), dtype=np.float32)
            self._next_end = end + plan.hop if end >= plan.window else min(end + plan.hop, plan.window)
            keep_from = max(0, self._next_end - plan.window - plan.hop)  # what the end may still need
            if keep_from > self._buffer_start:
                self._buffer = self._buffer[keep_from - self._buffer_start:]
                self._buffer_start = keep_from
        self._last_end = end
        events = self._events(rows, end=False) if not final else []
        return StreamUpdate(self._t(start), self._t(end), tags, embedding=out.get("embedding"), framewise=rows,
                            frames_start=self._frame_time(first), first_frame=first, events=events, final=final)

    def _new_window(self, start: int, segments: np.ndarray) -> tuple[np.ndarray, int]:
        """A full window ran: the previous window's rows up to the middle of the overlap are final."""
        first = self._frames_out
        rows = np.zeros((0, len(self.names)), dtype=np.float32)
        if self._window_segments is not None:
            a_prev, prev = self._window_start // self.plan.segment, self._window_segments
            own_to = (start // self.plan.segment + a_prev + len(prev)) // 2
            rows = self._emit(prev[self._own_from - a_prev:own_to - a_prev])
            self._own_from = own_to
        self._window_segments, self._window_start = segments, start
        self._windows += 1
        return rows, first

    def _emit(self, segments: np.ndarray) -> np.ndarray:
        rows = np.repeat(segments, self.fps, axis=0)
        self._frames_out += len(rows)
        return rows

    def _tail_rows(self, n: int) -> tuple[np.ndarray, int]:
        """The rows from the last emitted one to the end, planned as ``framewise()`` plans them."""
        first = self._frames_out
        seg, plan = self.plan.segment, self.plan
        num_frames = self.frontend.frames(n)
        if n == 0:
            return np.zeros((0, len(self.names)), dtype=np.float32), first
        pieces: list = []
        if self._window_segments is None:  # never a whole window: offline runs it whole
            segments = self._run(0, n)["segmentwise_output"]
            pieces.append(segments)
        else:
            s, a = self._window_start, self._window_start // seg
            last = (n - plan.window) // seg * seg if n > plan.window else 0
            if last == s:  # the last window starts where the last regular one did: it reaches to the end
                segments = self._run(s, n)["segmentwise_output"]
                pieces.append(segments[self._own_from - a:])
            else:
                prev = self._window_segments
                own_to = (last // seg + a + len(prev)) // 2
                pieces.append(prev[self._own_from - a:own_to - a])
                segments = self._run(last, n)["segmentwise_output"]
                pieces.append(segments[own_to - last // seg:])
        tail = np.concatenate(pieces) if pieces else np.zeros((0, len(self.names)), dtype=np.float32)
        count = max(0, num_frames - first)
        if len(tail) == 0:
            return np.zeros((0, len(self.names)), dtype=np.float32), first
        rows = expand_segments(tail, count, self.fps)
        self._frames_out += len(rows)
        return rows, first

    def _events(self, rows: Optional[np.ndarray], *, end: bool) -> list[Event]:
        if self.tracker is None:
            return []
        found = self.tracker.push(rows) if rows is not None and len(rows) else []
        if end:
            found = sorted(found + self.tracker.finish(), key=lambda e: (e.onset, e.label, e.offset))
        return found


def _with(update: StreamUpdate, rows: Optional[np.ndarray], first: int, first_time: float,
          events: list) -> StreamUpdate:
    return StreamUpdate(update.start, update.end, update.tags, embedding=update.embedding, framewise=rows,
                        frames_start=first_time, first_frame=first, events=events, skipped=update.skipped,
                        final=True)
