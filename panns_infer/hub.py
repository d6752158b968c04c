"""Weights and labels: a verified download cache, with offline and mirror modes.

Files go to :func:`cache_dir` (``PANNS_INFER_CACHE``, else the platform's user cache
folder): released checkpoints to ``checkpoints/``, the AudioSet label list to ``labels/``, and
checkpoints given by URL to ``urls/<sha256(url)[:16]>/<file name>``, where the file name is the
server's (``Content-Disposition``, else the URL's path), reduced to a safe base name by
:mod:`panns_infer.filenames`. The AudioSet label list ships with the package; ``labels/`` holds
a downloaded copy only when that one is damaged.

A download is streamed to ``NAME.<uuid>.incomplete`` in the destination folder, under a file
lock (``NAME.lock``) so that concurrent processes download a file once. A dropped connection
is resumed with an HTTP ``Range`` request; connection resets, timeouts and 5xx answers are
retried with exponential backoff, while a host name that does not resolve, a TLS certificate
error or a 4xx answer fails at once. The result is checked (length against Content-Length and
the published size, md5/sha256 checksum, then a structural check where one is given) and only
then moved into place with :func:`os.replace`, so nothing half-written ever carries the final
name. A cached file is checked the same way before it is used; a bad one is set aside as
``NAME.refused`` (never deleted before a verified replacement is in place) and fetched again.

``PANNS_INFER_OFFLINE=1`` (or ``offline=True``) never touches the network: a cached file is
used, a missing one raises :class:`~panns_infer.errors.OfflineError`.
``PANNS_INFER_MIRROR=<base URL>`` fetches released files from ``<base>/<file name>`` instead
of Zenodo; checksums are still enforced.

>>> path = checkpoint_path("Cnn14")
>>> path.parent.name, path.name
('checkpoints', 'Cnn14_mAP=0.431.pth')
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Callable, Optional, Union
from urllib.parse import quote, urlsplit

import filelock

from . import labels, registry
from .errors import DependencyError, OfflineError, PannsError
from .filenames import disposition_file_name, url_file_name
from .transport import _cached_problem, _fsync_dir, _mirror_base, _parse_checksum, _remove_stale, _stream

__all__ = [
    "cache_dir",
    "is_offline",
    "checkpoint_url",
    "checkpoint_path",
    "fetch",
    "download",
    "download_url",
    "labels_file",
]

logger = logging.getLogger("panns_infer")

CACHE_ENV = "PANNS_INFER_CACHE"
OFFLINE_ENV = "PANNS_INFER_OFFLINE"
_TRUE = ("1", "true", "yes", "on")
LABELS_FILENAME = "class_labels_indices.csv"



# --------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """The folder that holds downloaded checkpoints and labels.

    ``PANNS_INFER_CACHE`` when set, else the platform's user cache folder for
    ``panns_infer`` (e.g. ``~/.cache/panns_infer`` on Linux). The folder is not created here.

    Returns:
        The cache folder.

    >>> isinstance(cache_dir(), Path)
    True
    """
    value = os.environ.get(CACHE_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("panns_infer"))


def is_offline(offline: Optional[bool] = None) -> bool:
    """Whether downloads are forbidden.

    Args:
        offline: an explicit choice, which wins; ``None`` reads ``PANNS_INFER_OFFLINE``
            (``1``, ``true``, ``yes`` or ``on``, any case, mean offline).

    Returns:
        True in offline mode.

    >>> is_offline(True), is_offline(False)
    (True, False)
    """
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def _resolve(checkpoint: Union[str, registry.Checkpoint]) -> registry.Checkpoint:
    if isinstance(checkpoint, registry.Checkpoint):
        return checkpoint
    if isinstance(checkpoint, str):
        return registry.get_checkpoint(checkpoint)
    raise TypeError(
        f"checkpoint must be a registry name or a registry.Checkpoint, got {type(checkpoint).__name__}"
    )


def checkpoint_url(checkpoint: Union[str, registry.Checkpoint]) -> str:
    """The URL a released checkpoint is downloaded from.

    ``<PANNS_INFER_MIRROR>/<file name>`` (file name URL-quoted) when the mirror variable is
    set, else the Zenodo URL of the entry.

    Args:
        checkpoint: a registry name or file name, or a :class:`~panns_infer.registry.Checkpoint`.

    Returns:
        The download URL.

    Raises:
        UnknownModelError: the name is not in the registry.
        ValueError: ``PANNS_INFER_MIRROR`` is set but is not an http(s) URL.

    >>> checkpoint_url("Cnn6")  # doctest: +SKIP
    'https://zenodo.org/record/3987831/files/Cnn6_mAP%3D0.343.pth?download=1'
    """
    entry = _resolve(checkpoint)
    base = _mirror_base()
    if base is None:
        return entry.url
    return f"{base}/{quote(entry.filename)}"


def checkpoint_path(checkpoint: Union[str, registry.Checkpoint]) -> Path:
    """Where a released checkpoint is (or will be) cached: ``<cache>/checkpoints/<file name>``.

    Args:
        checkpoint: a registry name or file name, or a :class:`~panns_infer.registry.Checkpoint`.

    Returns:
        The path; the file may not exist yet.

    >>> checkpoint_path("Cnn6").name
    'Cnn6_mAP=0.343.pth'
    """
    return cache_dir() / "checkpoints" / _resolve(checkpoint).filename


def _url_folder(url: str) -> Path:
    """``<cache>/urls/<sha256(url)[:16]>``: the folder of the one file a URL gives."""
    return cache_dir() / "urls" / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def _cached_url_file(folder: Path) -> Optional[Path]:
    """The file a URL's folder holds (the newest, should there be several), or ``None``."""
    try:
        found = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                 and not p.name.endswith((".lock", ".incomplete"))]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


