"""Resumable record files (JSONL, CSV) and the DCASE events TSV of a corpus run."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from ..errors import InvalidArgumentError, OutputFileError
from ..events import TSV_HEADER, _atomic_open
from .header import Lock, RunHeader, foreign_file_error, record_key
from .run import FileResult

log = logging.getLogger("panns_infer")


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

    The first line is the :class:`~panns_infer.corpus.header.RunHeader` (JSON; in a CSV
    after ``#``), then one record per file. ``jsonl``: one JSON object per line
    (:meth:`FileResult.to_dict`). ``csv`` (RFC 4180: ``\\r\\n`` line ends, fields quoted
    when they hold a comma, quote or line break): columns ``path, duration, sample_rate,
    model, size, mtime, label_1, score_1, ... label_k, score_k, error`` and, with ``full``,
    one column of probabilities per class (named after it); read it with
    ``pandas.read_csv(path, skiprows=1)``.

    A record's ``path`` is the file's resolved absolute path (:func:`record_key`), which is
    what :meth:`is_done` matches. Opening an existing file checks its header against
    ``header`` and refuses (:class:`~panns_infer.errors.OutputFileError`) a file without one
    (another tool's), one made with another checkpoint or other options, or one with an
    unreadable line in the middle; only a torn last line (an interrupted write) is cut off.
    The file is locked (``PATH.lock``) until :meth:`close`, so two runs cannot write it at once.
    :meth:`drop` removes the records of files that will be redone (errors, changed files),
    rewriting the file atomically; :meth:`append` writes, flushes and fsyncs a batch of records.

    Args:
        path: the output file.
        header: the identity of the records this run writes.
        format: ``"jsonl"`` or ``"csv"`` (default: from the extension).
        top_k: labels per record (the CSV's columns).
        full: add every class's probability.
        class_names: the class names (needed for ``full`` CSV columns).
        overwrite: start the file again (only a file this package wrote).

    Raises:
        InvalidArgumentError: unknown format.
        OutputFileError: the file cannot be resumed or replaced (see above).

    >>> h = RunHeader(model="Cnn14", sha256="0" * 64, arch="Cnn14", options={"top_k": 3})
    >>> out = RecordFile("tags.jsonl", header=h, top_k=3)                # doctest: +SKIP
    >>> out.is_done("a.wav", *file_stat("a.wav"))                        # doctest: +SKIP
    True
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, header: RunHeader, format: Optional[str] = None,
                 top_k: int = 10, full: bool = False, class_names: Optional[Sequence[str]] = None,
                 overwrite: bool = False) -> None:
        self.path = os.fspath(path)
        self.format = format or record_format(self.path)
        if self.format not in ("jsonl", "csv"):
            raise InvalidArgumentError(f"record files are 'jsonl' or 'csv', got {self.format!r}")
        self.header = header
        self.full = full
        self.top_k = top_k
        self.columns = ["path", "duration", "sample_rate", "model", "size", "mtime"]
        for i in range(1, top_k + 1):
            self.columns += [f"label_{i}", f"score_{i}"]
        self.columns.append("error")
        if full and self.format == "csv":
            if class_names is None:
                raise InvalidArgumentError("full CSV records need the class names (one column per class)")
            self.columns += list(class_names)
        self._done: dict[str, _Done] = {}
        self._head = self._header_bytes()
        self._lock = Lock(self.path)
        try:
            exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
            if exists and overwrite:
                self._read_header()  # only a file this package wrote is replaced
            if overwrite or not exists:
                self._create()
            else:
                self._load()
            self._file: IO[bytes] = open(self.path, "ab")
        except BaseException:
            self._lock.release()
            raise

    def _header_bytes(self) -> bytes:
        if self.format == "jsonl":
            return (self.header.to_json() + "\n").encode("ascii")
        return ("#" + self.header.to_json() + "\r\n").encode("ascii") + _encode_csv(self.columns)

    # reading

    def _create(self) -> None:
        with _atomic_open(self.path, "wb") as f:
            f.write(self._head)
        _fsync_dir(self.path)

    def _read_header(self) -> RunHeader:
        """The file's header (raises when it has none: a file of another tool)."""
        with open(self.path, "rb") as f:
            first = f.readline(1 << 20)
        text = first.decode("utf-8", "replace").rstrip("\r\n")
        if self.format == "csv":
            if not text.startswith("#"):
                raise foreign_file_error(self.path)
            text = text[1:]
        if not first.endswith(b"\n"):
            raise foreign_file_error(self.path)
        return RunHeader.from_json(text, self.path)

    def _entries(self, f: IO[bytes]) -> Iterator[tuple[int, int, dict]]:
        """``(start, end, record)`` of each complete entry after the header; stops before a
        torn last entry.

        Raises:
            OutputFileError: an entry in the middle cannot be read.
        """
        offset, number = self._skip_header(f)
        chunk, start = b"", 0
        for line in f:
            if not chunk:
                start = offset
                number += 1
            offset += len(line)
            chunk += line
            if not chunk.endswith(b"\n"):
                return  # torn: the file ends inside this entry
            if self.format == "csv" and chunk.count(b'"') % 2:
                continue  # a quoted field with a line break inside: the entry goes on
            yield start, offset, self._parse(chunk, number)
            chunk = b""
        if chunk.endswith(b"\n"):
            # whole lines, but a quote opened at `number` never closes: a damaged row, not a
            # torn write (which stops mid-line); cutting it would lose every row after it
            raise OutputFileError(f"{self.path!r}: line {number} opens a quoted field that never closes: it was "
                                  "edited or damaged. Fix or remove that line, or use another output file, or "
                                  "--overwrite to start it again")

    def _skip_header(self, f: IO[bytes]) -> tuple[int, int]:
        """Move past the header (and a CSV's column row); returns ``(offset, lines)``."""
        f.seek(0)
        f.readline()  # the header: checked by _read_header
        number = 1
        if self.format == "csv":
            number += 1
            if f.readline() != _encode_csv(self.columns):
                raise OutputFileError(f"{self.path!r} has other columns than this run writes: use the same "
                                      "options (--top-k, --full, --labels), another output file, or --overwrite")
        return f.tell(), number

    def _parse(self, raw: bytes, number: int) -> dict:
        text = raw.decode("utf-8", "surrogateescape")
        rec: Any = None
        try:
            if self.format == "jsonl":
                rec = json.loads(text)
            else:
                fields = next(csv.reader(io.StringIO(text, newline="")))
                if len(fields) == len(self.columns):
                    rec = dict(zip(self.columns, fields))
                    rec = {"path": rec["path"], "size": int(rec["size"]) if rec["size"] else None,
                           "mtime": float(rec["mtime"]) if rec["mtime"] else None, "error": rec["error"] or None}
        except (ValueError, KeyError, StopIteration, csv.Error):
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
            raise OutputFileError(f"{self.path!r}: line {number} is not a record this run can read "
                                  f"({raw[:80]!r}...): it was edited or damaged. Fix or remove that line, or use "
                                  "another output file, or --overwrite to start it again")
        return rec

    def _load(self) -> None:
        self._read_header().check(self.header, self.path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            end = self._skip_header(f)[0]
            for _, entry_end, rec in self._entries(f):
                end = entry_end  # after the loop: where the last complete record ends
                self._done[rec["path"]] = _Done(rec.get("size"), rec.get("mtime"), rec.get("error") is None)
        if end < size:
            log.warning("%s: an incomplete last record (from an interrupted run) was removed", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())

    def _rewrite(self, keep: Callable[[dict], bool]) -> None:
        """Rewrite the file atomically with the complete entries that ``keep`` accepts."""
        with open(self.path, "rb") as src, _atomic_open(self.path, "wb") as dst:
            dst.write(self._head)
            entries = list(self._entries(src))  # offsets only: the bytes are copied below
            for start, end, rec in entries:
                if keep(rec):
                    src.seek(start)
                    dst.write(src.read(end - start))
        _fsync_dir(self.path)

    # state

    def is_done(self, path: str, size: Optional[int], mtime: Optional[float]) -> bool:
        """Whether ``path`` has a successful record with this size and mtime."""
        done = self._done.get(record_key(path))
        return done is not None and done.ok and size is not None and (done.size, done.mtime) == (size, mtime)

    def has(self, path: str) -> bool:
        """Whether ``path`` has any record (success or error)."""
        return record_key(path) in self._done

    def drop(self, paths: Iterable[str]) -> int:
        """Remove the records of ``paths`` (files about to be redone); returns how many.

        The file is rewritten atomically, so a kill during this leaves the old one.
        """
        doomed = {k for k in map(record_key, paths) if k in self._done}
        if doomed:
            self._file.close()
            self._rewrite(lambda rec: rec["path"] not in doomed)
            for p in doomed:
                del self._done[p]
            self._file = open(self.path, "ab")
        return len(doomed)

    # writing

    def append(self, results: Sequence[FileResult]) -> None:
        """Write the records of ``results``, then flush and fsync."""
        results = [r for r in results if r.path is not None]
        data = b"".join(self._encode(r) for r in results)
        if not data:
            return
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        for r in results:
            # corpus files are paths (bytes have no path and no record)
            self._done[record_key(r.path)] = _Done(r.size, r.mtime, r.ok)  # type: ignore[arg-type]

    def _encode(self, r: FileResult) -> bytes:
        key = record_key(r.path)  # type: ignore[arg-type]  # corpus files are paths
        if self.format == "jsonl":
            rec = r.to_dict(full=self.full, model=self.header.model)
            rec["path"] = key
            return (json.dumps(rec) + "\n").encode("ascii")
        row: list[Any] = [key, _num(r.duration), r.sample_rate, self.header.model, r.size, r.mtime]
        labels = r.tags.labels if r.tags is not None else []
        scores: Any = r.tags.scores if r.tags is not None else []  # an array, or an empty list
        for i in range(self.top_k):
            row += [labels[i], float(scores[i])] if i < len(labels) else ["", ""]
        row.append(r.error or "")
        if self.full:
            if r.tags is not None:
                row += [float(p) for p in r.tags.probabilities]
            else:
                row += [""] * (len(self.columns) - len(row))
        return _encode_csv(row)

    def close(self) -> None:
        """Close the file (records are already on disk) and release its lock."""
        if not self._file.closed:
            self._file.close()
        self._lock.release()

    def __enter__(self) -> "RecordFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _encode_csv(row: Sequence[Any]) -> bytes:
    """One RFC 4180 row: ``\\r\\n``-terminated, so a ``\\r`` or ``\\n`` in a field gets quoted."""
    buf = io.StringIO(newline="")
    csv.writer(buf).writerow(["" if v is None else v for v in row])
    return buf.getvalue().encode("utf-8", "surrogateescape")


def _num(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 6)


def record_format(path: str) -> Optional[str]:
    """The output format an extension stands for: ``jsonl``, ``csv``, ``tsv`` or ``None``.

    >>> record_format("tags.JSONL"), record_format("tags.csv"), record_format("tags.txt")
    ('jsonl', 'csv', None)
    """
    ext = os.path.splitext(path)[1].lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(ext)


# -- events TSV --------------------------------------------------------------------------------


class EventsTsv(RecordFile):
    """Sound events of a corpus as one DCASE TSV (``filename onset offset event_label``).

    A TSV row has no room for a header, a file's size or its mtime, so the records live in
    ``FILE.jsonl`` beside it (a :class:`RecordFile`: headed, locked, resumable) and
    :meth:`finalize` writes the TSV from them atomically. The ``filename`` column holds the
    file's resolved absolute path, as the records do (the column keeps its DCASE name so that
    ``sed_eval`` and ``psds_eval`` read the file). A DCASE row cannot hold a tab or a line break,
    so :meth:`append` refuses paths with one (:func:`tsv_name_problem`). A TSV without its
    records file was not written by this package and is never replaced.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, header: RunHeader, overwrite: bool = False) -> None:
        self.tsv_path = os.fspath(path)
        records = self.tsv_path + ".jsonl"
        if os.path.exists(self.tsv_path) and os.path.getsize(self.tsv_path) > 0 and not os.path.exists(records):
            raise foreign_file_error(self.tsv_path)
        super().__init__(records, header=header, format="jsonl", top_k=0, overwrite=overwrite)

    def append(self, results: Sequence[FileResult]) -> None:
        for r in results:
            problem = tsv_name_problem(r.path)
            if problem:
                raise InvalidArgumentError(problem)
        super().append(results)

    def finalize(self) -> None:
        """Write the TSV from the records (the records file stays, for the next resume)."""
        self.close()
        lines = ["\t".join(TSV_HEADER) + "\n"]
        with open(self.path, "rb") as f:
            records = [rec for _, _, rec in self._entries(f)]
        for rec in records:
            for e in rec.get("events") or ():
                lines.append(f"{rec['path']}\t{e['onset']:.3f}\t{e['offset']:.3f}\t{e['label']}\n")
        with _atomic_open(self.tsv_path, "wb") as f:
            f.write("".join(lines).encode("utf-8", "surrogateescape"))
        _fsync_dir(self.tsv_path)


def tsv_name_problem(path: Optional[str]) -> Optional[str]:
    """Why ``path`` cannot be a DCASE TSV ``filename`` (a tab or a line break), or ``None``.

    >>> tsv_name_problem("a b.wav") is None, tsv_name_problem("a\\tb.wav") is not None
    (True, True)
    """
    if path is not None and any(ch in path for ch in "\t\r\n"):
        return (f"{path!r} holds a tab or a line break, which a DCASE TSV row cannot hold: rename the file, "
                "or write the events as JSON Lines (--output FILE.jsonl)")
    return None


# -- embeddings --------------------------------------------------------------------------------
