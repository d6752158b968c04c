"""Driving a live stream: from a source to :class:`~panns_infer.stream.StreamUpdate` objects.

:func:`live_updates` picks the source's reader (:mod:`panns_infer.stream_sources`), resamples
to the model's rate, feeds a run (:class:`~panns_infer.stream_exact.ExactRun` in exact chunks,
or :class:`~panns_infer.stream.LiveRun` with windows), and handles what live
sources bring: a stall (``idle_timeout``), a model that falls behind (``max_lag``: the run ends,
the skipped span is reported, a new run starts on the newest audio), a failing source and
Ctrl-C (every complete hop and a final update first, then the error).
"""

from __future__ import annotations

import io
import logging
import os
import threading
from typing import Any, Generator, Iterator, Optional, Sequence, Union

import numpy as np

from .engine import Engine
from .errors import InvalidArgumentError, InvalidAudioError
from .online_events import EventTracker
from .stream import LivePlan, LiveRun, StreamResampler, StreamUpdate, plan_live
from .stream_exact import ExactLivePlan, ExactRun, plan_exact_live

__all__ = ["live_updates", "LIVE_MODES"]

LIVE_MODES = ("exact", "windows")
"""How a live stream runs the network: exact chunks (final rows equal to the whole
recording's), or the latest window every hop."""

log = logging.getLogger("panns_infer")