# --------------------------------------------------------------------------- checks


ASIDE_SUFFIX = ".refused"


def _aside_path(dest: Path) -> Path:
    """Where a cached file that failed verification is kept until a verified one replaces it."""
    return dest.with_name(dest.name + ASIDE_SUFFIX)


def _kept_note(aside: Path, problem: Optional[str]) -> str:
    why = f" ({problem})" if problem else ""
    return (f"The cached copy that failed verification{why} was kept, set aside as {str(aside)!r}; it "
            "is replaced only by a download that passes every check.")


def _offline_error(dest: Path, offline: Optional[bool], how: str, aside: Optional[Path],
                   problem: Optional[str]) -> OfflineError:
    if offline is None:
        why = f"offline mode is on ({OFFLINE_ENV}={os.environ.get(OFFLINE_ENV, '')!r})"
        off = f"unset {OFFLINE_ENV}"
    else:
        why = "offline mode is on (offline=True was passed)"
        off = "pass offline=False"
    state = "is not in the cache" if aside is None else "has no verified copy in the cache"
    kept = "" if aside is None else " " + _kept_note(aside, problem)
    return OfflineError(
        f"{dest.name!r} {state} (expected at {str(dest)!r}), and {why}.{kept} To get it: {how} while "
        f"online, or copy the file to {str(dest)!r}, or {off} to allow downloads.")


def _fetch(url: str, dest: Union[str, os.PathLike], *, checksum: Optional[str], expected_size: Optional[int],
           verify: Optional[Callable[[Path], object]], offline: Optional[bool], progress: Optional[bool],
           timeout: float, retries: int, how: str, server_name: bool = False) -> Path:
    """``server_name``: a download is stored under the name the server's Content-Disposition
    gives (made safe; in ``dest``'s folder), when it gives one; the path is returned."""
    dest = Path(dest)
    pin = _parse_checksum(checksum)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")
    if dest.is_file() and _cached_problem(dest, pin, expected_size, verify) is None:
        return dest  # the common case: no lock, no network
    offline_now = is_offline(offline)
    aside = _aside_path(dest)
    if offline_now and not dest.exists() and not aside.exists():
        raise _offline_error(dest, offline, how, None, None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(dest) + ".lock")
    try:
        lock.acquire(timeout=1)
    except filelock.Timeout:
        logger.info("waiting for another process that is downloading %s", dest)
        lock.acquire()
    try:
        problem = None
        if dest.exists():  # another process may have finished while we waited
            problem = _cached_problem(dest, pin, expected_size, verify)
            if problem is None:
                return dest
            os.replace(dest, aside)  # kept until a verified download takes its place
            _fsync_dir(dest.parent)
            logger.warning("the cached %s failed verification (%s); it was set aside as %s%s", dest, problem,
                           aside, "" if offline_now else " and is downloaded again")
        elif aside.exists():
            problem = _cached_problem(aside, pin, expected_size, verify)
            if problem is None:  # it passes now (the check was what failed): nothing to download
                os.replace(aside, dest)
                _fsync_dir(dest.parent)
                return dest
        if offline_now:
            raise _offline_error(dest, offline, how, aside, problem)
        _remove_stale(dest)
        tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.incomplete")
        logger.info("downloading %s to %s", url, dest)
        try:
            named: list[str] = []
            _stream(url, dest, tmp, pin=pin, expected_size=expected_size, timeout=timeout,
                    retries=retries, progress=progress,
                    on_headers=(lambda h: named.append(disposition_file_name(h.get("Content-Disposition")) or ""))
                    if server_name else None)
            if verify is not None:
                try:
                    verify(tmp)
                except DependencyError:
                    raise
                except PannsError as exc:
                    raise type(exc)(f"the file downloaded from {url!r} failed its check and was "
                                    f"deleted: {exc}") from exc
            if named and named[-1]:
                dest = dest.with_name(named[-1])  # a safe base name: still in dest's folder
            os.replace(tmp, dest)
        except PannsError as exc:
            tmp.unlink(missing_ok=True)
            if aside.exists():
                raise type(exc)(f"{exc} {_kept_note(aside, problem)}") from exc
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        aside.unlink(missing_ok=True)
        return dest
    finally:
        lock.release()


