"""Running a network over many clips: grouping by length, batching, long recordings.

Rules that keep results exact:

* Clips are grouped by the length the network will see (after short-clip padding) and only
  equal lengths share a batch; nothing is padded to match another clip.
* A clip up to ``whole_up_to`` seconds runs whole, in one pass, as the reference runs it.
* By default (``window=None``) a longer clip runs in exact chunks (:mod:`panns_infer.chunks`):
  its outputs are the whole input's, to float32 rounding, at memory bounded by the chunk size.
* With ``window`` set, a longer clip runs as overlapping windows of that length instead
  (:mod:`panns_infer.windows`): clip outputs aggregate the windows (``"max"`` or ``"mean"``),
  segment outputs of decision-level models are stitched keeping each window's centre.
* Files are streamed block by block either way, so memory does not grow with their length.
"""

from __future__ import annotations

import ctypes
import functools
import math
import numbers
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .audio import Clip, probe_file
from .chunks import Chunk, ChunkPlan, StepAssembler, iter_chunks
from .errors import InvalidArgumentError
from .frontend import SpectrogramMethod, check_spectrogram
from .models import PannsModel
from .numerics import PRECISIONS, precision_scope
from .windows import iter_windows, plan_windows, read_blocks, stitch_segments

__all__ = ["LongFile", "Engine", "AGGREGATIONS", "PRECISIONS"]

AGGREGATIONS = ("max", "mean")
ProgressCallback = Callable[[float, float], None]


@dataclass(frozen=True)
class LongFile:
    """A file too long to run in one pass, decoded lazily (chunks or windows).

    Attributes:
        path: the file.
        num_samples: its length at the model's rate, from the header.
    """

    path: str
    num_samples: int

    @property
    def source(self) -> str:
        return self.path


Item = Union[Clip, LongFile]


