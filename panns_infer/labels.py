"""Class labels: the AudioSet list shipped with the package, and reading label CSVs.

The AudioSet list is a CSV with the header ``index,mid,display_name`` and one row per class,
indices 0..N-1 in order. The package carries a copy (``panns_infer/data/class_labels_indices.csv``,
14,675 bytes; from Google's AudioSet, CC BY 4.0), pinned by its SHA-256
(:data:`AUDIOSET_LABELS_SHA256`), so tagging never downloads labels and no one on the way can
rename classes. A user's own CSV is checked by structure.

>>> import io
>>> csv_text = 'index,mid,display_name\\n0,/m/09x0r,"Speech"\\n1,/m/05zppz,"Male speech, man speaking"\\n'
>>> parse_labels_csv(io.StringIO(csv_text), expected=2)
['Speech', 'Male speech, man speaking']
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path
from typing import Optional, Sequence, TextIO, Union

from .errors import LabelsError

__all__ = ["AUDIOSET_CLASSES", "AUDIOSET_LABELS_SHA256", "AUDIOSET_LABELS_ATTRIBUTION", "parse_labels_csv",
           "read_labels_csv", "check_labels", "packaged_labels_file", "audioset_labels"]

AUDIOSET_CLASSES = 527
AUDIOSET_LABELS_FILENAME = "class_labels_indices.csv"
AUDIOSET_LABELS_SHA256 = "cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429"
AUDIOSET_LABELS_ATTRIBUTION = ("AudioSet class labels (class_labels_indices.csv) by Google, from "
                               "https://research.google.com/audioset/, licensed under CC BY 4.0 "
                               "(https://creativecommons.org/licenses/by/4.0/)")
_HEADER = ["index", "mid", "display_name"]


def parse_labels_csv(stream: TextIO, *, expected: Optional[int] = AUDIOSET_CLASSES,
                     source: str = "labels CSV") -> list[str]:
    """Parse an AudioSet-format label CSV and check its structure.

    Args:
        stream: text stream of the CSV.
        expected: required number of rows (527 for AudioSet); ``None`` accepts any count.
        source: a name for the stream used in error messages.

    Returns:
        The display names, in index order.

    Raises:
        LabelsError: wrong header, non-consecutive indices, duplicate mids, wrong row count.
    """
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise LabelsError(f"{source} is empty; expected the header {','.join(_HEADER)!r}") from None
    except csv.Error as exc:
        raise LabelsError(f"{source} is not a readable CSV: {exc}") from None
    if [h.strip().lstrip("\ufeff") for h in header] != _HEADER:
        raise LabelsError(f"{source} has header {header!r}; expected {_HEADER!r} (AudioSet format)")
    names: list[str] = []
    mids: set[str] = set()
    try:
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise LabelsError(f"{source}, line {lineno}: expected 3 fields, got {len(row)}: {row!r}")
            index, mid, name = (cell.strip() for cell in row)
            if index != str(len(names)):
                raise LabelsError(f"{source}, line {lineno}: index {index!r}, expected {len(names)}")
            if mid in mids:
                raise LabelsError(f"{source}, line {lineno}: duplicate mid {mid!r}")
            mids.add(mid)
            names.append(name)
    except csv.Error as exc:
        raise LabelsError(f"{source} is not a readable CSV: {exc}") from None
    if expected is not None and len(names) != expected:
        raise LabelsError(f"{source} has {len(names)} classes; expected {expected}")
    return names


def read_labels_csv(path: Union[str, os.PathLike], *, expected: Optional[int] = AUDIOSET_CLASSES) -> list[str]:
    """Read and check a label CSV file (see :func:`parse_labels_csv`).

    Raises:
        LabelsError: the file is missing, undecodable or malformed.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise LabelsError(f"cannot read labels file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LabelsError(f"labels file {str(path)!r} is not UTF-8 text") from None
    return parse_labels_csv(io.StringIO(text, newline=""), expected=expected, source=repr(str(path)))


def check_labels(labels: Sequence[str], classes: int) -> list[str]:
    """Check a user-given list of class names against the model's class count."""
    if isinstance(labels, (str, bytes)) or not all(isinstance(x, str) for x in labels):
        raise LabelsError("labels must be a list of strings (or a path to a label CSV)")
    if len(labels) != classes:
        raise LabelsError(f"{len(labels)} labels given, but the model has {classes} classes")
    return list(labels)


def packaged_labels_file() -> Optional[Path]:
    """The AudioSet label CSV shipped inside the package, or ``None`` if it is missing or its
    SHA-256 is not :data:`AUDIOSET_LABELS_SHA256` (a damaged or altered installation).

    >>> packaged_labels_file().name
    'class_labels_indices.csv'
    """
    path = Path(__file__).resolve().parent / "data" / AUDIOSET_LABELS_FILENAME
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return path if hashlib.sha256(data).hexdigest() == AUDIOSET_LABELS_SHA256 else None


def audioset_labels(*, offline: Optional[bool] = None, progress: Optional[bool] = None) -> list[str]:
    """The 527 AudioSet class names, in output order, from the copy shipped with the package.

    Only when that copy is missing or altered is the list fetched (once, over https, into the
    cache) and accepted when its SHA-256 matches the pin, from a mirror too.

    Args:
        offline: forbid network access for that fallback; ``None`` reads ``PANNS_INFER_OFFLINE``.
        progress: ``False`` hides the progress bar of that fallback.

    Raises:
        LabelsError: the packaged copy is damaged and a pinned copy cannot be had.

    >>> audioset_labels()[:2]
    ['Speech', 'Male speech, man speaking']
    """
    path = packaged_labels_file()
    if path is None:
        from .errors import DownloadError, OfflineError
        from .hub import labels_file

        try:
            path = labels_file(offline=offline, progress=progress)
        except (OfflineError, DownloadError) as exc:
            raise LabelsError(
                f"the AudioSet label list shipped with panns_infer is missing or altered (reinstall "
                f"the package), and a verified copy could not be fetched: {exc} Pass labels= a path "
                "to class_labels_indices.csv or a list of names.") from None
    return read_labels_csv(path)
