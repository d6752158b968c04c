"""Tagging a corpus: finding the files, running them with overlapped decoding, and resumable
output files.

Used by ``panns-tag`` and usable on its own:

* :func:`discover` turns command-line style inputs (files, directories, globs and
  ``@manifest`` files) into a list of audio file paths.
* :func:`tag_corpus` runs an :class:`~panns_infer.AudioTagger` over many files. A bounded
  pool of threads decodes and resamples ahead of the network (libsndfile and resampy release
  the GIL while they work), and windows of different files share a forward pass when their
  lengths match. Results equal those of tagging each file alone (the engine groups by length
  and never pads one clip to another).
* :class:`RecordFile` (JSONL or CSV, one record per file) and :class:`EmbeddingStore`
  (``.npz``/``.npy``) add results as they come and fsync them after every batch. On a re-run
  they skip files that are already done (same path, size and mtime). A kill loses at most
  the batch in flight, and the next run repairs a torn last line.

>>> r = FileResult("a.wav", size=64044, mtime=1700000000.0, duration=1.0, sample_rate=32000)
>>> r.to_dict()
{'path': 'a.wav', 'size': 64044, 'mtime': 1700000000.0, 'duration': 1.0, 'sample_rate': 32000}
>>> is_audio_name("take 1.FLAC"), is_audio_name("notes.txt")
(True, False)
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import logging
import math
import os
import struct
import sys
import time
import zipfile
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from .audio import Clip, as_clips, read_audio
from .engine import LongFile
from .errors import AudioDecodeError, InvalidArgumentError, PannsError, UnsupportedOperationError
from .events import _atomic_open
from .results import Tags
from .windows import audio_file_info, read_blocks

if TYPE_CHECKING:
    from .tagger import AudioTagger

__all__ = ["AUDIO_EXTENSIONS", "is_audio_name", "read_manifest", "discover", "FileResult", "tag_corpus",
           "RecordFile", "record_format", "EmbeddingStore", "EventsTsv", "Progress", "file_stat"]

log = logging.getLogger("panns_infer")

#: Extensions (lower case, without the dot) of the formats libsndfile reads; directories and
#: globs yield only files with one of these.
AUDIO_EXTENSIONS = frozenset({
    "wav", "wave", "bwf", "rf64", "w64", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif", "aifc", "au",
    "snd", "caf", "sd2", "voc", "iff", "svx", "nist", "sph", "ircam", "sf", "paf", "pvf", "xi", "sds", "avr",
    "wve", "mpc",
})

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]
_GLOB_CHARS = frozenset("*?[")
_MATERIALISE_SECONDS = 60.0  # longer files are streamed block by block in the calling thread


# -- discovery ---------------------------------------------------------------------------------


def is_audio_name(name: str, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> bool:
    """Whether a file name has an audio extension (case-insensitive).

    >>> is_audio_name("a.Wav"), is_audio_name("a.wav", ["flac"])
    (True, False)
    """
    ext = os.path.splitext(name)[1][1:].lower()
    return bool(ext) and ext in extensions


def read_manifest(path: Union[str, "os.PathLike[str]"]) -> list[str]:
    """The paths listed in a manifest: one per line; blank lines and ``#`` comments skipped.

    Lines are stripped of surrounding whitespace and taken as they are written, like paths
    typed on the command line: a relative path is relative to the current directory.

    Raises:
        InvalidArgumentError: the manifest cannot be read.

    >>> read_manifest("no_such_manifest.txt")
    Traceback (most recent call last):
    ...
    panns_infer.errors.InvalidArgumentError: cannot read manifest 'no_such_manifest.txt' (No such file or directory); give a text file with one audio path per line
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read manifest {name!r} ({exc.strerror or exc}); give a text file "
                                   "with one audio path per line") from None
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def discover(inputs: Iterable[Union[str, "os.PathLike[str]"]], *, recursive: bool = False,
             extensions: Optional[Iterable[str]] = None) -> list[str]:
    """Expand inputs into audio file paths, in order, each once.

    * a file is kept as it is, whatever its extension (a missing one too: it is reported when
      it is read);
    * a directory gives its audio files (by extension, see :data:`AUDIO_EXTENSIONS`), sorted;
      with ``recursive`` those of its subdirectories too. Names starting with ``.`` are
      skipped (e.g. macOS ``._x.wav`` files), and symbolic links to directories are not
      followed;
    * a pattern with ``*``, ``?`` or ``[`` that is not an existing path is a glob (``**``
      matches any depth): the audio files it matches, and the audio files of the
      directories it matches;
    * ``@FILE`` is a manifest (:func:`read_manifest`), each line expanded as above.

    A directory or glob that gives no files is logged as a warning.

    Args:
        inputs: paths, directories, globs and ``@manifest`` names.
        recursive: also look into subdirectories of directories.
        extensions: the extensions to accept in directories and globs (default:
            :data:`AUDIO_EXTENSIONS`).

    Raises:
        InvalidArgumentError: a manifest cannot be read.

    >>> discover(["dog.flac", "dog.flac", "cat.wav"])
    ['dog.flac', 'cat.wav']
    >>> discover(["~/field_recordings"], recursive=True)[:2]           # doctest: +SKIP
    ['/home/me/field_recordings/2023/a.flac', '/home/me/field_recordings/2023/b.flac']
    """
    exts = AUDIO_EXTENSIONS if extensions is None else frozenset(e.lower().lstrip(".") for e in extensions)
    found: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.normpath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    def expand(arg: str) -> None:
        arg = os.path.expanduser(arg)
        if os.path.isdir(arg):
            before = len(found)
            for path in _walk(arg, recursive, exts):
                add(path)
            if len(found) == before:
                log.warning("no audio files in %r%s", arg, "" if recursive else " (subfolders are read only "
                            "with --recursive)")
        elif _GLOB_CHARS & set(arg) and not os.path.lexists(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            before = len(found)
            for match in matches:
                if os.path.isdir(match):
                    for path in _walk(match, recursive, exts):
                        add(path)
                elif is_audio_name(match, exts):
                    add(match)
            if len(found) == before:
                log.warning("no audio files match %r", arg)
        else:
            add(arg)

    for item in inputs:
        arg = os.fspath(item)
        if arg.startswith("@") and len(arg) > 1:
            for line in read_manifest(os.path.expanduser(arg[1:])):
                expand(line)
        else:
            expand(arg)
    return found


def _walk(root: str, recursive: bool, exts: frozenset) -> Iterator[str]:
    def warn(exc: OSError) -> None:
        log.warning("cannot read folder %r (%s); skipped", exc.filename, exc.strerror or exc)

    if not recursive:
        try:
            names = sorted(os.listdir(root))
        except OSError as exc:
            warn(exc)
            return
        for name in names:
            path = os.path.join(root, name)
            if not name.startswith(".") and is_audio_name(name, exts) and os.path.isfile(path):
                yield path
        return
    for folder, dirs, files in os.walk(root, onerror=warn):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_audio_name(name, exts):
                yield os.path.join(folder, name)


def file_stat(path: str) -> tuple[Optional[int], Optional[float]]:
    """``(size, mtime)`` of a file, or ``(None, None)`` when it cannot be read.

    >>> file_stat("no_such_file.wav")
    (None, None)
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None, None
    return st.st_size, st.st_mtime


# -- results -----------------------------------------------------------------------------------


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

    def to_dict(self, *, full: bool = False) -> dict:
        """The JSONL record: path, size, mtime, duration, sample_rate, then labels and scores
        (with every class's probability if ``full``), events, or error."""
        out: dict = {"path": self.path, "size": self.size, "mtime": self.mtime}
        if self.error is not None:
            out["error"] = self.error
            return out
        out["duration"] = self.duration
        out["sample_rate"] = self.sample_rate
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
    stream: Optional[LongFile] = None


def tag_corpus(tagger: "AudioTagger", sources: Iterable[Source], *, top_k: int = 10, tags: bool = True,
               embeddings: bool = False, workers: Optional[int] = None,
               prefetch: Optional[int] = None) -> Iterator[list[FileResult]]:
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
        workers: decoding threads (default: ``min(8, CPU count)``; 0 decodes in the calling
            thread).
        prefetch: decoded files allowed to wait (default: twice the batch size, at least
            ``workers``).

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
    names = tagger.labels if tags else None
    outputs = (["clipwise_output"] if tags else []) + (["embedding"] if embeddings else [])
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    prefetch = prefetch or max(2 * engine.batch_size, workers)
    cap = int(_MATERIALISE_SECONDS * tagger.sample_rate)
    flush_at = 2 * engine.batch_size  # windows gathered before a pass: room to group equal lengths

    def finish(prep: _Prepared, pieces: list[tuple[int, dict]], end: int) -> FileResult:
        res = prep.result
        res.duration = end / tagger.sample_rate
        if tags:
            probs = engine._finish(pieces, ["clipwise_output"], end, "max")["clipwise_output"]
            res.tags = Tags.from_probabilities(probs, names, top_k=top_k, source=res.path)
        if embeddings:
            res.embedding = engine._finish(pieces, ["embedding"], end, "mean")["embedding"]
        return res

    def run(batch: list[_Prepared]) -> list[FileResult]:
        jobs = [((i, k), prep.samples[a:b]) for i, prep in enumerate(batch) if prep.samples is not None
                for k, (a, b) in enumerate(prep.spans)]
        outs = engine.forward(jobs, outputs) if jobs else {}
        results = []
        for i, prep in enumerate(batch):
            if prep.samples is None:
                results.append(prep.result)
            else:
                pieces = [(a, outs[(i, k)]) for k, (a, _) in enumerate(prep.spans)]
                results.append(finish(prep, pieces, prep.spans[-1][1]))
        return results

    def stream(prep: _Prepared) -> FileResult:
        item: Union[LongFile, Clip] = prep.stream  # type: ignore[assignment]
        try:
            pieces, end = _pieces(engine, item, outputs)
            if not pieces:  # a header that promised audio the file does not hold
                item = read_audio(prep.stream.path, tagger.sample_rate)  # type: ignore[union-attr]
                pieces, end = _pieces(engine, item, outputs)
        except PannsError as exc:
            prep.result.error, prep.result.exception = str(exc), exc
            return prep.result
        return finish(prep, pieces, end)

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


def _pieces(engine: Any, item: Union[Clip, LongFile], outputs: list[str]) -> tuple[list[tuple[int, dict]], int]:
    length = item.num_samples if isinstance(item, LongFile) else len(item.samples)
    pieces, end = [], 0
    for start, stop, out in engine.over_spans(item, engine.spans(length), outputs):
        pieces.append((start, out))
        end = stop
    return pieces, end


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
                res.sample_rate = audio_file_info(path)[1]
                if item.num_samples > cap:
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
    return _Prepared(res, clip.samples, engine.spans(len(clip.samples)))


def _decode_bytes(data: Union[bytes, bytearray, memoryview], rate: int) -> Clip:
    """Encoded audio to a clip, as :func:`~panns_infer.audio.read_audio` does for a file."""
    import soundfile

    try:
        samples, file_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        raise AudioDecodeError(f"cannot decode {len(data)} bytes as audio ({str(exc).strip() or type(exc).__name__}); "
                               "supported formats are those libsndfile reads (WAV, FLAC, OGG, MP3, ...)") from None
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    clips, _ = as_clips(np.ascontiguousarray(mono), sample_rate=file_rate, target_rate=rate)
    return clips[0]


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


# -- record files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Done:
    size: Optional[int]
    mtime: Optional[float]
    ok: bool


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RecordFile:
    """An output file of one record per input file, appended as results come, resumable.

    ``jsonl``: one JSON object per line (:meth:`FileResult.to_dict`). ``csv``: columns
    ``path, duration, sample_rate, size, mtime, label_1, score_1, ... label_k, score_k,
    error`` and, with ``full``, one column of probabilities per class (named after it).

    Opening an existing file reads what it holds: a torn last line (an interrupted write)
    is cut off, an unreadable line in the middle is dropped with a warning, and
    :meth:`is_done` then tells which files need no new run. :meth:`drop` removes the
    records of files that will be redone (errors, changed files), rewriting the file
    atomically; :meth:`append` writes, flushes and fsyncs a batch of records.

    Args:
        path: the output file.
        format: ``"jsonl"`` or ``"csv"`` (default: from the extension).
        top_k: labels per record (the CSV's columns).
        full: add every class's probability.
        class_names: the class names (needed for ``full`` CSV columns).
        overwrite: start a new file instead of resuming.

    Raises:
        InvalidArgumentError: unknown format, or a CSV written with other columns.

    >>> out = RecordFile("tags.jsonl")                                   # doctest: +SKIP
    >>> out.is_done("a.wav", *file_stat("a.wav"))                        # doctest: +SKIP
    True
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, format: Optional[str] = None, top_k: int = 10,
                 full: bool = False, class_names: Optional[Sequence[str]] = None, overwrite: bool = False) -> None:
        self.path = os.fspath(path)
        self.format = format or record_format(self.path)
        if self.format not in ("jsonl", "csv"):
            raise InvalidArgumentError(f"record files are 'jsonl' or 'csv', got {self.format!r}")
        self.full = full
        self.top_k = top_k
        self.columns = ["path", "duration", "sample_rate", "size", "mtime"]
        for i in range(1, top_k + 1):
            self.columns += [f"label_{i}", f"score_{i}"]
        self.columns.append("error")
        if full and self.format == "csv":
            if class_names is None:
                raise InvalidArgumentError("full CSV records need the class names (one column per class)")
            self.columns += list(class_names)
        self._done: dict[str, _Done] = {}
        self._header = self._encode_csv(self.columns) if self.format == "csv" else b""
        if overwrite or not os.path.exists(self.path):
            self._create()
        else:
            self._load()
        self._file: IO[bytes] = open(self.path, "ab")

    # reading

    def _create(self) -> None:
        with _atomic_open(self.path, "wb") as f:
            f.write(self._header)
        _fsync_dir(self.path)

    def _entries(self, f: IO[bytes]) -> Iterator[tuple[int, int, Optional[dict]]]:
        """``(start, end, record)`` of each complete entry after the header (``record`` is
        ``None`` when it cannot be read); stops before a torn last entry."""
        offset, chunk, start = 0, b"", 0
        for line in f:
            if not chunk:
                start = offset
            offset += len(line)
            chunk += line
            if not chunk.endswith(b"\n"):
                return  # torn: the file ends inside this entry
            if self.format == "csv" and chunk.count(b'"') % 2:
                continue  # a quoted field with a newline inside: the entry goes on
            if start == 0 and self.format == "csv":
                if chunk != self._header:
                    raise InvalidArgumentError(
                        f"{self.path!r} has other columns than this run writes ({chunk[:120]!r}...): it was "
                        "written with other options (--top-k, --full); use the same options, another "
                        "output file, or --overwrite")
                chunk = b""
                continue
            yield start, offset, self._parse(chunk)
            chunk = b""

    def _parse(self, raw: bytes) -> Optional[dict]:
        text = raw.decode("utf-8", "surrogateescape")
        try:
            if self.format == "jsonl":
                rec = json.loads(text)
            else:
                rec = dict(zip(self.columns, next(csv.reader(io.StringIO(text)))))
                rec = {"path": rec.get("path"), "size": int(rec["size"]) if rec.get("size") else None,
                       "mtime": float(rec["mtime"]) if rec.get("mtime") else None, "error": rec.get("error") or None}
        except (ValueError, KeyError, StopIteration):
            return None
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
            return None
        return rec

    def _load(self) -> None:
        size = os.path.getsize(self.path)
        bad, end = 0, 0
        with open(self.path, "rb") as f:
            if self.format == "csv" and f.read(len(self._header)) != self._header:
                f.seek(0)
                if not f.readline().endswith(b"\n"):  # nothing but a torn header
                    self._create()
                    return
            f.seek(0)
            for _, end, rec in self._entries(f):
                if rec is None:
                    bad += 1
                    continue
                ok = rec.get("error") is None
                self._done[rec["path"]] = _Done(rec.get("size"), rec.get("mtime"), ok)
        if self.format == "csv" and end == 0:
            end = len(self._header)
        if bad:
            log.warning("%s: %d unreadable record(s) dropped", self.path, bad)
            self._rewrite(lambda rec: rec is not None)
        elif end < size:
            log.warning("%s: an incomplete last record (from an interrupted run) was removed", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())

    def _rewrite(self, keep: Callable[[Optional[dict]], bool]) -> None:
        """Rewrite the file atomically with the complete entries that ``keep`` accepts."""
        with open(self.path, "rb") as src, _atomic_open(self.path, "wb") as dst:
            dst.write(self._header)
            entries = list(self._entries(src))  # offsets only: the bytes are copied below
            for start, end, rec in entries:
                if keep(rec):
                    src.seek(start)
                    dst.write(src.read(end - start))
        _fsync_dir(self.path)

    # state

    def is_done(self, path: str, size: Optional[int], mtime: Optional[float]) -> bool:
        """Whether ``path`` has a successful record with this size and mtime."""
        done = self._done.get(path)
        return done is not None and done.ok and size is not None and (done.size, done.mtime) == (size, mtime)

    def has(self, path: str) -> bool:
        """Whether ``path`` has any record (success or error)."""
        return path in self._done

    def drop(self, paths: Iterable[str]) -> int:
        """Remove the records of ``paths`` (files about to be redone); returns how many.

        The file is rewritten atomically, so a kill during this leaves the old one.
        """
        doomed = {p for p in paths if p in self._done}
        if doomed:
            self._file.close()
            self._rewrite(lambda rec: rec is not None and rec["path"] not in doomed)
            for p in doomed:
                del self._done[p]
            self._file = open(self.path, "ab")
        return len(doomed)

    # writing

    def append(self, results: Sequence[FileResult]) -> None:
        """Write the records of ``results``, then flush and fsync."""
        data = b"".join(self._encode(r) for r in results)
        if not data:
            return
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        for r in results:
            if r.path is not None:
                self._done[r.path] = _Done(r.size, r.mtime, r.ok)

    def _encode(self, r: FileResult) -> bytes:
        if self.format == "jsonl":
            return (json.dumps(r.to_dict(full=self.full)) + "\n").encode("utf-8", "surrogateescape")
        row: list[Any] = [r.path, _num(r.duration), r.sample_rate, r.size, r.mtime]
        labels = r.tags.labels if r.tags is not None else []
        scores = r.tags.scores if r.tags is not None else []
        for i in range(self.top_k):
            row += [labels[i], float(scores[i])] if i < len(labels) else ["", ""]
        row.append(r.error or "")
        if self.full:
            row += [float(p) for p in r.tags.probabilities] if r.tags is not None else [""] * (len(self.columns) - len(row))
        return self._encode_csv(row)

    @staticmethod
    def _encode_csv(row: Sequence[Any]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in row])
        return buf.getvalue().encode("utf-8", "surrogateescape")

    def close(self) -> None:
        """Close the file (records are already on disk)."""
        self._file.close()

    def __enter__(self) -> "RecordFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _num(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 6)


def record_format(path: str) -> Optional[str]:
    """The output format an extension stands for: ``jsonl``, ``csv``, ``tsv`` or ``None``.

    >>> record_format("tags.JSONL"), record_format("tags.csv"), record_format("tags.txt")
    ('jsonl', 'csv', None)
    """
    ext = os.path.splitext(path)[1].lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(ext)


# -- events TSV --------------------------------------------------------------------------------


class EventsTsv(RecordFile):
    """Sound events of a corpus as one DCASE TSV (``filename onset offset event_label``).

    A TSV row has no room for a file's size and mtime, so the run keeps its records in
    ``FILE.partial`` (JSONL, resumable like :class:`RecordFile`) and :meth:`finalize` writes
    the TSV atomically from them and deletes the partial file. A killed run resumes from the
    partial file; a finished one, run again, starts over.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, overwrite: bool = False) -> None:
        self.tsv_path = os.fspath(path)
        super().__init__(self.tsv_path + ".partial", format="jsonl", top_k=0, overwrite=overwrite)

    def finalize(self) -> None:
        """Write the TSV (the file's base name in ``filename``) and remove the partial file."""
        self.close()
        lines = ["filename\tonset\toffset\tevent_label\n"]
        with open(self.path, "rb") as f:
            records = [rec for _, _, rec in self._entries(f) if rec is not None]
        for rec in records:
            name = os.path.basename(rec["path"])
            for e in rec.get("events") or ():
                lines.append(f"{name}\t{e['onset']:.3f}\t{e['offset']:.3f}\t{e['label']}\n")
        with _atomic_open(self.tsv_path, "wb") as f:
            f.write("".join(lines).encode("utf-8", "surrogateescape"))
        _fsync_dir(self.tsv_path)
        os.unlink(self.path)


# -- embeddings --------------------------------------------------------------------------------

_MAGIC = b"PANNSEMB"
_HEADER = struct.Struct("<8sII")  # magic, version, dimension
_ENTRY = struct.Struct("<qdI")  # size, mtime, path length


class EmbeddingStore:
    """Embeddings of a corpus in ``FILE.npz`` or ``FILE.npy``, resumable.

    During a run, rows are appended to ``FILE.partial``, an append-only journal of
    ``(path, size, mtime, float32 row, CRC32)`` entries, fsynced per batch; a torn or corrupt
    tail (a kill mid-write) is cut off when the journal is opened again.
    :meth:`finalize` merges the previous output with the journal (a path's latest row wins;
    order: first appearance) and writes it atomically, then deletes the journal.

    * ``.npz``: arrays ``paths`` (str), ``embeddings`` (float32, ``(N, D)``), ``sizes`` and
      ``mtimes`` (what the rows were computed from).
    * ``.npy``: the ``(N, D)`` matrix, and the paths one per line in ``FILE.paths.txt``.

    Args:
        path: the ``.npz`` or ``.npy`` file.
        dim: the embedding size.
        overwrite: ignore a previous output and journal.

    Raises:
        InvalidArgumentError: another extension, or existing files of another dimension.

    >>> store = EmbeddingStore("emb.npz", 2048)                           # doctest: +SKIP
    >>> store.has("a.wav", *file_stat("a.wav"))                           # doctest: +SKIP
    True
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], dim: int, *, overwrite: bool = False) -> None:
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in (".npz", ".npy"):
            raise InvalidArgumentError(f"embeddings are written to a .npz or .npy file, got {self.path!r}")
        self.kind = ext[1:]
        self.dim = dim
        self.partial = self.path + ".partial"
        self.paths_txt = self.path + ".paths.txt"
        # path -> (size, mtime, where): where is ("final", row) or ("partial", byte offset of the row)
        self._index: dict[str, tuple[Optional[int], Optional[float], tuple[str, int]]] = {}
        if overwrite:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial)
        else:
            self._load_final()
        self._open_partial()

    def _load_final(self) -> None:
        if not os.path.exists(self.path):
            return
        try:
            if self.kind == "npz":
                with np.load(self.path) as z:
                    paths = [str(p) for p in z["paths"]]
                    shape = z["embeddings"].shape
                    sizes = z["sizes"].tolist() if "sizes" in z else [None] * len(paths)
                    mtimes = z["mtimes"].tolist() if "mtimes" in z else [None] * len(paths)
            else:
                shape = np.load(self.path, mmap_mode="r").shape
                with open(self.paths_txt, encoding="utf-8", errors="surrogateescape") as f:
                    paths = f.read().splitlines()
                sizes, mtimes = [None] * len(paths), [None] * len(paths)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("%s: cannot be read (%s); its embeddings will be computed again", self.path, exc)
            return
        if len(shape) != 2 or shape[1] != self.dim:
            raise InvalidArgumentError(f"{self.path!r} holds embeddings of shape {tuple(shape)}, but this checkpoint "
                                       f"gives {self.dim} values: use another file or --overwrite")
        # the .npy and its paths are two files: only rows with both count (the journal has the rest)
        for row, p in enumerate(paths[:shape[0]]):
            size = None if sizes[row] is None or sizes[row] < 0 else int(sizes[row])
            mtime = None if mtimes[row] is None or math.isnan(mtimes[row]) else float(mtimes[row])
            self._index[p] = (size, mtime, ("final", row))

    def _open_partial(self) -> None:
        good = 0
        if os.path.exists(self.partial):
            with open(self.partial, "rb") as f:
                head = f.read(_HEADER.size)
                if len(head) == _HEADER.size:
                    magic, _, dim = _HEADER.unpack(head)
                    if magic != _MAGIC:
                        raise InvalidArgumentError(f"{self.partial!r} is not an embeddings journal; move it away")
                    if dim != self.dim:
                        raise InvalidArgumentError(f"{self.partial!r} holds {dim}-value embeddings, but this "
                                                   f"checkpoint gives {self.dim}: use another file or --overwrite")
                    good = _HEADER.size
                    for p, size, mtime, offset, end in self._journal(f):
                        self._index[p] = (size, mtime, ("partial", offset))
                        good = end
            if good < os.path.getsize(self.partial):
                if good:
                    log.warning("%s: an incomplete last entry (from an interrupted run) was removed", self.partial)
                with open(self.partial, "r+b") as f:
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
        self._file: IO[bytes] = open(self.partial, "ab")
        if good == 0:
            self._file.write(_HEADER.pack(_MAGIC, 1, self.dim))
            self._file.flush()
            os.fsync(self._file.fileno())
            _fsync_dir(self.partial)

    def _journal(self, f: IO[bytes]) -> Iterator[tuple[str, Optional[int], Optional[float], int, int]]:
        """``(path, size, mtime, row offset, entry end)`` of each intact entry, from the header on."""
        row_bytes = 4 * self.dim
        pos = _HEADER.size
        f.seek(pos)
        while True:
            head = f.read(_ENTRY.size)
            if len(head) < _ENTRY.size:
                return
            size, mtime, n = _ENTRY.unpack(head)
            body = f.read(n + row_bytes + 4)
            if len(body) < n + row_bytes + 4:
                return
            crc = struct.unpack("<I", body[-4:])[0]
            if zlib.crc32(head + body[:-4]) != crc:
                return
            path = body[:n].decode("utf-8", "surrogateescape")
            end = pos + _ENTRY.size + len(body)
            yield path, (None if size < 0 else size), (None if math.isnan(mtime) else mtime), \
                pos + _ENTRY.size + n, end
            pos = end

    def has(self, path: str, size: Optional[int], mtime: Optional[float]) -> bool:
        """Whether ``path`` has a row computed from this size and mtime (rows of a ``.npy``,
        which keeps no sizes or mtimes, count when present)."""
        entry = self._index.get(path)
        if entry is None or size is None:
            return False
        return entry[0] is None or (entry[0], entry[1]) == (size, mtime)

    def append(self, results: Sequence[FileResult]) -> None:
        """Journal the embeddings of the successful ``results``, then flush and fsync."""
        parts = []
        offset = self._file.tell()
        for r in results:
            if not r.ok or r.embedding is None or r.path is None:
                continue
            name = r.path.encode("utf-8", "surrogateescape")
            head = _ENTRY.pack(-1 if r.size is None else r.size, math.nan if r.mtime is None else r.mtime, len(name))
            body = name + np.ascontiguousarray(r.embedding, dtype="<f4").tobytes()
            if len(body) - len(name) != 4 * self.dim:
                raise InvalidArgumentError(f"an embedding of {len(r.embedding)} values for a {self.dim}-value store")
            parts.append(head + body + struct.pack("<I", zlib.crc32(head + body)))
            self._index[r.path] = (r.size, r.mtime, ("partial", offset + len(head) + len(name)))
            offset += len(parts[-1])
        if parts:
            self._file.write(b"".join(parts))
            self._file.flush()
            os.fsync(self._file.fileno())

    def __len__(self) -> int:
        return len(self._index)

    def finalize(self) -> None:
        """Write the ``.npz`` (or ``.npy`` and ``.paths.txt``) atomically, then delete the journal."""
        self._file.close()
        paths = list(self._index)
        final = None
        if any(where[0] == "final" for _, _, where in self._index.values()):
            final = np.load(self.path)["embeddings"] if self.kind == "npz" else np.load(self.path, mmap_mode="r")
        with open(self.partial, "rb") as journal:
            def rows() -> Iterator[np.ndarray]:
                for p in paths:
                    kind, at = self._index[p][2]
                    if kind == "final":
                        yield np.asarray(final[at], dtype="<f4")  # type: ignore[index]
                    else:
                        journal.seek(at)
                        yield np.frombuffer(journal.read(4 * self.dim), dtype="<f4")

            if self.kind == "npz":
                sizes = np.array([-1 if self._index[p][0] is None else self._index[p][0] for p in paths], np.int64)
                mtimes = np.array([math.nan if self._index[p][1] is None else self._index[p][1] for p in paths])
                with _atomic_open(self.path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED,
                                                                         allowZip64=True) as z:
                    for name, array in (("paths", np.array(paths, dtype=str)), ("sizes", sizes), ("mtimes", mtimes)):
                        with z.open(name + ".npy", "w", force_zip64=True) as member:
                            np.lib.format.write_array(member, array, allow_pickle=False)
                    with z.open("embeddings.npy", "w", force_zip64=True) as member:
                        _write_rows(member, rows(), len(paths), self.dim)
            else:
                with _atomic_open(self.paths_txt, "wb") as f:  # paths first: see _load_final
                    f.write("".join(p + "\n" for p in paths).encode("utf-8", "surrogateescape"))
                with _atomic_open(self.path, "wb") as f:
                    _write_rows(f, rows(), len(paths), self.dim)
        final = None  # release the old matrix before the journal goes
        _fsync_dir(self.path)
        os.unlink(self.partial)


def _write_rows(f: IO[bytes], rows: Iterator[np.ndarray], n: int, dim: int) -> None:
    """Stream an ``(n, dim)`` float32 ``.npy`` array, so memory does not grow with ``n``."""
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
    block: list[np.ndarray] = []
    for row in rows:
        block.append(row)
        if len(block) == 1024:
            f.write(np.stack(block).tobytes())
            block = []
    if block:
        f.write(np.stack(block).tobytes())


# -- progress ----------------------------------------------------------------------------------


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
