"""Running a tagger over many files: overlapped decoding, shared forward passes, progress."""

from __future__ import annotations

import io
import logging
import math
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Callable, Generator, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..audio import Clip, probe_file, read_audio
from ..engine import LongFile, _trim_heap
from ..errors import InvalidArgumentError, PannsError, UnsupportedOperationError
from ..results import Tags
from ..windows import read_blocks

if TYPE_CHECKING:
    from ..tagger import AudioTagger
from .discovery import file_stat

log = logging.getLogger("panns_infer")

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]
_MATERIALISE_SECONDS = 60.0  # longer files are streamed block by block in the calling thread


@dataclass(repr=False)
class FileResult:
    """What tagging one file gave: its tags and embedding, or the error.

    Attributes:
        path: the file as it was given (``None`` for encoded bytes).
        size: its size in bytes, and ``mtime`` its modification time, both read before it was
            decoded: a re-run recomputes the file when either changed.
        duration: seconds of audio decoded.
        sample_rate: the file's own rate (before resampling).
        tags: the clip-level tags (``None`` if not asked for, or on error).
        embedding: the embedding vector (``None`` if not asked for, or on error).
        events: sound events as dicts (``label``, ``onset``, ``offset``, ``score``), in event runs.
        error: why the file failed, or ``None``.
        exception: the exception behind ``error`` (with its traceback, for debugging; not
            part of the record).
    """

    path: Optional[str]
    size: Optional[int] = None
    mtime: Optional[float] = None
    duration: Optional[float] = None
    sample_rate: Optional[int] = None
    tags: Optional[Tags] = None
    embedding: Optional[np.ndarray] = None
    events: Optional[list[dict]] = None
    error: Optional[str] = None
    exception: Optional[BaseException] = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the file was tagged."""
        return self.error is None

    def to_dict(self, *, full: bool = False, model: Optional[str] = None) -> dict:
        """The record: ``path``, ``duration``, ``sample_rate``, ``model``, ``size``, ``mtime``,
        then ``labels`` and ``scores`` (with every class's ``probabilities`` if ``full``),
        ``events``, or ``error``."""
        out: dict = {"path": self.path, "duration": self.duration, "sample_rate": self.sample_rate,
                     "model": model, "size": self.size, "mtime": self.mtime}
        if self.error is not None:
            out["error"] = self.error
            return out
        if self.tags is not None:
            tags = self.tags.to_dict(full=full)
            out["labels"], out["scores"] = tags["labels"], tags["scores"]
            if full:
                out["probabilities"] = tags["probabilities"]
        if self.events is not None:
            out["events"] = self.events
        return out

    def __repr__(self) -> str:
        what = f"error={self.error!r}" if self.error else (repr(self.tags) if self.tags is not None else "ok")
        return f"FileResult({self.path!r}, {what})"


# -- running -----------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """A decoded file waiting for the network: its samples at the model's rate and the spans
    to run, or a long file to stream, or an error."""

    result: FileResult
    samples: Optional[np.ndarray] = None
    spans: Sequence[tuple[int, int]] = ()
    stream: Optional[Union[LongFile, Clip]] = None


def tag_corpus(tagger: "AudioTagger", sources: Iterable[Source], *, top_k: int = 10, tags: bool = True,
               embeddings: bool = False, workers: Optional[int] = None,
               prefetch: Optional[int] = None,
               callback: Optional[Callable[[Optional[str], float, float], None]] = None,
               ) -> Generator[list[FileResult], None, None]:
    """Tag many files, decoding ahead in threads and batching across files.

    Yields the results one forward pass at a time (a list per pass, in input order), so a
    caller can write and fsync them as they come. A file that cannot be read becomes a
    result with ``error`` set; the others go on.

    How it runs: ``workers`` threads decode and resample the next files while the network
    runs (at most ``prefetch`` decoded files wait at once). Files up to 60 s are decoded
    whole in a thread and, if longer than the tagger's window, cut into its windows; windows
    and clips of several files then share forward passes when their lengths match. Longer
    files are decoded block by block in the calling thread as their windows run, so memory
    stays bounded. Results equal :meth:`AudioTagger.tag` / :meth:`AudioTagger.embed` of each
    file alone (to the float32 rounding of different batch sizes: 1e-5).

    Args:
        tagger: the model to run.
        sources: file paths, or encoded audio as ``bytes`` (any format libsndfile reads).
        top_k: labels kept per file.
        tags: compute tags (needs the tagger's labels).
        embeddings: compute embeddings too.
        workers: decoding threads (default: on CUDA ``min(8, CPU count)``; on the CPU the
            cores torch's threads leave free, up to 8, which is 0 on a 2-core machine, where
            decoding threads only took time from the network: 18.9 s vs 20.4 s for 100
            files). 0 decodes in the calling thread.
        prefetch: decoded files allowed to wait (default: twice the batch size, at least
            ``workers``).
        callback: called as ``callback(path, seconds_done, seconds_total)`` as the windows
            of a long file (one streamed block by block) run, for a progress display; ``path``
            is ``None`` for encoded bytes.

    Raises:
        InvalidArgumentError: a bad option.
        UnsupportedOperationError: embeddings from a decision-level checkpoint.

    >>> tagger = AudioTagger("Cnn14")                                          # doctest: +SKIP
    >>> for batch in tag_corpus(tagger, ["a.wav", "b.flac"], top_k=3):         # doctest: +SKIP
    ...     for r in batch:
    ...         print(r.path, r.error or r.tags.labels)
    a.wav ['Speech', 'Music', 'Inside, small room']
    b.flac ['Dog', 'Animal', 'Bark']
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InvalidArgumentError(f"top_k must be a non-negative integer, got {top_k!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise InvalidArgumentError(f"workers must be a non-negative integer, got {workers!r}")
    if prefetch is not None and (isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1):
        raise InvalidArgumentError(f"prefetch must be a positive integer, got {prefetch!r}")
    if not (tags or embeddings):
        raise InvalidArgumentError("nothing to compute: ask for tags, embeddings or both")
    if embeddings and tagger.embedding_size is None:
        raise UnsupportedOperationError(f"{tagger.arch} is a decision-level model and has no embedding output; "
                                        "use a clip-level checkpoint such as 'Cnn14' for embeddings")
    engine = tagger._engine
    names: list[str] = tagger.labels if tags else []  # read only with tags
    outputs = (["clipwise_output"] if tags else []) + (["embedding"] if embeddings else [])
    workers = _default_workers(engine.device) if workers is None else workers
    prefetch = prefetch or max(2 * engine.batch_size, workers)
    cap = int(_MATERIALISE_SECONDS * tagger.sample_rate)
    flush_at = 2 * engine.batch_size  # windows gathered before a pass: room to group equal lengths

    def finish(prep: _Prepared, out: dict, end: int) -> FileResult:
        res = prep.result
        res.duration = end / tagger.sample_rate
        if tags:
            res.tags = Tags.from_probabilities(out["clipwise_output"], names, top_k=top_k, source=res.path,
                                               duration=res.duration, sample_rate=res.sample_rate)
        if embeddings:
            res.embedding = out["embedding"]
        return res

    def run(batch: list[_Prepared]) -> list[FileResult]:
        jobs = [((i, k), prep.samples[a:b]) for i, prep in enumerate(batch) if prep.samples is not None
                for k, (a, b) in enumerate(prep.spans)]
        outs = engine.forward(jobs, outputs) if jobs else {}
        _trim_heap()  # files of every length leave the heap fragmented: hand freed memory back
        results = []
        for i, prep in enumerate(batch):
            if prep.samples is None:
                results.append(prep.result)
            else:
                pieces = [(a, outs[(i, k)]) for k, (a, _) in enumerate(prep.spans)]
                end = prep.spans[-1][1]
                results.append(finish(prep, engine._finish(pieces, outputs, end, engine.aggregate), end))
        return results

    def stream(prep: _Prepared) -> FileResult:
        item: Union[LongFile, Clip] = prep.stream  # type: ignore[assignment]  # called for streamed files only
        try:
            length = item.num_samples if isinstance(item, LongFile) else len(item.samples)
            report = (None if callback is None else
                      lambda done: callback(prep.result.path, done / tagger.sample_rate, length / tagger.sample_rate))
            out, end = engine.run_long(item, outputs, progress=report)
        except PannsError as exc:
            prep.result.error, prep.result.exception = str(exc), exc
            return prep.result
        return finish(prep, out, end)

    pending: list[_Prepared] = []
    windows = 0
    with _Prefetcher(lambda s: _prepare(tagger, s, cap), sources, workers, prefetch) as decoded:
        for prep in decoded:
            if prep.stream is not None:
                if pending:
                    yield run(pending)
                    pending, windows = [], 0
                yield [stream(prep)]
                continue
            pending.append(prep)
            windows += len(prep.spans)
            if windows >= flush_at or (windows and not decoded.head_ready()):
                yield run(pending)
                pending, windows = [], 0
        if pending:
            yield run(pending)


def _default_workers(device: torch.device) -> int:
    """Decoding threads: on the CPU only the cores torch's own threads leave free."""
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return min(8, max(0, cores - torch.get_num_threads()))
    return min(8, cores)


def _prepare(tagger: "AudioTagger", source: Source, cap: int) -> _Prepared:
    """Decode one source (in a worker thread): never raises, errors go into the result."""
    engine, rate = tagger._engine, tagger.sample_rate
    if isinstance(source, (bytes, bytearray, memoryview)):
        res = FileResult(None, size=len(source))
        try:
            clip = _decode_bytes(source, rate)
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop a corpus
            res.error, res.exception = _describe(exc, "encoded audio"), exc
            return _Prepared(res)
    else:
        path = os.fsdecode(os.fspath(source))
        size, mtime = file_stat(path)
        res = FileResult(path, size=size, mtime=mtime)
        try:
            items, _ = tagger._items(path, None)  # the same decision tag() makes: a clip or a long file
            item = items[0]
            if isinstance(item, LongFile):
                res.sample_rate = probe_file(path)[1]
                if item.num_samples > cap or engine.chunked(item.num_samples):
                    return _Prepared(res, stream=item)
                blocks = list(read_blocks(path, rate))  # the samples the engine would stream
                samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
                # the windows the engine's streaming gives: spans past the end are cut or dropped
                spans = [(a, min(b, len(samples))) for a, b in engine.spans(item.num_samples) if a < len(samples)]
                if spans:
                    return _Prepared(res, samples, spans)
                clip = read_audio(path, rate)  # a header that promised audio the file does not hold
            else:
                clip = item
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop a corpus
            res.error, res.exception = _describe(exc, path), exc
            return _Prepared(res)
    res.sample_rate = clip.original_rate
    if engine.chunked(len(clip.samples)):
        return _Prepared(res, stream=clip)
    return _Prepared(res, clip.samples, engine.spans(len(clip.samples)))


def _decode_bytes(data: Union[bytes, bytearray, memoryview], rate: int) -> Clip:
    """Encoded audio to a clip, as :func:`~panns_infer.audio.read_audio` does for a file
    (any format it reads: libsndfile's, and through PyAV MP4/M4A, WebM/MKV, AAC, WMA, ...)."""
    buffer = io.BytesIO(data)
    buffer.name = f"{len(data)} bytes"  # how messages name it
    return read_audio(buffer, rate)


def _describe(exc: BaseException, what: str) -> str:
    if isinstance(exc, PannsError):
        return str(exc)
    log.debug("unexpected error while decoding %s", what, exc_info=True)
    return f"{type(exc).__name__} while decoding {what!r}: {exc}"


class _Prefetcher:
    """``fn`` over ``items`` in a bounded thread pool; results in input order."""

    def __init__(self, fn: Callable[[Any], Any], items: Iterable[Any], workers: int, depth: int) -> None:
        self._fn, self._items = fn, iter(items)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="panns-decode") if workers else None
        self._queue: deque[Future] = deque()
        self._depth = depth

    def __enter__(self) -> "_Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self) -> None:
        while len(self._queue) < self._depth:
            try:
                item = next(self._items)
            except StopIteration:
                return
            # only called with a pool (without one, __iter__ maps in this thread)
            self._queue.append(self._pool.submit(self._fn, item))  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[Any]:
        if self._pool is None:
            yield from map(self._fn, self._items)
            return
        self._fill()
        while self._queue:
            result = self._queue.popleft().result()
            self._fill()
            yield result

    def head_ready(self) -> bool:
        """Whether the next result is ready (or there is none): no waiting for it."""
        return not self._queue or self._queue[0].done()


@dataclass
class Progress:
    """A one-line progress display on a stream: files done, files/s, audio-seconds/s, ETA.

    Args:
        total: files to do.
        stream: where to draw (default: stderr).
        enabled: draw at all (callers pass whether the stream is a terminal).
        interval: seconds between redraws.

    >>> import io
    >>> buf = io.StringIO()
    >>> bar = Progress(4, stream=buf, enabled=True, interval=0.0)
    >>> bar.update([FileResult("a.wav", duration=2.0)])
    >>> "1/4 files" in buf.getvalue() and "audio-s/s" in buf.getvalue()
    True
    """

    total: int
    stream: Optional[IO[str]] = None
    enabled: bool = True
    interval: float = 0.2
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    _start: float = field(default_factory=time.perf_counter)
    _last: float = -math.inf
    _shown: bool = False

    def update(self, results: Sequence[FileResult]) -> None:
        """Count finished files and redraw (at most every ``interval`` seconds)."""
        self.done += len(results)
        self.failed += sum(not r.ok for r in results)
        self.seconds += sum(r.duration or 0.0 for r in results)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            self._draw(now - self._start)

    def _draw(self, elapsed: float) -> None:
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        eta = "--:--" if math.isinf(left) else _clock(left)
        failed = f" ({self.failed} failed)" if self.failed else ""
        out = self.stream or sys.stderr
        out.write(f"\r\033[K{self.done}/{self.total} files{failed}  {rate:.1f} files/s  "
                  f"{self.seconds / elapsed if elapsed > 0 else 0.0:.0f} audio-s/s  ETA {eta}")
        out.flush()
        self._shown = True

    def within(self, path: Optional[str], done: float, total: float) -> None:
        """Show how far a long file has got (``done`` of ``total`` seconds of audio), at most
        every ``interval`` seconds: a file of several minutes otherwise shows nothing until it ends."""
        now = time.perf_counter()
        if not self.enabled or (now - self._last < self.interval and done < total):
            return
        self._last = now
        name = os.path.basename(path or "audio")
        out = self.stream or sys.stderr
        out.write(f"\r\033[K{self.done}/{self.total} files  {name}: {100.0 * done / total if total else 100.0:.0f}% "
                  f"({done:.0f} of {total:.0f} s)")
        out.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the line (before printing something else on the stream)."""
        if self._shown:
            out = self.stream or sys.stderr
            out.write("\r\033[K")
            out.flush()
            self._shown = False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
