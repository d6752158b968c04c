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

__all__ = ["ChunkPlan", "Chunk", "iter_chunks", "StepAssembler"]


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
    step, core, margin = plan.step, plan.core, plan.margin
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start = 0
    kept = 0  # the next step to produce starts at this sample
    for block in blocks:
        buffer = np.concatenate([buffer, np.asarray(block, dtype=np.float32)])
        # a chunk is interior only if the recording goes on past its right margin
        while buffer_start + len(buffer) > kept + core + margin:
            start = max(0, kept - margin)
            yield Chunk(start, buffer[start - buffer_start:kept + core + margin - buffer_start].copy(),
                        (kept - start) // step, (kept - start + core) // step, False)
            kept += core
            drop = max(0, kept - margin) - buffer_start
            buffer, buffer_start = buffer[drop:], buffer_start + drop
    end = buffer_start + len(buffer)
    if end > kept:
        start = max(0, kept - margin)
        yield Chunk(start, buffer[start - buffer_start:].copy(), (kept - start) // step, None, True)


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
