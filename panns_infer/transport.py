"""Verified, resumable HTTP downloads: the transport under :mod:`panns_infer.hub`.

Streams a URL to a temporary ``*.incomplete`` file with ``requests``, resuming with HTTP
``Range`` after a dropped connection (and restarting when the server ignores it), retrying
connection resets, timeouts and 5xx/408/429 answers with exponential backoff (a host name that
does not resolve, a TLS certificate error and other 4xx answers fail at once), and checking
the length and md5/sha256 checksum while streaming. A progress bar goes to stderr when it is
a terminal.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, overload
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported where a download starts: it costs ~0.15 s at every CLI start
    import requests

from .errors import ChecksumError, DependencyError, DownloadError, PannsError

logger = logging.getLogger("panns_infer")

MIRROR_ENV = "PANNS_INFER_MIRROR"
_ALGORITHMS = ("md5", "sha256")
_CHUNK = 1 << 16  # bytes per read; a dropped connection loses at most this much
_BACKOFF_BASE = 1.0  # seconds before the first retry, doubled for each further one
_BACKOFF_MAX = 30.0
_RETRY_AFTER_MAX = 60.0
_STALE_SECONDS = 24 * 3600  # *.incomplete files older than this are removed
_RETRY_STATUS = frozenset({408, 429})


@overload
def _parse_checksum(checksum: str) -> tuple[str, str]: ...
@overload
def _parse_checksum(checksum: None) -> None: ...
@overload
def _parse_checksum(checksum: Optional[str]) -> Optional[tuple[str, str]]: ...


def _parse_checksum(checksum: Optional[str]) -> Optional[tuple[str, str]]:
    """``"md5:hex"`` / ``"sha256:hex"`` to ``(algorithm, lowercase hex)``."""
    if checksum is None:
        return None
    if not isinstance(checksum, str) or ":" not in checksum:
        raise ValueError(f"checksum must look like 'sha256:<hex>' or 'md5:<hex>', got {checksum!r}")
    algorithm, _, digest = checksum.partition(":")
    algorithm, digest = algorithm.strip().lower(), digest.strip().lower()
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"Supported checksum algorithms are {_ALGORITHMS}. Found: {algorithm!r}")
    width = _new_hash(algorithm).digest_size * 2
    if len(digest) != width or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"a {algorithm} checksum is {width} hex digits, got {digest!r}")
    return algorithm, digest


def _new_hash(algorithm: str):
    # md5 here proves integrity, not authenticity; FIPS builds allow it only with this flag
    return hashlib.new(algorithm, usedforsecurity=False)


def _hash_file(path: Path, algorithm: str) -> str:
    digest = _new_hash(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_problem(path: Path, pin: Optional[tuple[str, str]], expected_size: Optional[int],
                    verify: Optional[Callable[[Path], object]]) -> Optional[str]:
    """Why the existing file ``path`` is not acceptable, or None when it is."""
    try:
        size = path.stat().st_size
        if expected_size is not None and size != expected_size:
            return f"it has {size} bytes, expected {expected_size}"
        if pin is not None:
            actual = _hash_file(path, pin[0])
            if actual != pin[1]:
                return f"its {pin[0]} is {actual}, expected {pin[1]}"
        if verify is not None:
            verify(path)
    except DependencyError:
        raise  # the check cannot run here: that says nothing about the file
    except (PannsError, ValueError, OSError) as exc:
        return f"it failed its check: {exc}"
    return None


# --------------------------------------------------------------------------- progress


def _format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, enabled: Optional[bool]):
        isatty = getattr(sys.stderr, "isatty", None)
        self.enabled = enabled is not False and bool(isatty and isatty())
        self.label = label if len(label) <= 40 else label[:37] + "..."
        self.start = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def update(self, done: int, total: Optional[int], *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        if total:
            frac = min(done / total, 1.0)
            bar = "#" * int(frac * 20)
            text = (f"{self.label} {frac:4.0%} |{bar:<20}| {_format_bytes(done)}/{_format_bytes(total)}"
                    f" {_format_bytes(rate)}/s")
        else:
            text = f"{self.label} {_format_bytes(done)} {_format_bytes(rate)}/s"
        sys.stderr.write("\r" + text + "\x1b[K")
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False


# --------------------------------------------------------------------------- download


class _Retry(Exception):
    """A failed try that may succeed if repeated; ``wait`` overrides the backoff."""

    def __init__(self, message: str, wait: Optional[float] = None):
        super().__init__(message)
        self.wait = wait


def _retry_after(response: requests.Response) -> Optional[float]:
    value = response.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_MAX)
    except ValueError:
        return None


def _content_range(value: str) -> tuple[Optional[int], Optional[int]]:
    """``"bytes 10-99/100"`` to ``(10, 100)``; unknown parts are None."""
    try:
        unit, _, spec = value.strip().partition(" ")
        span, _, total = spec.partition("/")
        start = int(span.partition("-")[0]) if unit == "bytes" and span != "*" else None
        return start, (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None, None


def _final_error(url: str, dest: Path, what: str, hint: str) -> DownloadError:
    """The error for a failure that retrying cannot fix: what happened, what to check, and
    how to do without the download."""
    return DownloadError(f"downloading {url!r} failed: {what}. {hint} You can also get the file by other "
                         f"means and copy it to {str(dest)!r}. (Not retried: this error does not go away "
                         "by itself.)")


def _status_error(url: str, dest: Path, response: requests.Response) -> DownloadError:
    status = response.status_code
    what = f"HTTP {status} {response.reason or ''}".rstrip()
    if status in (404, 410):
        hint = "The file is not at this address."
        base = _mirror_base()
        if base is not None and url.startswith(base + "/"):
            hint += (f" The mirror {MIRROR_ENV}={base!r} does not have it: copy {dest.name!r} "
                     f"there, or unset {MIRROR_ENV} to download from the original source.")
        else:
            hint += " Check the URL (or the registry entry) for a typo or a moved file."
    elif status in (401, 403):
        hint = "The server refused access; the file may have been made private or moved."
    else:
        hint = "The server rejected the request."
    return _final_error(url, dest, what, hint)


def _name_not_resolved(exc: BaseException) -> Optional[str]:
    """The resolver's message when ``exc`` (from requests) is a host name that did not
    resolve, else None. Such a failure is answered at once by the resolver and does not heal
    within a backoff, so it is not retried."""
    seen: set = set()
    todo: list = [exc]
    while todo:
        err = todo.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror) or type(err).__name__ == "NameResolutionError":
            return str(err)
        todo += [err.__cause__, err.__context__, getattr(err, "reason", None), *err.args]
    return None


def _open_response(session: requests.Session, url: str, dest: Path, start: int,
                   timeout: float) -> requests.Response:
    import requests

    headers = {"Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.exceptions.SSLError as exc:
        raise _final_error(
            url, dest, f"TLS/SSL error ({exc})", "Check the system clock and the certificate store "
            f"(REQUESTS_CA_BUNDLE), or set {MIRROR_ENV} to a trusted copy.") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        resolver = _name_not_resolved(exc)
        if resolver is not None:
            host = urlsplit(url).hostname
            raise _final_error(
                url, dest, f"the host name {host!r} could not be resolved ({resolver})",
                "Check the network connection (and proxy settings) and the URL's host name.") from exc
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc
    except requests.RequestException as exc:  # malformed URL, too many redirects, ...
        raise DownloadError(f"cannot download {url!r}: {exc}") from exc
    status = response.status_code
    if status in (200, 206, 416):
        return response
    response.close()
    if status >= 500 or status in _RETRY_STATUS:
        raise _Retry(f"HTTP {status} {response.reason or ''}".rstrip(), wait=_retry_after(response))
    raise _status_error(url, dest, response)


def _stream(url: str, dest: Path, tmp: Path, *, pin: Optional[tuple[str, str]],
            expected_size: Optional[int], timeout: float, retries: int,
            progress: Optional[bool], on_headers: Optional[Callable[[Mapping[str, str]], None]] = None) -> None:
    """Download ``url`` into ``tmp``, resuming and retrying; check length and checksum.

    ``on_headers`` is called with the headers of every answer that brings the file's bytes.
    """
    import requests

    algorithm = pin[0] if pin else "sha256"
    digest = _new_hash(algorithm)
    written = 0  # bytes in tmp, all of them fed to digest
    furthest = 0  # most bytes ever held; a try that passes it is progress, not a failure
    failures = 0
    total: Optional[int] = None
    bar = _Progress(dest.name, progress)
    with requests.Session() as session, open(tmp, "wb") as f:

        def restart() -> None:
            nonlocal written, digest
            f.seek(0)
            f.truncate()
            written, digest = 0, _new_hash(algorithm)

        try:
            while True:
                try:
                    response = _open_response(session, url, dest, written, timeout)
                    with response:
                        if on_headers is not None and response.status_code in (200, 206):
                            on_headers(response.headers)
                        encoded = response.headers.get("Content-Encoding", "identity").lower() not in (
                            "", "identity")
                        if response.status_code == 416:  # our Range lies past the end
                            _, size = _content_range(response.headers.get("Content-Range", ""))
                            if written and size == written:
                                total = size
                                break
                            restart()
                            raise _Retry("HTTP 416 Range Not Satisfiable; starting again from zero")
                        if response.status_code == 206:
                            start, size = _content_range(response.headers.get("Content-Range", ""))
                            if start != written or encoded:
                                wrong = f"server resumed at byte {start}, not {written}"
                                restart()
                                raise _Retry(f"{wrong}; starting again from zero")
                            length = response.headers.get("Content-Length")
                            total = size if size is not None else (
                                written + int(length) if length and length.isdigit() else None)
                        else:  # 200: the whole file, whatever we asked for
                            if written:
                                logger.info("%s: the server ignored the Range request; "
                                            "downloading again from zero", url)
                                restart()
                            length = response.headers.get("Content-Length", "")
                            total = int(length) if length.isdigit() and not encoded else None
                        if total is not None and expected_size is not None and total != expected_size:
                            raise ChecksumError(
                                f"{url!r} is {total} bytes according to the server, but the published "
                                f"size is {expected_size} bytes; nothing was kept. Likely causes: the "
                                "file changed upstream, or a mirror or proxy serves a different file.")
                        for chunk in response.iter_content(_CHUNK):
                            f.write(chunk)
                            digest.update(chunk)
                            written += len(chunk)
                            bar.update(written, total)
                        if total is not None and written > total:
                            raise DownloadError(f"{url!r} sent {written} bytes but announced {total}; "
                                                "the server is misbehaving. Try again later.")
                        if total is not None and written < total:  # urllib3 1.x ends silently
                            raise _Retry(f"connection closed after {written} of {total} bytes")
                    break
                except _Retry as exc:
                    error, wait = str(exc), exc.wait
                except (requests.ConnectionError, requests.Timeout,
                        requests.exceptions.ChunkedEncodingError) as exc:
                    error, wait = f"{type(exc).__name__}: {exc}", None
                if written > furthest:
                    furthest, failures = written, 0  # made progress: not a failed try
                else:
                    failures += 1
                if failures > retries:
                    raise DownloadError(
                        f"could not download {url!r} after {retries + 1} tries without progress; "
                        f"last error: {error}. Check the network connection (and proxy settings) "
                        "and try again later, or get the file by other means and copy it to "
                        f"{str(dest)!r}.")
                if wait is None:
                    wait = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** max(failures - 1, 0))
                    wait *= random.uniform(0.5, 1.0)
                logger.warning("download of %s interrupted (%s); %s in %.1f s", url, error,
                               f"resuming at byte {written}" if written else "retrying", wait)
                time.sleep(wait)
            bar.update(written, total, force=True)
        finally:
            bar.close()
        if expected_size is not None and written != expected_size:
            raise ChecksumError(
                f"{url!r} gave {written} bytes, but the published size is {expected_size} bytes; "
                "the file was deleted. Likely causes: a truncated download, a file changed "
                "upstream, or a mirror that serves a different file.")
        if pin is not None and digest.hexdigest() != pin[1]:
            raise ChecksumError(
                f"{algorithm} checksum mismatch for {url!r}: expected {pin[1]}, got "
                f"{digest.hexdigest()}. The downloaded file was deleted. Likely causes: the "
                "download was truncated or corrupted, the file changed upstream, or a mirror "
                f"({MIRROR_ENV}) serves a different file. Try again; if it persists, report it.")
        f.flush()
        os.fsync(f.fileno())


def _remove_stale(dest: Path) -> None:
    """Delete ``dest.name.*.incomplete`` files left by dead processes more than a day ago."""
    prefix, now = dest.name + ".", time.time()
    try:
        for path in dest.parent.iterdir():
            if path.name.startswith(prefix) and path.name.endswith(".incomplete"):
                try:
                    if now - path.stat().st_mtime > _STALE_SECONDS:
                        path.unlink()
                        logger.info("removed the stale partial download %s", path)
                except OSError:
                    pass
    except OSError:
        pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mirror_base() -> Optional[str]:
    """The base URL from ``PANNS_INFER_MIRROR``, without a trailing slash, or None."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return None
    if urlsplit(base).scheme not in ("http", "https"):
        raise ValueError(
            f"{MIRROR_ENV}={base!r} is not an http(s) URL. Set it to the base URL of a server "
            "that holds the checkpoint files (e.g. 'https://files.example.org/panns'), or unset it."
        )
    return base.rstrip("/")
