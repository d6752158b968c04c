"""File names that come from the network, made safe to use inside the cache.

A checkpoint fetched by URL keeps its real name (the name can tell Cnn14 from
Cnn14_DecisionLevelMax, and it is what a user looks for in the cache). The name comes from
the server: the URL's path (Zenodo's API form ``.../files/NAME/content`` gives ``NAME``) or
a ``Content-Disposition`` header, which wins when present. Whatever the server sends, the
name is reduced to one safe base name, so a file is never written outside its cache folder:

* percent-escapes are decoded first, then everything up to the last ``/`` or ``\\`` is
  dropped (``../../x`` and ``%2e%2e%2fx`` give ``x``; an absolute path gives its last part);
* control and other unprintable characters (NUL, newlines, ...) are removed, and the
  characters Windows forbids (``<>:"|?*``) become ``_``;
* leading and trailing dots and spaces are stripped and runs of dots become one, so the
  name is never hidden, never ``.`` or ``..`` and never contains ``..``;
* names Windows reserves (``CON``, ``NUL``, ``COM1``...) get a leading ``_``, names ending
  in the cache's own suffixes (``.lock``, ``.incomplete``) a trailing ``_``;
* the name is cut to 120 characters, keeping its extension;
* what is left empty gives ``None`` (the caller then uses a fixed name).

>>> safe_file_name("../../etc/passwd")
'passwd'
>>> safe_file_name("%2e%2e%2f") is None
True
>>> url_file_name("https://zenodo.org/api/records/3987831/files/Cnn6_mAP%3D0.343.pth/content")
'Cnn6_mAP=0.343.pth'
>>> disposition_file_name('attachment; filename="Cnn14_mAP=0.431.pth"')
'Cnn14_mAP=0.431.pth'
"""

from __future__ import annotations

import re
import unicodedata
from email.message import Message
from typing import Optional
from urllib.parse import unquote, urlsplit

__all__ = ["safe_file_name", "url_file_name", "disposition_file_name", "MAX_NAME_LENGTH"]

MAX_NAME_LENGTH = 120
"""The longest name kept, in characters (well under every file system's 255-byte limit)."""

_FORBIDDEN = re.compile(r'[<>:"|?*]')
_DOTS = re.compile(r"\.{2,}")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_OWN_SUFFIXES = (".lock", ".incomplete")
# Last URL path segments that name an action, not the file: Zenodo's API serves a record's
# file at .../files/<name>/content.
_ACTION_SEGMENTS = ("content", "download")


def safe_file_name(raw: object) -> Optional[str]:
    """A safe base name made from ``raw`` (see the module docstring), or ``None``.

    Args:
        raw: a name from a URL path or an HTTP header; anything that is not a string gives
            ``None``.

    Returns:
        A non-empty base name, or ``None`` when nothing usable is left.

    >>> safe_file_name("/abs/olute/model.pth"), safe_file_name("a\\x00b.pth"), safe_file_name("..")
    ('model.pth', 'ab.pth', None)
    """
    if not isinstance(raw, str):
        return None
    text = unquote(raw, errors="replace")
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))
    text = _FORBIDDEN.sub("_", text)
    text = _DOTS.sub(".", text).strip(" .")
    if not text:
        return None
    if len(text) > MAX_NAME_LENGTH:
        stem, dot, ext = text.rpartition(".")
        keep = f"{dot}{ext}" if dot and 0 < len(ext) <= 16 else ""
        text = text[: MAX_NAME_LENGTH - len(keep)].rstrip(" .") + keep
    if text.split(".")[0].upper() in _RESERVED:
        text = "_" + text
    if text.lower().endswith(_OWN_SUFFIXES):
        text += "_"
    return text


def url_file_name(url: str) -> Optional[str]:
    """The file name a URL's path gives (the segment before ``/content`` or ``/download``
    when the path ends so and that segment has an extension), made safe; ``None`` if none.

    >>> url_file_name("https://example.org/models/my%20net.pth?download=1")
    'my net.pth'
    >>> url_file_name("https://example.org/") is None
    True
    """
    segments = [s for s in urlsplit(url).path.split("/") if s]
    if not segments:
        return None
    last = segments[-1]
    if last.lower() in _ACTION_SEGMENTS and len(segments) > 1 and "." in unquote(segments[-2]):
        last = segments[-2]
    return safe_file_name(last)


def disposition_file_name(header: Optional[str]) -> Optional[str]:
    """The file name a ``Content-Disposition`` header gives (``filename*=`` per RFC 6266 and
    RFC 5987 wins over ``filename=``), made safe; ``None`` if it gives none.

    >>> disposition_file_name("attachment; filename*=UTF-8''%C3%A9t%C3%A9.pth; filename=x.pth")
    'été.pth'
    >>> disposition_file_name("attachment; filename=../../../etc/cron.d/x")
    'x'
    """
    if not header or not isinstance(header, str):
        return None
    extended = re.search(r"(?:^|;)\s*filename\*\s*=\s*([^;]*)", header, flags=re.IGNORECASE)
    if extended:  # charset'language'percent-encoded-value
        charset, _, rest = extended.group(1).strip().strip('"').partition("'")
        _, _, value = rest.partition("'")
        try:
            name = safe_file_name(unquote(value, encoding=charset or "utf-8", errors="replace"))
        except LookupError:  # an unknown charset
            name = None
        if name:
            return name
    message = Message()
    try:
        message["content-disposition"] = header
        return safe_file_name(message.get_filename())
    except (ValueError, TypeError, LookupError, UnicodeError):
        return None
