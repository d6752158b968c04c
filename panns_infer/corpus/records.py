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

from ..errors import InvalidArgumentError
from ..events import _atomic_open
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