def fetch(url: str, dest: Union[str, os.PathLike], *, checksum: Optional[str] = None,
          expected_size: Optional[int] = None, verify: Optional[Callable[[Path], object]] = None,
          offline: Optional[bool] = None, progress: Optional[bool] = None, timeout: float = 30.0,
          retries: int = 5) -> Path:
    """Download ``url`` to ``dest`` once, verified, and return ``dest``.

    An existing ``dest`` that passes the checks (size, checksum, ``verify``) is returned
    without any network access. One that fails them is renamed aside to ``dest`` +
    ``".refused"`` and kept there until a verified download takes its place (then it is
    deleted); when no download is possible the error says where it is and why it was refused. A
    download is resumed with a ``Range`` request after a dropped connection and retried with
    exponential backoff after connection errors, timeouts and HTTP 5xx/408/429 answers (a try
    that brought new bytes does not count against ``retries``). It is moved into place only
    after every check passed; on any failure nothing is left under ``dest`` or in a temporary file.

    Args:
        url: an http(s) URL.
        dest: the final path; its folder is created.
        checksum: ``"sha256:<hex>"`` or ``"md5:<hex>"``; ``None`` checks length only.
        expected_size: the file's size in bytes, where known.
        verify: called with the path of a complete download (and of a cached file) before it
            is accepted; raises (e.g. a :class:`~panns_infer.errors.PannsError`) on a bad file.
        offline: forbid network access; ``None`` reads ``PANNS_INFER_OFFLINE``.
        progress: ``False`` hides the progress bar; it is shown only when stderr is a terminal.
        timeout: seconds to wait to connect and between received bytes.
        retries: how many failed tries in a row (without progress) are repeated.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: an HTTP error that retrying cannot fix (e.g. 404), or retries exhausted.
        ChecksumError: wrong size or hash; the bad download was deleted.
        OfflineError: offline mode is on and no good cached file exists.
        ValueError: a malformed ``checksum`` or negative ``retries``.

    >>> fetch("https://example.org/f.bin", "/tmp/f.bin", checksum="sha256:" + "0" * 64)  # doctest: +SKIP
    PosixPath('/tmp/f.bin')
    """
    return _fetch(url, dest, checksum=checksum, expected_size=expected_size, verify=verify,
                  offline=offline, progress=progress, timeout=timeout, retries=retries,
                  how=f"run panns_infer.hub.fetch({url!r}, ...)")


def _verify_unpinned(path: Path, arch: str) -> None:
    """Load an unpinned checkpoint strictly as ``arch``; raises CheckpointError on a bad file."""
    from .checkpoint import verify_checkpoint_file  # torch-heavy; only needed for unpinned files

    verify_checkpoint_file(path, arch=arch)


