"""Finding the audio files of a corpus: files, directories, globs and ``@manifest`` files."""

from __future__ import annotations

import glob
import logging
import os
from typing import Iterable, Iterator, Optional, Union

from ..errors import InvalidArgumentError

log = logging.getLogger("panns_infer")

#: Extensions (lower case, without the dot) of the formats libsndfile reads, and of the audio
#: and video containers read through PyAV; directories and globs yield only files with one of
#: these (a file named explicitly is decoded by its content, whatever its extension).
AUDIO_EXTENSIONS = frozenset({
    "wav", "wave", "bwf", "rf64", "w64", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif", "aifc", "au",
    "snd", "caf", "sd2", "voc", "iff", "svx", "nist", "sph", "ircam", "sf", "paf", "pvf", "xi", "sds", "avr",
    "wve", "mpc",
    # through PyAV
    "m4a", "m4b", "mp4", "m4v", "mov", "3gp", "3g2", "aac", "adts", "mka", "mkv", "webm", "weba", "wma", "wmv",
    "asf", "avi", "ts", "mts", "m2ts", "mpg", "mpeg", "vob", "flv", "amr", "ac3", "eac3", "dts", "ape", "wv",
    "tta", "spx", "dsf",
})

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

_GLOB_CHARS = frozenset("*?[")


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
    """  # noqa: E501 - the example shows the whole error message, as users see it
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
