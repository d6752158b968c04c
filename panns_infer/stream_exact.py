"""Live audio in exact chunks: framewise rows and tags that are final, equal to the whole recording's.

Every network is local in time up to its global pooling, and each step of its final time
axis (0.32 s for Cnn14) depends only on the samples within the receptive-field margin of it
(:meth:`~panns_infer.models.PannsModel.time_reach`; 1.6 s for the decision-level Cnn14s).
:class:`ExactRun` cuts the samples received so far into the chunks exact inference uses
offline (:class:`~panns_infer.chunks.ChunkCutter`, with the live ``hop`` as the kept part):
every ``hop`` of input, it runs the network on the newest ``hop`` plus ``margin`` of real
audio on each side (the STFT's reflection only at the recording's true start), and the steps
it keeps are final: no later sample can change them. So

* each update brings the framewise rows that became final (decision-level checkpoints),
  ``margin + hop`` at most after their audio arrived (plus the compute time);
* its tags (and embedding) pool the final steps of the last ``window`` seconds with the
  network's own global pooling (running max and mean, the attention softmax), or, with
  ``window=None``, every step since the start: the running clip result of the recording;
* when the stream ends, the last chunk carries the network's end padding, and the rows
  emitted, concatenated, equal :meth:`AudioTagger.framewise <panns_infer.AudioTagger.framewise>`
  of the whole recording (to float32 rounding), as the final tags with ``window=None`` equal
  its :meth:`~panns_infer.AudioTagger.tag`;
* events (:class:`~panns_infer.online_events.EventTracker`) are detected on the final rows and
  reported once each, when they close.

The work is ``(hop + 2 * margin) / hop`` of the audio's length (4.3x for Cnn14_DecisionLevelMax
at the default hop of 0.96 s, against 10.4x for 10 s windows every 0.96 s). Memory is one
chunk of samples, the steps of one window and the event tracker's few numbers per class.

>>> from types import SimpleNamespace as NS
>>> from panns_infer.models import build_model
>>> plan = plan_exact_live(NS(model=build_model("Cnn14_DecisionLevelMax")), window=10.0, hop=1.0)
>>> plan.chunks, plan.window, plan.delay
(ChunkPlan(step=10240, core=30720, margin=51200), 31, 81920)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .chunks import Chunk, ChunkCutter, ChunkPlan, StepAssembler
from .engine import Engine
from .errors import InvalidArgumentError
from .events import Event
from .results import Tags, expand_segments
from .stream import LiveRunBase, StreamUpdate

__all__ = ["ExactLivePlan", "ExactRun", "plan_exact_live"]


@dataclass(frozen=True)
class ExactLivePlan:
    """Sample and step counts of an exact live run.

    Attributes:
        chunks: the chunk plan: ``core`` is the hop (whole steps of the network's final time
            axis), ``margin`` the receptive-field context on either side.
        window: steps pooled into each update's tags; ``None``: every step since the start.
    """

    chunks: ChunkPlan
    window: Optional[int]

    @property
    def hop(self) -> int:
        """Samples of input between updates."""
        return self.chunks.core

    @property
    def delay(self) -> int:
        """The most samples that arrive after a step's last sample before it is emitted."""
        return self.chunks.core + self.chunks.margin


def plan_exact_live(engine: Engine, *, window: Optional[float], hop: float) -> ExactLivePlan:
    """The exact live plan: ``hop`` rounded down to whole steps (at least one), ``window`` in
    steps (``None`` or ``math.inf``: every step since the start).

    >>> from types import SimpleNamespace as NS
    >>> from panns_infer.models import build_model
    >>> plan_exact_live(NS(model=build_model("Cnn14")), window=None, hop=0.1).chunks
    ChunkPlan(step=10240, core=10240, margin=40960)
    """
    if isinstance(hop, bool) or not isinstance(hop, (int, float)) or not math.isfinite(hop) or hop <= 0:
        raise InvalidArgumentError(f"hop must be a positive number of seconds, got {hop!r}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float))
                               or math.isnan(window) or window <= 0):
        raise InvalidArgumentError(f"window must be a positive number of seconds or None, got {window!r}")
    model = engine.model
    rate = model.sample_rate
    chunks = ChunkPlan.for_model(model, int(round(hop * rate)))
    steps = None if window is None or math.isinf(window) else max(1, int(round(window * rate / chunks.step)))
    return ExactLivePlan(chunks, steps)


