"""Resumable embedding output: an append-only journal, written atomically as .npz or .npy."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import struct
import zipfile
import zlib
from typing import IO, Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import InvalidArgumentError, OutputFileError
from ..events import _atomic_open
from .header import Lock, RunHeader, foreign_file_error, record_key
from .records import _fsync_dir
from .run import FileResult

log = logging.getLogger("panns_infer")

_MAGIC = b"PANNSEMB"
_HEADER = struct.Struct("<8sII")  # magic, version, dimension
_ENTRY = struct.Struct("<qdI")  # size, mtime, path length
_JOURNAL_VERSION = 2  # the header is followed by the RunHeader's JSON (uint32 length, then the bytes)


class EmbeddingStore:
    """Embeddings of a corpus in ``FILE.npz`` or ``FILE.npy``, resumable.

    During a run, rows are appended to ``FILE.partial``, an append-only journal (a header,
    then ``(path, size, mtime, float32 row, CRC32)`` entries), fsynced per batch; a torn or
    corrupt tail (a kill mid-write) is cut off when the journal is opened again.
    :meth:`finalize` merges the previous output with the journal (a path's latest row wins;
    order: first appearance) and writes it atomically, then deletes the journal.

    * ``.npz``: arrays ``paths`` (str), ``embeddings`` (float32, ``(N, D)``), ``sizes`` and
      ``mtimes`` (what the rows were computed from), and ``header`` (the
      :class:`~panns_infer.corpus.header.RunHeader` as JSON text).
    * ``.npy``: the ``(N, D)`` matrix, and ``FILE.paths.jsonl``: the header on the first
      line, then one JSON object (``path``, ``size``, ``mtime``) per row, in row order. JSON
      escapes every control and line-separator character, so any path survives.

    Paths are stored as resolved absolute paths (:func:`record_key`), the key :meth:`has`
    matches. Files without this package's header are never written into, a header of
    another checkpoint or other options is refused, and the output is locked while the
    store is open.

    Args:
        path: the ``.npz`` or ``.npy`` file.
        dim: the embedding size.
        header: the identity of the rows this run writes.
        overwrite: start again (only files this package wrote).

    Raises:
        InvalidArgumentError: another extension.
        OutputFileError: existing files of another tool, checkpoint, options or dimension.

    >>> h = RunHeader(model="Cnn14", sha256="0" * 64, arch="Cnn14")
    >>> store = EmbeddingStore("emb.npz", 2048, header=h)                   # doctest: +SKIP
    >>> store.has("a.wav", *file_stat("a.wav"))                           # doctest: +SKIP
    True
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], dim: int, *, header: RunHeader,
                 overwrite: bool = False) -> None:
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in (".npz", ".npy"):
            raise InvalidArgumentError(f"embeddings are written to a .npz or .npy file, got {self.path!r}")
        self.kind = ext[1:]
        self.dim = dim
        self.header = header
        self.partial = self.path + ".partial"
        self.paths_file = self.path + ".paths.jsonl"
        # path -> (size, mtime, where): where is ("final", row) or ("partial", byte offset of the row)
        self._index: dict[str, tuple[Optional[int], Optional[float], tuple[str, int]]] = {}
        self._head = self._journal_head()
        self._lock = Lock(self.path)
        try:
            self._load_final(check_only=overwrite)
            if overwrite:
                self._journal_header(check_only=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.partial)
            self._open_partial()
        except BaseException:
            self._lock.release()
            raise

    def _journal_head(self) -> bytes:
        meta = self.header.to_json().encode("ascii")
        return _HEADER.pack(_MAGIC, _JOURNAL_VERSION, self.dim) + struct.pack("<I", len(meta)) + meta

    def _load_final(self, *, check_only: bool) -> None:
        """Index the rows of an existing output (only check whose it is with ``check_only``)."""
        if not os.path.exists(self.path):
            if self.kind == "npy" and os.path.exists(self.paths_file):
                # paths without their matrix: a kill between the two writes (the journal still
                # holds the rows), or another tool's file, which is never replaced
                with open(self.paths_file, "rb") as f:
                    RunHeader.from_json(f.readline().decode("ascii", "replace"), self.paths_file)
            return
        try:
            if self.kind == "npz":
                with np.load(self.path) as z:
                    if "header" not in z.files:
                        raise foreign_file_error(self.path)
                    found = RunHeader.from_json(str(z["header"]), self.path)
                    paths = [str(p) for p in z["paths"]]
                    shape = z["embeddings"].shape
                    sizes, mtimes = z["sizes"].tolist(), z["mtimes"].tolist()
            else:
                if not os.path.exists(self.paths_file):
                    raise foreign_file_error(self.path)
                with open(self.paths_file, "rb") as f:
                    lines = f.read().split(b"\n")  # JSON escapes every other line break
                found = RunHeader.from_json(lines[0].decode("ascii", "replace"), self.paths_file)
                rows = [json.loads(line) for line in lines[1:] if line]
                paths = [r["path"] for r in rows]
                sizes = [r["size"] for r in rows]
                mtimes = [r["mtime"] for r in rows]
                shape = np.load(self.path, mmap_mode="r").shape
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            if isinstance(exc, OutputFileError):
                raise
            raise OutputFileError(f"{self.path!r} cannot be read as embeddings this package wrote ({exc}): it is "
                                  "left untouched. Choose another file, or remove it yourself") from None
        if check_only:
            return
        found.check(self.header, self.path)
        if len(shape) != 2 or shape[1] != self.dim:
            raise OutputFileError(f"{self.path!r} holds embeddings of shape {tuple(shape)}, but this checkpoint "
                                  f"gives {self.dim} values: use another file or --overwrite")
        # the .npy and its paths are two files: only rows with both count (the journal has the rest)
        for row, p in enumerate(paths[:shape[0]]):
            size = None if sizes[row] is None or sizes[row] < 0 else int(sizes[row])
            mtime = None if mtimes[row] is None or math.isnan(mtimes[row]) else float(mtimes[row])
            self._index[p] = (size, mtime, ("final", row))

    def _journal_header(self, *, check_only: bool = False) -> int:
        """Check an existing journal's header; returns its length (0: no journal, or a torn header)."""
        if not os.path.exists(self.partial) or os.path.getsize(self.partial) == 0:
            return 0
        with open(self.partial, "rb") as f:
            head = f.read(_HEADER.size + 4)
            if len(head) < _HEADER.size + 4:
                return 0
            magic, version, dim = _HEADER.unpack(head[:_HEADER.size])
            if magic != _MAGIC or version != _JOURNAL_VERSION:
                raise OutputFileError(f"{self.partial!r} is not an embeddings journal of this version; it is left "
                                      "untouched: move it away")
            (n,) = struct.unpack("<I", head[_HEADER.size:])
            meta = f.read(n)
        if len(meta) < n:
            return 0
        found = RunHeader.from_json(meta.decode("ascii", "replace"), self.partial)
        if not check_only:
            found.check(self.header, self.partial)
            if dim != self.dim:
                raise OutputFileError(f"{self.partial!r} holds {dim}-value embeddings, but this checkpoint gives "
                                      f"{self.dim}: use another file or --overwrite")
        return _HEADER.size + 4 + n

    def _open_partial(self) -> None:
        good = self._journal_header()
        if good:
            with open(self.partial, "rb") as f:
                for p, size, mtime, offset, end in self._journal(f, good):
                    self._index[p] = (size, mtime, ("partial", offset))
                    good = end
        if os.path.exists(self.partial) and good < os.path.getsize(self.partial):
            if good:
                log.warning("%s: an incomplete last entry (from an interrupted run) was removed", self.partial)
            with open(self.partial, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        self._file: IO[bytes] = open(self.partial, "ab")
        if good == 0:
            self._file.write(self._head)
            self._file.flush()
            os.fsync(self._file.fileno())
            _fsync_dir(self.partial)

    def _journal(self, f: IO[bytes], pos: int) -> Iterator[tuple[str, Optional[int], Optional[float], int, int]]:
        """``(path, size, mtime, row offset, entry end)`` of each intact entry, from ``pos`` on."""
        row_bytes = 4 * self.dim
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
        entry = self._index.get(record_key(path))
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
            key = record_key(r.path)
            name = key.encode("utf-8", "surrogateescape")
            head = _ENTRY.pack(-1 if r.size is None else r.size, math.nan if r.mtime is None else r.mtime, len(name))
            body = name + np.ascontiguousarray(r.embedding, dtype="<f4").tobytes()
            if len(body) - len(name) != 4 * self.dim:
                raise InvalidArgumentError(f"an embedding of {len(r.embedding)} values for a {self.dim}-value store")
            parts.append(head + body + struct.pack("<I", zlib.crc32(head + body)))
            self._index[key] = (r.size, r.mtime, ("partial", offset + len(head) + len(name)))
            offset += len(parts[-1])
        if parts:
            self._file.write(b"".join(parts))
            self._file.flush()
            os.fsync(self._file.fileno())

    def __len__(self) -> int:
        return len(self._index)

    def finalize(self) -> None:
        """Write the ``.npz`` (or ``.npy`` and ``.paths.jsonl``) atomically, delete the journal and
        release the lock."""
        try:
            self._finalize()
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop without writing the output (the journal stays for the next run) and release the lock."""
        self._file.close()
        self._lock.release()

    def _finalize(self) -> None:
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
                        # final is loaded whenever an entry lives there
                        yield np.asarray(final[at], dtype="<f4")  # type: ignore[index]
                    else:
                        journal.seek(at)
                        yield np.frombuffer(journal.read(4 * self.dim), dtype="<f4")

            if self.kind == "npz":
                sizes = np.array([-1 if self._index[p][0] is None else self._index[p][0] for p in paths], np.int64)
                mtimes = np.array([math.nan if self._index[p][1] is None else self._index[p][1] for p in paths])
                with _atomic_open(self.path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED,
                                                                         allowZip64=True) as z:
                    for name, array in (("paths", np.array(paths, dtype=str)), ("sizes", sizes), ("mtimes", mtimes),
                                        ("header", np.array(self.header.to_json()))):
                        with z.open(name + ".npy", "w", force_zip64=True) as member:
                            np.lib.format.write_array(member, array, allow_pickle=False)
                    with z.open("embeddings.npy", "w", force_zip64=True) as member:
                        _write_rows(member, rows(), len(paths), self.dim)
            else:
                with _atomic_open(self.paths_file, "wb") as f:  # paths first: see _load_final
                    f.write((self.header.to_json() + "\n").encode("ascii"))
                    for p in paths:
                        size, mtime, _ = self._index[p]
                        f.write((json.dumps({"path": p, "size": size, "mtime": mtime}) + "\n").encode("ascii"))
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