class Engine:
    """Runs one model on clips and long files, batched, chunked or windowed, and exact.

    Args:
        model: the network (in eval mode, on ``device``).
        device: where batches are sent.
        batch_size: clips (or windows) per forward pass.
        window: ``None`` (default): every input gives the whole-input result, inputs longer
            than ``whole_up_to`` computed in exact chunks of about that length. A number:
            inputs longer than ``whole_up_to`` run as overlapping windows of this many
            seconds, aggregated (at least one final step of the network, 0.32 s for Cnn14).
        hop: seconds between window starts (rounded down to whole segments); default: half
            the window.
        whole_up_to: inputs up to this many seconds run whole in one pass (``math.inf``: every
            input); with windows, at least one window. Exact chunks keep this many seconds each.
        precision: ``"fp32"`` (exact), or on CUDA ``"tf32"``, ``"fp16"``, ``"bf16"``.
        optimize: on the CPU in ``fp32``, run batches through :func:`panns_infer.fast.optimize`'s
            module (same outputs to float32 rounding, faster) where the architecture has one.
            Its conv blocks are then released from ``model`` (moved to the meta device, so the
            weights are not held twice): ``model`` keeps describing the network and lends its
            front end and head, but cannot run on its own any more.
        spectrogram: how that faster module computes the power spectrogram: ``"reference"``
            (exact) or ``"fft"`` (faster, deviates on tonal audio; see :func:`panns_infer.fast.optimize`).
        aggregate: how windows' clip outputs combine (``"max"`` or ``"mean"``), the same rule for
            probabilities and embeddings; unused without windows.

    Raises:
        InvalidArgumentError: an option out of range, or windows that would leave samples out.
    """

    def __init__(self, model: PannsModel, device: torch.device, *, batch_size: int,
                 window: Optional[float], hop: Optional[float], whole_up_to: float = 30.0,
                 precision: str = "fp32", optimize: bool = True, spectrogram: SpectrogramMethod = "reference",
                 aggregate: str = "max") -> None:
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision != "fp32" and device.type != "cuda":
            raise InvalidArgumentError(f"precision={precision!r} needs a CUDA device; on {device} use 'fp32'")
        check_spectrogram(spectrogram)
        if aggregate not in AGGREGATIONS:
            raise InvalidArgumentError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
        self.model = model
        self.runner: PannsModel = model  # what batches run through
        if optimize and device.type == "cpu" and precision == "fp32":
            from .fast import optimize as optimize_model

            self.runner = optimize_model(model, release=True, spectrogram=spectrogram)
            _trim_heap()  # building it freed the original weights and many temporaries
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.aggregate = aggregate
        rate = model.sample_rate
        self.segment_samples = model.frontend_config.hop_size * model.frames_per_segment
        if isinstance(whole_up_to, bool) or not isinstance(whole_up_to, numbers.Real) or not whole_up_to >= 0:
            raise InvalidArgumentError(f"need whole_up_to >= 0 seconds, got {whole_up_to!r}")
        whole = None if math.isinf(whole_up_to) else int(round(whole_up_to * rate))
        self.plan: Optional[ChunkPlan] = None
        self.window: Optional[int]  # samples, None for exact whole-input results
        self.hop: Optional[int]
        self.whole: Optional[int]  # the longest input run in one pass, None for no limit
        if window is None:
            self.window = self.hop = None
            self.whole = whole
            if whole is not None:
                self.plan = ChunkPlan.for_model(model, whole)
        else:
            if isinstance(window, bool) or not isinstance(window, numbers.Real) or not window > 0 or (
                    hop is not None and not 0 < hop <= window):
                raise InvalidArgumentError(f"need window > 0 and 0 < hop <= window seconds, got "
                                           f"window={window!r}, hop={hop!r}")
            self.window = max(int(round(window * rate)), model.min_samples)
            hop_samples = int(round((window / 2 if hop is None else hop) * rate))
            self.hop = max(self.segment_samples, hop_samples // self.segment_samples * self.segment_samples)
            if self.hop > self.window:
                raise InvalidArgumentError(
                    f"window={window!r} s is shorter than one step of the window grid "
                    f"({self.segment_samples / rate:g} s: windows start on the network's segment grid), "
                    "so audio between windows would never reach the network; use window >= "
                    f"{self.segment_samples / rate:g} or window=None for exact whole-input results")
            self.whole = None if whole is None else max(self.window, whole)  # longest input run whole
        # chunks per forward pass: on the CPU one bounds memory; a GPU takes as many samples as
        # a batch of 10 s clips
        chunk = (self.plan.core + 2 * self.plan.margin) if self.plan else 1
        self.chunks_per_pass: int = 1 if device.type == "cpu" else max(1, batch_size * 10 * rate // chunk)

    # -- inputs --------------------------------------------------------------------------------

    def is_long(self, num_samples: int) -> bool:
        """Whether an input of this many samples runs in chunks or windows (not in one pass)."""
        return self.whole is not None and num_samples > self.whole

    def chunked(self, num_samples: int) -> bool:
        """Whether an input of this many samples runs in exact chunks."""
        return self.plan is not None and self.is_long(num_samples)

    def file_item(self, path: Union[str, os.PathLike]) -> Optional[LongFile]:
        """A :class:`LongFile` for a file too long for one pass, else ``None``."""
        if self.whole is None:
            return None
        frames, rate = probe_file(path)
        target = self.model.sample_rate
        num_samples = frames if rate == target else frames * target // rate
        return LongFile(os.fspath(path), num_samples) if self.is_long(num_samples) else None

    def spans(self, num_samples: int) -> list[tuple[int, int]]:
        """The windows of an input (one span, the whole input, unless it runs as windows)."""
        if self.window is None or self.hop is None or not self.is_long(num_samples):  # both or neither None
            return [(0, num_samples)]
        return plan_windows(num_samples, window=self.window, hop=self.hop, align=self.segment_samples)

    # -- running -------------------------------------------------------------------------------

    def forward(self, jobs: Sequence[tuple[Hashable, np.ndarray]], outputs: Sequence[str]) -> dict:
        """Run ``(key, samples)`` jobs grouped by padded length; return ``{key: {output: array}}``."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i, (_, samples) in enumerate(jobs):
            groups[self.model.target_length(len(samples))].append(i)
        results: dict = {}
        with torch.inference_mode(), precision_scope(self.device, self.precision) as scope:
            for length, members in groups.items():
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start:start + self.batch_size]
                    batch = np.zeros((len(chunk), length), dtype=np.float32)
                    for row, i in enumerate(chunk):
                        batch[row, :len(jobs[i][1])] = jobs[i][1]
                    tensor = torch.from_numpy(batch)
                    if self.device.type == "cuda":
                        tensor = tensor.pin_memory().to(self.device, non_blocking=True)
                    out = scope.run(self.runner, tensor)
                    arrays = {k: out[k].float().cpu().numpy() for k in outputs}
                    for row, i in enumerate(chunk):
                        results[jobs[i][0]] = {k: v[row] for k, v in arrays.items()}
        return results

    def run(self, items: Sequence[Item], outputs: Sequence[str], *, aggregate: Optional[str] = None,
            callback: Optional[ProgressCallback] = None) -> list[dict[str, Any]]:
        """Per-item outputs, in order.

        ``outputs`` names model outputs (``clipwise_output``, ``embedding``,
        ``segmentwise_output``; the last also adds ``num_frames``). Long items run in exact
        chunks, or as windows when the engine has a ``window``: then clip outputs are
        reduced with ``aggregate`` (default: the engine's) and segments are stitched.
        ``callback(seconds_done, seconds_total)`` is called after each batch.
        """
        aggregate = self.aggregate if aggregate is None else aggregate
        if aggregate not in AGGREGATIONS:
            raise InvalidArgumentError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
        rate = self.model.sample_rate
        total = sum(item.num_samples if isinstance(item, LongFile) else len(item.samples) for item in items)
        done = 0
        results: list[Optional[dict]] = [None] * len(items)
        whole = [(i, item.samples) for i, item in enumerate(items)
                 if isinstance(item, Clip) and not self.is_long(len(item.samples))]
        for i, out in self.forward(whole, outputs).items():
            results[i] = self._finish([(0, out)], outputs, len(items[i].samples), aggregate)
        done += sum(len(samples) for _, samples in whole)
        if callback and whole:
            callback(done / rate, total / rate)
        for i, item in enumerate(items):
            if results[i] is not None:
                continue

            def progress(end: int, _done: int = done) -> None:
                if callback:
                    callback((_done + end) / rate, total / rate)

            results[i], _ = self.run_long(item, outputs, aggregate=aggregate, progress=progress)
            done += item.num_samples if isinstance(item, LongFile) else len(item.samples)
        return results  # type: ignore[return-value]  # no None left: a long item has samples (probed)

    def run_long(self, item: Item, outputs: Sequence[str], *, aggregate: Optional[str] = None,
                 progress: Optional[Callable[[int], None]] = None) -> tuple[dict[str, np.ndarray], int]:
        """Outputs of one item too long for one pass, and the number of samples it held.

        ``progress(samples_done)`` is called after each pass. A file whose header promised
        audio it does not hold is read whole instead (what it holds is short).
        """
        aggregate = self.aggregate if aggregate is None else aggregate
        length = item.num_samples if isinstance(item, LongFile) else len(item.samples)
        if self.chunked(length):
            result, end = self._run_chunks(item, outputs, progress)
        else:
            pieces: list[tuple[int, dict]] = []
            end = 0
            for start, stop, out in self.over_spans(item, self.spans(length), outputs):
                pieces.append((start, out))
                end = stop
                if progress:
                    progress(end)
            result = self._finish(pieces, outputs, end, aggregate) if pieces else None
        if result is None:  # a header that promised audio the file does not hold
            from .audio import read_audio

            clip = read_audio(item.path, self.model.sample_rate)  # type: ignore[union-attr]  # a LongFile: a path
            return self.run([clip], outputs, aggregate=aggregate)[0], len(clip.samples)
        return result, end

    def _run_chunks(self, item: Item, outputs: Sequence[str],
                    progress: Optional[Callable[[int], None]]) -> tuple[Optional[dict], int]:
        """Exact chunked inference (:mod:`panns_infer.chunks`); ``(None, 0)`` for no samples."""
        assert self.plan is not None
        if isinstance(item, LongFile):
            blocks: Iterable[np.ndarray] = read_blocks(item.path, self.model.sample_rate)
        else:
            blocks = [item.samples]
        assembler = StepAssembler(self.runner, outputs)
        end = 0
        for group in _equal_length_groups(iter_chunks(blocks, self.plan), self.chunks_per_pass):
            for chunk, steps in zip(group, self.chunk_steps(group)):
                assembler.add(steps)
                end = chunk.start + len(chunk.samples)
            if isinstance(item, LongFile):
                _trim_heap()
            if progress:
                progress(end)
        if not end:
            return None, 0
        result: dict = assembler.finish()
        if "segmentwise_output" in outputs:
            result["num_frames"] = self.model.frontend_config.frames(end)
        return result, end

    def chunk_steps(self, chunks: Sequence[Chunk]) -> list[dict[str, torch.Tensor]]:
        """The kept steps ``(1, S, D)`` of each chunk (:meth:`PannsModel.step_outputs`), on the
        engine's device (where the network's head pools them).

        Chunks of one length run in one forward pass; a last chunk is padded as the whole
        input would be at its end.
        """
        out: list[dict[str, torch.Tensor]] = []
        with torch.inference_mode(), precision_scope(self.device, self.precision) as scope:
            for group in _equal_length_groups(chunks, len(chunks)):
                tensor = torch.from_numpy(np.stack([self._padded(chunk) for chunk in group])).to(self.device)
                steps = scope.run(self.runner.step_outputs, tensor)
                for row, chunk in enumerate(group):
                    out.append({k: v[row:row + 1, chunk.keep_from:chunk.keep_to] for k, v in steps.items()})
                del steps, tensor
        return out

    def _padded(self, chunk: Chunk) -> np.ndarray:
        """A chunk's samples, zero-padded where the recording ends as the whole input would be."""
        if not chunk.last:
            return chunk.samples
        end = chunk.start + len(chunk.samples)
        return np.pad(chunk.samples, (0, self.model.target_length(end) - end))

    def over_spans(self, item: Item, spans: Sequence[tuple[int, int]],
                   outputs: Sequence[str]) -> Iterator[tuple[int, int, dict]]:
        """Run the network on spans of one item, batched; yield ``(start, end, outputs)`` in
        order. A :class:`LongFile` is decoded as it goes; if it ends before the spans do, the
        last spans are cut short or left out."""
        if isinstance(item, LongFile):
            windows = iter_windows(read_blocks(item.path, self.model.sample_rate), spans)
        else:
            windows = ((k, item.samples[a:b]) for k, (a, b) in enumerate(spans))
        for batch in _batched(windows, self.batch_size):
            outs = self.forward(batch, outputs)
            if isinstance(item, LongFile):
                _trim_heap()
            for k, samples in batch:
                yield spans[k][0], spans[k][0] + len(samples), outs[k]

    def _finish(self, pieces: list[tuple[int, dict]], outputs: Sequence[str], num_samples: int,
                aggregate: str) -> dict[str, np.ndarray]:
        result: dict = {}
        reduce = np.max if aggregate == "max" else np.mean
        for key in outputs:
            if key == "segmentwise_output":
                segments = [(start // self.segment_samples, out[key]) for start, out in pieces]
                result[key] = stitch_segments(segments)
                result["num_frames"] = self.model.frontend_config.frames(num_samples)
            elif len(pieces) == 1:
                result[key] = pieces[0][1][key]
            else:
                result[key] = reduce(np.stack([out[key] for _, out in pieces]), axis=0).astype(np.float32)
        return result


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc only; a no-op elsewhere).

    Streaming a long file allocates and frees buffers of many sizes for hours; glibc keeps
    the freed space in fragmented arenas, and RSS crept from 0.7 to 2.5 GB over an hour of
    audio. Trimming after each batch keeps it flat (measured: 655 MB throughout).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _equal_length_groups(chunks: Iterable, size: int) -> Iterator[list]:
    """Consecutive chunks in groups of at most ``size`` that share one length."""
    group: list = []
    for chunk in chunks:
        if group and (len(group) == size or len(chunk.samples) != len(group[0].samples) or chunk.last):
            yield group
            group = []
        group.append(chunk)
    if group:
        yield group


def _batched(jobs: Iterable[tuple[int, np.ndarray]], size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    batch: list = []
    for job in jobs:
        batch.append(job)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
