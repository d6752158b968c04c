"""What an output file says about itself: the header naming the tool, the model and the
options its records were made with, the key that identifies a record, and the run's lock.

Every corpus output (JSONL, CSV, the events TSV's records, ``.npz``, ``.npy``) starts with a
:class:`RunHeader`. A run resumes a file only when the header it finds matches its own; a
file without one was not written by this package and is never written into.

>>> h = RunHeader(model="Cnn6", sha256="ab" * 32, arch="Cnn6", options={"top_k": 5})
>>> RunHeader.from_dict(h.to_dict(), "out.jsonl") == h
True
>>> h.differences(RunHeader(model="Cnn6", sha256="ab" * 32, arch="Cnn6", options={"top_k": 3}))
['top_k: 5 in the file, 3 in this run']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional

from ..errors import OutputFileError

__all__ = ["RunHeader", "FORMAT", "record_key", "checkpoint_sha256", "output_lock", "foreign_file_error"]

#: The ``format`` value of every header this package writes.
FORMAT = "panns-infer/records"
_VERSION = 1


def _tool() -> str:
    from .. import __version__

    return f"panns-infer {__version__}"


@dataclass(frozen=True)
class RunHeader:
    """The identity of an output file's records.

    Attributes:
        model: the checkpoint's name (registry name, or file name).
        sha256: the checkpoint file's SHA-256 (hex): what proves two runs used one model.
        arch: the architecture.
        options: the options that shape records (``top_k``, ``window``, event thresholds...);
            JSON values only.
        tool: the program and version that wrote the file (informative, not compared).
    """

    model: str
    sha256: str
    arch: str
    options: Mapping[str, Any] = field(default_factory=dict)
    tool: str = field(default_factory=_tool)

    def to_dict(self) -> dict:
        """The header as written: ``format``, ``version``, ``tool``, ``model``,
        ``checkpoint_sha256``, ``arch`` and ``options``."""
        return {"format": FORMAT, "version": _VERSION, "tool": self.tool, "model": self.model,
                "checkpoint_sha256": self.sha256, "arch": self.arch, "options": dict(self.options)}

    def to_json(self) -> str:
        """One line of ASCII JSON (no line breaks, whatever the option values hold)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "RunHeader":
        """Read a header back.

        Raises:
            OutputFileError: ``data`` is not a header this package writes.
        """
        if (not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("options"), dict)
                or not all(isinstance(data.get(k), str) for k in ("model", "checkpoint_sha256", "arch"))):
            raise foreign_file_error(where)
        if data.get("version") != _VERSION:
            raise OutputFileError(f"{where!r} was written by {data.get('tool', 'another version')!r} in a "
                                  f"record format this version does not read (version {data.get('version')!r}): "
                                  "choose another output file, or --overwrite to start it again")
        return cls(data["model"], data["checkpoint_sha256"], data["arch"], data["options"],
                   str(data.get("tool", "")))

    @classmethod
    def from_json(cls, text: str, where: str) -> "RunHeader":
        """:meth:`from_dict` of a JSON text (anything else is a foreign file)."""
        try:
            data = json.loads(text)
        except ValueError:
            raise foreign_file_error(where) from None
        return cls.from_dict(data, where)

    def differences(self, run: "RunHeader") -> list[str]:
        """What differs between this (a file's) header and ``run``'s, one phrase each."""
        out = []
        if self.sha256 != run.sha256:
            out.append(f"checkpoint: {self.model} (sha256 {self.sha256[:12]}...) in the file, "
                       f"{run.model} (sha256 {run.sha256[:12]}...) in this run")
        if self.arch != run.arch:
            out.append(f"arch: {self.arch} in the file, {run.arch} in this run")
        for key in sorted(set(self.options) | set(run.options)):
            mine, theirs = self.options.get(key), run.options.get(key)
            if mine != theirs:
                out.append(f"{key}: {mine!r} in the file, {theirs!r} in this run")
        return out

    def check(self, run: "RunHeader", where: str) -> None:
        """Raise unless ``run`` may add records to a file with this header.

        Raises:
            OutputFileError: naming each difference.
        """
        diff = self.differences(run)
        if diff:
            raise OutputFileError(f"{where!r} holds records made otherwise ({'; '.join(diff)}): resuming would mix "
                                  "them. Use the same checkpoint and options, another output file, or "
                                  "--overwrite to start it again")


def foreign_file_error(where: str) -> OutputFileError:
    """The error for an existing file that does not start with this package's header."""
    return OutputFileError(f"{where!r} exists and was not written by panns-tag (it has no panns-infer header): "
                           "it is left untouched. Choose another output file, or remove it yourself")


def record_key(path: str) -> str:
    """What identifies a record: the file's resolved absolute path (symbolic links, ``.``
    and ``..`` resolved), so ``corpus/a.wav`` and ``./corpus/a.wav`` are one file.

    >>> record_key("a/../b.wav") == os.path.join(os.path.realpath("."), "b.wav")
    True
    """
    return os.path.realpath(path)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def checkpoint_sha256(path: "os.PathLike[str] | str") -> str:
    """The SHA-256 (hex) of a checkpoint file (cached per path, size and mtime).

    >>> checkpoint_sha256(__file__) == hashlib.sha256(open(__file__, "rb").read()).hexdigest()
    True
    """
    name = os.fspath(path)
    st = os.stat(name)
    key = (os.path.realpath(name), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


@contextlib.contextmanager
def output_lock(path: str) -> Iterator[None]:
    """Hold ``PATH.lock`` for the block: a second run on the same output fails at once.

    Raises:
        OutputFileError: another run holds the lock.
    """
    import filelock

    lock = filelock.FileLock(path + ".lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise OutputFileError(f"another panns-tag run is writing {path!r} (it holds {path + '.lock'!r}): wait for it "
                              "to finish, or choose another output file") from None
    try:
        yield
    finally:
        lock.release()


class Lock:
    """:func:`output_lock` held from construction until :meth:`release` (for objects that
    keep a file open across calls)."""

    def __init__(self, path: str) -> None:
        self._cm: Optional[contextlib.AbstractContextManager] = output_lock(path)
        self._cm.__enter__()

    def release(self) -> None:
        """Release the lock (again: no effect)."""
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)