def live_updates(engine: Engine, class_names: Sequence[str], source: Any, *, sample_rate: Optional[int] = None,
                 raw: Optional[str] = None, window: Optional[float] = 10.0, hop: float = 1.0, top_k: int = 10,
                 embeddings: bool = False, events: Optional[dict] = None, max_lag: Optional[float] = None,
                 idle_timeout: Optional[float] = None, poll: float = 0.1,
                 mode: str = "exact") -> Generator[StreamUpdate, None, None]:
    """The updates of a stream (what :meth:`AudioTagger.stream <panns_infer.AudioTagger.stream>` yields).

    ``source`` is an iterable of 1-D chunks (at ``sample_rate``), a binary file object
    (encoded audio, or raw PCM when ``raw`` is given), a path (followed while it grows) or
    the string ``"mic"`` (the default input device). See :meth:`AudioTagger.stream` for the
    options; ``mode`` is ``"exact"`` (:class:`~panns_infer.stream_exact.ExactRun`) or
    ``"windows"`` (:class:`~panns_infer.stream.LiveRun`).

    When the source ends (or stalls for ``idle_timeout`` seconds, or Ctrl-C arrives, or the
    source fails), the last updates are yielded (``final=True``): the last partial hop's
    window, the remaining framewise rows, the events still open; then an error or the
    ``KeyboardInterrupt`` is raised again.
    """
    from .stream_sources import Pump, TailFile, chunk_blocks, encoded_blocks, microphone_blocks, parse_raw, raw_blocks

    plan: Union[LivePlan, ExactLivePlan]
    if mode == "exact":
        plan = plan_exact_live(engine, window=window, hop=hop)
        window_samples = plan.chunks.core + 2 * plan.chunks.margin
    elif mode == "windows":
        if window is None:
            raise InvalidArgumentError("mode='windows' needs a window length in seconds, got window=None")
        plan = plan_live(engine, window=window, hop=hop)
        window_samples = plan.window
    else:
        raise InvalidArgumentError(f"mode must be one of {LIVE_MODES}, got {mode!r}")
    if events is not None and not engine.model.has_framewise:
        raise InvalidArgumentError(f"{engine.model.arch} has no framewise output, so no events: use a sound event "
                                   "detection checkpoint (Cnn14_DecisionLevelMax, Cnn14_DecisionLevelAtt)")
    if events is not None:
        EventTracker(class_names, engine.model.frontend_config.frame_seconds, **events)  # check the options now
    if embeddings and engine.model.embedding_size is None:
        raise InvalidArgumentError(f"{engine.model.arch} is a decision-level model and has no embedding output")
    for name, value in (("max_lag", max_lag), ("idle_timeout", idle_timeout)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise InvalidArgumentError(f"{name} must be a positive number of seconds or None, got {value!r}")
    if max_lag is not None and max_lag < plan.hop / engine.model.sample_rate:
        raise InvalidArgumentError(f"max_lag must be at least one hop ({hop} s), got {max_lag!r}")
    fmt = parse_raw(raw) if raw is not None else None
    tail: Optional[TailFile] = None
    stop = threading.Event()
    if isinstance(source, str) and source == "mic":
        rate = engine.model.sample_rate if sample_rate is None else int(sample_rate)
        blocks = microphone_blocks(rate=rate, stop=stop)
        live = True
        if max_lag is None:
            max_lag = max(5.0, 2 * window_samples / engine.model.sample_rate)  # a microphone cannot wait
    elif isinstance(source, (str, os.PathLike)):
        tail = TailFile(source, poll=poll, idle_timeout=idle_timeout)
        blocks = raw_blocks(tail.read, fmt) if fmt else encoded_blocks(io.BufferedReader(tail))
        live, idle_timeout = True, None  # the tail ends itself after idle_timeout
    elif hasattr(source, "read"):
        reader = _unlocked(getattr(source, "buffer", source))  # sys.stdin -> its bytes
        blocks = raw_blocks(reader.read, fmt) if fmt else encoded_blocks(reader)
        live = True
    elif isinstance(source, (bytes, bytearray, np.ndarray)) or not hasattr(source, "__iter__"):
        raise InvalidArgumentError(
            f"a stream source is an iterable of 1-D chunks, a binary file object, a path or 'mic'; got "
            f"{type(source).__name__} (to tag one array, use tag())")
    else:
        if fmt is not None:
            raise InvalidArgumentError("raw= declares the format of a byte stream; chunks are arrays: pass "
                                       "sample_rate= instead")
        blocks = chunk_blocks(source, engine.model.sample_rate if sample_rate is None else sample_rate)
        live = False
    driver = _Driver(engine, class_names, plan, top_k=top_k, embeddings=embeddings, events=events)
    log.debug("live stream: reading %s (%s, %s)", type(source).__name__, mode, plan)
    pump = Pump(blocks, max_lag=max_lag) if live else None
    try:
        yield from driver.run(blocks if pump is None else pump, idle_timeout)
    finally:
        stop.set()
        if tail is not None:
            tail.stop.set()
        if pump is not None:
            pump.close()


class _FdReader(io.RawIOBase):
    """Reads a file descriptor with ``os.read``: a reader thread blocked in it holds no lock, so
    closing the file object (or the interpreter exiting) never waits for it."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return os.read(self.fd, size if size and size > 0 else 1 << 16)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _unlocked(stream: Any) -> Any:
    """A pipe or file's descriptor, read directly; the object itself when it has none
    (``io.BytesIO`` and the like). Bytes a buffered object has already read ahead are not seen."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return stream
    return _FdReader(fd)


class _Driver:
    """Feeds blocks to a run (:class:`ExactRun` or :class:`LiveRun`, by the plan) through a
    resampler, restarting the run after a skip."""

    def __init__(self, engine: Engine, class_names: Sequence[str], plan: Union[LivePlan, ExactLivePlan],
                 **options: Any) -> None:
        self.engine, self.names, self.plan, self.options = engine, class_names, plan, options
        self.target = engine.model.sample_rate
        self.rate: Optional[int] = None
        self.position = 0  # source samples consumed or skipped
        self.run_obj: Optional[Union[LiveRun, ExactRun]] = None
        self.resampler: Optional[StreamResampler] = None

    def _start(self, rate: int) -> None:
        from .audio import _check_rate

        self.rate = _check_rate(rate, "the stream's sample rate")
        self.resampler = StreamResampler(self.rate, self.target)
        offset = round(self.position / self.rate, 6)
        if isinstance(self.plan, ExactLivePlan):
            self.run_obj = ExactRun(self.engine, self.names, self.plan, offset=offset, **self.options)
        else:
            self.run_obj = LiveRun(self.engine, self.names, self.plan, offset=offset, **self.options)

    def _feed(self, rate: int, block: np.ndarray) -> list[StreamUpdate]:
        if self.run_obj is None:
            self._start(rate)
        elif rate != self.rate:
            raise InvalidAudioError(f"the stream's sample rate changed from {self.rate} to {rate} Hz")
        self.position += len(block)
        assert self.resampler is not None and self.run_obj is not None
        return self.run_obj.push(self.resampler.push(block))

    def _end(self) -> list[StreamUpdate]:
        if self.run_obj is None:
            return []
        assert self.resampler is not None
        updates = self.run_obj.push(self.resampler.finish())
        updates += self.run_obj.finish()
        self.run_obj = None
        return updates

    def run(self, source: Any, idle_timeout: Optional[float]) -> Iterator[StreamUpdate]:
        from .stream_sources import Pump

        error: Optional[BaseException] = None
        try:
            if isinstance(source, Pump):
                while True:
                    dropped, blocks, ended, failure = source.take(idle_timeout)
                    rate = self.rate or source.rate
                    if dropped and rate:
                        skipped = (round(self.position / rate, 6), round((self.position + dropped) / rate, 6))
                        log.warning("the model fell behind: skipped %.2f s of audio (%.2f-%.2f s)",
                                    dropped / rate, *skipped)
                        yield from self._end()
                        self.position += dropped
                        yield StreamUpdate(skipped[0], skipped[1], None, skipped=skipped)
                    for rate, block in blocks:
                        yield from self._feed(rate, block)
                    if ended:
                        if failure is not None:
                            raise failure
                        if not source.finished:
                            log.warning("no audio for %g s: ending the stream", idle_timeout)
                        break
            else:
                for rate, block in source:
                    yield from self._feed(rate, block)
        except KeyboardInterrupt as exc:
            error = exc
        except Exception as exc:  # every complete hop is delivered before the error is raised
            error = exc
        yield from self._end()
        if error is not None:
            raise error