def download(checkpoint: Union[str, registry.Checkpoint], *, offline: Optional[bool] = None,
             progress: Optional[bool] = None) -> Path:
    """Download a released checkpoint into the cache (once) and return its path.

    The file goes to ``<cache>/checkpoints/<file name>``, from Zenodo or from
    ``PANNS_INFER_MIRROR``. A pinned entry (published checksum) is checked by hash and size;
    an unpinned one by the server's Content-Length and by loading it strictly as its
    architecture, since its bytes cannot be proven.

    Args:
        checkpoint: a registry name (``"Cnn14"``), a published file name, or a
            :class:`~panns_infer.registry.Checkpoint`.
        offline: forbid network access; ``None`` reads ``PANNS_INFER_OFFLINE``.
        progress: ``False`` hides the progress bar (shown only when stderr is a terminal).

    Returns:
        The path of the verified checkpoint file.

    Raises:
        UnknownModelError: the name is not in the registry.
        DownloadError, ChecksumError, OfflineError: see :func:`fetch`.
        CheckpointError: an unpinned download that does not load as its architecture.

    >>> path = download("Cnn6")  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'Cnn6_mAP=0.343.pth'
    """
    entry = _resolve(checkpoint)
    verify: Optional[Callable[[Path], object]] = None
    if not entry.pinned:
        verify = lambda path: _verify_unpinned(path, entry.arch)  # noqa: E731 (late-bound for tests)
    return _fetch(checkpoint_url(entry), checkpoint_path(entry), checksum=entry.checksum,
                  expected_size=entry.size, verify=verify, offline=offline, progress=progress,
                  timeout=30.0, retries=5,
                  how=f"run panns_infer.download({entry.name!r}) or `panns-tag --download {entry.name}`")


def download_url(url: str, *, sha256: Optional[str] = None, offline: Optional[bool] = None,
                 progress: Optional[bool] = None) -> Path:
    """Download a checkpoint given by URL into the cache (once) and return its path.

    The file goes to ``<cache>/urls/<first 16 hex digits of sha256(url)>/<file name>``, so
    different URLs never collide. The file name is the one the server gives in a
    ``Content-Disposition`` header, else the last part of the URL's path (for Zenodo's API
    form ``.../files/NAME/content``: ``NAME``), else ``download``; it is reduced to a safe
    base name (no separators, no ``..``, no control characters, at most 120 characters; see
    :mod:`panns_infer.filenames`), so nothing is written outside that folder whatever the
    server sends. The name matters: it is one way to tell Cnn14 from Cnn14_DecisionLevelMax
    (see :func:`panns_infer.checkpoint.detect_architecture`).

    Args:
        url: an http(s) URL.
        sha256: the file's SHA-256 (hex, or ``"sha256:<hex>"``); without it only the length is
            checked.
        offline: forbid network access; ``None`` reads ``PANNS_INFER_OFFLINE``.
        progress: ``False`` hides the progress bar (shown only when stderr is a terminal).

    Returns:
        The path of the cached file.

    Raises:
        ValueError: not an http(s) URL, or a malformed ``sha256``.
        DownloadError, ChecksumError, OfflineError: see :func:`fetch`.

    >>> download_url("https://example.org/my_cnn14.pth", sha256="ab" * 32)  # doctest: +SKIP
    PosixPath('/home/me/.cache/panns_infer/urls/5c0f0e6ba2fd8a3e/my_cnn14.pth')
    """
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"download_url needs an http(s) URL, got {url!r}")
    checksum = None
    if sha256 is not None:
        checksum = sha256 if ":" in sha256 else "sha256:" + sha256
        if _parse_checksum(checksum)[0] != "sha256":
            raise ValueError(f"sha256 must be a SHA-256 hex digest, got {sha256!r}")
    folder = _url_folder(url)
    dest = _cached_url_file(folder) or folder / (url_file_name(url) or "download")
    return _fetch(url, dest, checksum=checksum, expected_size=None, verify=None,
                  offline=offline, progress=progress, timeout=30.0, retries=5,
                  how=f"run panns_infer.hub.download_url({url!r})", server_name=True)


