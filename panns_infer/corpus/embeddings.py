"""Resumable embedding output: an append-only journal, written atomically as .npz or .npy."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import zipfile
import zlib
from typing import IO, Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import InvalidArgumentError
from ..events import _atomic_open
from .records import _fsync_dir
from .run import FileResult

log = logging.getLogger("panns_infer")

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
