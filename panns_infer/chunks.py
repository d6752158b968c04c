"""Exact inference on long inputs: overlapping chunks whose kept steps equal the whole input's.

Every network is local in time until its global pooling (:meth:`PannsModel.step_outputs`),
and each step of its final time axis depends only on a bounded span of input samples
(:meth:`PannsModel.time_reach`). So a long input is cut into chunks that

* start on a multiple of the final step (``step`` samples: 10 240 for Cnn14 at 32 kHz),
  so that every stride and pool of the chunk lines up with the whole input's;
* keep ``core`` samples' worth of steps, and carry ``margin`` samples of real context on each
  side (at least the receptive field), which are computed and thrown away;
* see the reference's padding only where the recording really starts and ends (the STFT's
  reflection, the zero padding to a minimum or valid length).

The kept steps, concatenated, are the whole input's per-step outputs (to float32 rounding);
:class:`StepAssembler` pools them piece by piece (:class:`~panns_infer.models.blocks.GlobalPool`)
and keeps the decision-level models' segments, so memory depends on the chunk size, not on
the input's length. The work is ``(core + 2 * margin) / core`` of the input's.

>>> plan = ChunkPlan(step=10, core=30, margin=10)
>>> [(c.start, c.start + len(c.samples), c.keep_from, c.keep_to, c.last)
...  for c in iter_chunks([np.zeros(95, np.float32)], plan)]
[(0, 40, 0, 3, False), (20, 70, 1, 4, False), (50, 95, 1, None, True)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np
import torch

from .models import PannsModel
from .models.blocks import GlobalPool

__all__ = ["ChunkPlan", "Chunk", "iter_chunks", "ChunkCutter", "StepAssembler"]


@dataclass(frozen=True)
class ChunkPlan:
    """How a long input is cut.

    Attributes:
        step: samples per step of the network's final time axis; chunk starts, ``core`` and
            ``margin`` are multiples of it.
        core: samples whose steps each chunk keeps.
        margin: context in samples on each side of the kept steps (at least the network's
            reach).
    """

    step: int
    core: int
    margin: int

    @classmethod
    def for_model(cls, model: PannsModel, core_samples: int) -> ChunkPlan:
        """The plan for ``model``, keeping about ``core_samples`` per chunk (rounded down to whole
        steps, at least one).

        >>> from panns_infer.models import build_model
        >>> ChunkPlan.for_model(build_model("Cnn14"), 30 * 32000)
        ChunkPlan(step=10240, core=952320, margin=40960)
        """
        reach = model.time_reach()
        step = reach.jump
        margin = max(reach.margin, -(-model.min_samples // step) * step)
        return cls(step, max(step, core_samples // step * step), margin)

    @property
    def work(self) -> float:
        """Network work per input sample on a long input (1.0 would be no overlap)."""
        return (self.core + 2 * self.margin) / self.core


@dataclass
class Chunk:
    """One network input cut from a long recording.

    Attributes:
        start: index of ``samples[0]`` in the recording.
        samples: the chunk.
        keep_from: first step of the chunk's output that belongs to the result.
        keep_to: the step after the last one kept (``None``: to the end).
        last: it ends where the recording ends (so the network's end padding applies).
    """

    start: int
    samples: np.ndarray
    keep_from: int
    keep_to: Optional[int]
    last: bool


def iter_chunks(blocks: Iterable[np.ndarray], plan: ChunkPlan) -> Iterator[Chunk]:
    """Cut a stream of sample blocks into chunks, as soon as the stream covers each one.

    Only the samples a pending chunk needs are kept. An input no longer than one chunk is one
    chunk, the whole input; an empty stream gives none.
    """
    cutter = ChunkCutter(plan)
    for block in blocks:
        yield from cutter.push(block)
    yield from cutter.finish()


class ChunkCutter:
    """:func:`iter_chunks` as pushed samples arrive: each chunk as soon as the samples its kept
    steps need are there (a live stream's steps become final then).

    A chunk keeping the steps of ``[kept, kept + core)`` is interior, cut without the end
    padding, once ``kept + core + margin`` samples have arrived: its kept steps read no sample
    beyond, so whatever follows cannot change them (with no margin, one sample past them is
    awaited, so that a last chunk always remains). When the recording ends, :meth:`finish`
    gives the last chunk, the rest of the recording with ``margin`` of context before it, cut
    where the network's end padding applies.

    >>> cutter = ChunkCutter(ChunkPlan(step=10, core=30, margin=10))
    >>> [(c.start, len(c.samples)) for c in cutter.push(np.zeros(39, np.float32))]
    []
    >>> [(c.start, len(c.samples), c.keep_from, c.keep_to) for c in cutter.push(np.zeros(1, np.float32))]
    [(0, 40, 0, 3)]
    >>> [(c.start, len(c.samples), c.keep_from, c.keep_to, c.last) for c in cutter.finish()]
    [(20, 20, 1, None, True)]
    """

    def __init__(self, plan: ChunkPlan) -> None:
        self.plan = plan
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0
        self._pieces: list[np.ndarray] = []  # pushed, not yet joined to the buffer
        self._received = 0
        self.kept = 0  # the next step to produce starts at this sample
        self._finished = False

    @property
    def received(self) -> int:
        """Samples pushed so far."""
        return self._received

    @property
    def next_due(self) -> int:
        """The number of samples received at which the next interior chunk is cut."""
        return self.kept + self.plan.core + max(self.plan.margin, 1)

    def push(self, block: np.ndarray) -> list[Chunk]:
        """Add samples; return the chunks whose kept steps became final."""
        if self._finished:
            raise ValueError("this ChunkCutter has finished")
        if len(block):
            self._pieces.append(np.asarray(block, dtype=np.float32))
            self._received += len(block)
        out: list[Chunk] = []
        if self._received < self.next_due:
            return out
        self._join()
        step, core, margin = self.plan.step, self.plan.core, self.plan.margin
        while self._received >= self.next_due:
            kept = self.kept
            start = max(0, kept - margin)
            out.append(Chunk(start, self._slice(start, kept + core + margin),
                             (kept - start) // step, (kept - start + core) // step, False))
            self.kept = kept + core
            drop = max(0, self.kept - margin) - self._buffer_start
            self._buffer, self._buffer_start = self._buffer[drop:], self._buffer_start + drop
        return out

    def finish(self) -> list[Chunk]:
        """The recording ended: the last chunk (none if every sample's steps were given)."""
        if self._finished:
            return []
        self._finished = True
        self._join()
        if self._received <= self.kept:
            return []
        start = max(0, self.kept - self.plan.margin)
        return [Chunk(start, self._slice(start, self._received), (self.kept - start) // self.plan.step, None, True)]

    def _join(self) -> None:
        if self._pieces:
            self._buffer = np.concatenate([self._buffer, *self._pieces])
            self._pieces = []

    def _slice(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._buffer_start:end - self._buffer_start].copy()


class StepAssembler:
    """Pools the kept steps of consecutive chunks and keeps the segments of decision-level
    models; :meth:`finish` gives what the network's forward pass gives for the whole input.

    Args:
        model: the network (its ``head`` and ``finish``).
        outputs: which outputs are wanted (``clipwise_output``, ``embedding``,
            ``segmentwise_output``).
    """

    def __init__(self, model: PannsModel, outputs: Iterable[str]) -> None:
        self.model = model
        self.outputs = tuple(outputs)
        self.pool = GlobalPool(model.head, dtype=torch.float64)
        self.segments: list[np.ndarray] = []

    def add(self, steps: dict[str, torch.Tensor]) -> None:
        """Steps ``(1, S, D)`` kept from the next chunk."""
        self.pool.update(steps)
        if "segmentwise_output" in self.outputs:
            self.segments.append(steps["segmentwise_output"][0].float().cpu().numpy())

    def finish(self) -> dict[str, np.ndarray]:
        pooled = {k: v.float() for k, v in self.pool.result().items()}
        with torch.inference_mode():
            out = self.model.finish(pooled)
        result = {k: out[k][0].float().cpu().numpy() for k in self.outputs if k in out}
        if "segmentwise_output" in self.outputs:
            result["segmentwise_output"] = np.concatenate(self.segments)
        return result