def labels_file(*, offline: Optional[bool] = None, progress: Optional[bool] = None) -> Path:
    """The AudioSet label list as a verified file.

    That is the copy shipped inside the package (no network). Only when it is missing or
    altered is the list downloaded, once, over https from
    :data:`~panns_infer.registry.LABELS_URL` (or ``<PANNS_INFER_MIRROR>/class_labels_indices.csv``)
    into ``<cache>/labels/``, and accepted only when its SHA-256 is
    :data:`~panns_infer.labels.AUDIOSET_LABELS_SHA256`, a mirror's copy included.

    Args:
        offline: forbid network access; ``None`` reads ``PANNS_INFER_OFFLINE``.
        progress: ``False`` hides the progress bar (shown only when stderr is a terminal).

    Returns:
        The path of the checked label CSV.

    Raises:
        ChecksumError: a downloaded copy differs from the pinned one (it was not kept).
        DownloadError, OfflineError: see :func:`fetch`.

    >>> labels_file().parent.name
    'data'
    """
    packaged = labels.packaged_labels_file()
    if packaged is not None:
        return packaged
    base = _mirror_base()
    url = registry.LABELS_URL if base is None else f"{base}/{quote(LABELS_FILENAME)}"
    return _fetch(url, cache_dir() / "labels" / LABELS_FILENAME, checksum="sha256:" + labels.AUDIOSET_LABELS_SHA256,
                  expected_size=None, verify=labels.read_labels_csv, offline=offline, progress=progress,
                  timeout=30.0, retries=5, how="run panns_infer.hub.labels_file()")


def _looks_like_checkpoint_file(text: str) -> bool:
    return text.endswith((".pth", ".pt", ".ckpt", ".bin"))


def _looks_like_path(text: str) -> bool:
    """A separator or an extension (a dot) makes a string a path; registry names have neither."""
    return "/" in text or os.sep in text or (os.altsep is not None and os.altsep in text) or "." in text


def resolve_checkpoint(checkpoint: Union[str, os.PathLike, registry.Checkpoint], *, sha256: Optional[str] = None,
                       offline: Optional[bool] = None,
                       progress: Optional[bool] = None) -> tuple[Path, Optional[registry.Checkpoint]]:
    """A local file for any checkpoint reference, and its registry entry if it has one.

    Accepts an existing path, an http(s) URL (cached by URL; give ``sha256``), a registry
    name such as ``"Cnn14"`` or a released file name such as ``"Cnn14_mAP=0.431.pth"``
    (downloaded once into the cache), or a :class:`~panns_infer.registry.Checkpoint`.

    Which one a string is, in this order:

    1. ``http://`` or ``https://``: a URL.
    2. A string with no separator and no dot (``"Cnn6"``, ``"cnn14_16k"``): a registry
       name (any case) when the registry has it, even if a file or folder of that name exists
       in the working folder; pass ``"./Cnn6"`` or a :class:`~pathlib.Path` to mean such a
       local file.
    3. An existing path: that file (a folder is refused when it is loaded).
    4. A bare released file name (``"Cnn6_mAP=0.343.pth"``) that is not a local file: the
       registry's file.

    Raises:
        UnknownModelError: a bare name that is neither a file nor in the registry.
        CheckpointNotFoundError: a path that does not exist.
        DownloadError, ChecksumError, OfflineError: when fetching fails.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "mine.pth"; _ = f.write_bytes(b"x")
    >>> resolve_checkpoint(f) == (f, None)
    True
    """
    from .errors import CheckpointNotFoundError, InvalidArgumentError, UnknownModelError

    if isinstance(checkpoint, registry.Checkpoint):
        return download(checkpoint, offline=offline, progress=progress), checkpoint
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise InvalidArgumentError(f"checkpoint must be a name, path or URL, got {type(checkpoint).__name__}")
    text = os.fspath(checkpoint)
    if text.startswith(("http://", "https://")):
        return download_url(text, sha256=sha256, offline=offline, progress=progress), None
    if isinstance(checkpoint, str) and not _looks_like_path(text):
        try:
            entry = registry.get_checkpoint(text)
        except UnknownModelError:
            pass
        else:
            return download(entry, offline=offline, progress=progress), entry
    if Path(text).exists():
        return Path(text), None
    if not (os.sep in text or "/" in text):  # a bare name: registry name or released file name
        try:
            entry = registry.get_checkpoint(text)
        except UnknownModelError:
            if not _looks_like_checkpoint_file(text):
                raise
        else:
            return download(entry, offline=offline, progress=progress), entry
    raise CheckpointNotFoundError(
        f"checkpoint file {text!r} does not exist; pass an existing .pth file, a registry name "
        "(see panns_infer.list_models()) or an http(s) URL")