class ExactRun(LiveRunBase):
    """Updates for one uninterrupted stretch of samples at the model's rate, in exact chunks.

    Args:
        engine: runs the network (:meth:`Engine.chunk_steps`).
        class_names: the labels.
        plan: hop, margin and tag window (:func:`plan_exact_live`).
        top_k: labels kept in each update's tags.
        embeddings: add the pooled embedding to each update (clip-level checkpoints).
        events: options of :class:`~panns_infer.online_events.EventTracker` (decision-level
            checkpoints), or ``None`` for no events.
        offset: stream time in seconds of the run's first sample.
    """

    def __init__(self, engine: Engine, class_names: Sequence[str], plan: ExactLivePlan, *, top_k: int = 10,
                 embeddings: bool = False, events: Optional[dict] = None, offset: float = 0.0) -> None:
        super().__init__(engine, class_names, top_k=top_k, events=events, offset=offset)
        self.plan = plan
        self.step = plan.chunks.step
        self.clip_outputs = ["clipwise_output"] + (["embedding"] if embeddings else [])
        self._cutter = ChunkCutter(plan.chunks)
        self._pending: deque[Chunk] = deque()  # cut, not yet run
        self._since_start = StepAssembler(engine.runner, self.clip_outputs) if plan.window is None else None
        self._recent: Optional[dict[str, torch.Tensor]] = None  # the steps of the tag window
        self._steps_out = 0                    # steps emitted
        self._frames_out = 0                   # framewise rows emitted
        self._last_segment: Optional[np.ndarray] = None  # the last segment row emitted

    @property
    def received(self) -> int:
        """Samples pushed so far."""
        return self._cutter.received

    def push(self, samples: np.ndarray) -> list[StreamUpdate]:
        """Add 1-D float32 samples; return the updates whose steps became final."""
        self._pending.extend(self._cutter.push(samples))
        self._run_pending()
        updates, self._outbox = self._outbox, []
        return updates

    def finish(self) -> list[StreamUpdate]:
        """The stream ended: the last chunk (with the end padding), the remaining rows, the open events."""
        if self._done:
            return []
        self._done = True
        self._pending.extend(self._cutter.finish())
        self._run_pending()
        updates, self._outbox = self._outbox, []
        if self.tracker is not None and (not updates or not updates[-1].final):
            found = self.tracker.finish()  # no last chunk: nothing arrived since the last interior one
            if found:
                updates.append(StreamUpdate(self._t(self.received), self._t(self.received), None, events=found,
                                            first_frame=self._frames_out, final=True))
        return updates

    # -- internals -------------------------------------------------------------------------------

    def _t(self, samples: int) -> float:
        return round(self.offset + samples / self.rate, 6)

    def _run_pending(self) -> None:
        """Run the chunks cut so far; a chunk leaves the queue once its update is in the outbox,
        so an interrupt inside the network loses none of them."""
        while self._pending:
            group = [self._pending[i] for i in range(min(len(self._pending), self.engine.chunks_per_pass))]
            for chunk, steps in zip(group, self.engine.chunk_steps(group)):
                self._outbox.append(self._update(chunk, steps))
                self._pending.popleft()

    def _update(self, chunk: Chunk, steps: dict[str, torch.Tensor]) -> StreamUpdate:
        steps = {k: v.float().clone() for k, v in steps.items()}
        self._steps_out += next(iter(steps.values())).shape[1]
        end = self.received if chunk.last else chunk.start + chunk.keep_to * self.step  # type: ignore[operator]
        rows, first = self._rows(steps, chunk.last) if self.sed else (None, self._frames_out)
        pooled, window_start = self._pooled(steps)
        tags = None if pooled is None else \
            Tags.from_probabilities(pooled["clipwise_output"], self.names, top_k=self.top_k)
        events: list[Event] = []
        if self.tracker is not None:
            events = self.tracker.push(rows) if rows is not None and len(rows) else []
            if chunk.last:
                events = sorted(events + self.tracker.finish(), key=lambda e: (e.onset, e.label, e.offset))
        return StreamUpdate(self._t(window_start), self._t(end), tags,
                            embedding=None if pooled is None else pooled.get("embedding"), framewise=rows,
                            frames_start=round(self.offset + first * self.frontend.frame_seconds, 6),
                            first_frame=first, events=events, final=chunk.last)

    def _rows(self, steps: dict[str, torch.Tensor], last: bool) -> tuple[np.ndarray, int]:
        """The chunk's framewise rows: each segment held for its frames; at the end, the rows of
        the recording's last frames (which repeat its last segment, as offline)."""
        first = self._frames_out
        segments = steps["segmentwise_output"][0].cpu().numpy()
        if not last:
            rows = np.repeat(segments, self.fps, axis=0)
        else:
            count = max(0, self.frontend.frames(self.received) - first)
            if len(segments):
                rows = expand_segments(segments, count, self.fps)
            elif self._last_segment is not None:
                rows = np.repeat(self._last_segment[None], count, axis=0)
            else:
                rows = np.zeros((0, len(self.names)), dtype=np.float32)
        if len(segments):
            self._last_segment = segments[-1]
        self._frames_out += len(rows)
        return rows, first

    def _pooled(self, steps: dict[str, torch.Tensor]) -> tuple[Optional[dict], int]:
        """Clip outputs of the tag window's steps (or of every step so far), and its first sample."""
        if self._since_start is not None:
            if next(iter(steps.values())).shape[1]:
                self._since_start.add(steps)
            return (self._since_start.finish() if self._steps_out else None), 0
        assert self.plan.window is not None
        recent = steps if self._recent is None else {k: torch.cat([self._recent[k], v], dim=1)
                                                     for k, v in steps.items()}
        self._recent = {k: v[:, -self.plan.window:] for k, v in recent.items()}
        held = next(iter(self._recent.values())).shape[1]
        if not held:
            return None, 0
        assembler = StepAssembler(self.engine.runner, self.clip_outputs)
        assembler.add(self._recent)
        return assembler.finish(), (self._steps_out - held) * self.step
