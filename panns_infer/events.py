r"""Sound event detection: framewise probabilities to events, and events to TSV or JSON.

:func:`detect_events` turns a ``(frames, classes)`` probability matrix (what
:meth:`AudioTagger.framewise <panns_infer.AudioTagger.framewise>` returns in
:class:`~panns_infer.Framewise`) into a list of :class:`Event` objects, in five steps, each
one optional except the second:

1. **median filter** (``median_filter=`` seconds, default off) on each class's probabilities
   (for a single threshold this equals filtering the 0/1 decisions, as the DCASE 2021 baseline
   does, since a median commutes with thresholding; filtering the probabilities also serves
   the hysteresis);
2. **hysteresis threshold**: an event starts at a frame whose probability is ``>= threshold``
   (the onset threshold) and goes on while the probability stays ``>= offset_threshold``
   (default: the onset threshold, i.e. a single threshold);
3. **gap merging**: two events of one class separated by less than ``min_gap`` seconds become
   one;
4. **clipping** to the clip's ``duration`` in seconds, when given;
5. **duration filter**: events shorter than ``min_duration`` seconds are dropped.

Timing. Frame ``t`` is taken to cover ``[t * hop, (t + 1) * hop)``, so an event whose first
and last frames are ``t0`` and ``t1`` has ``onset = t0 * hop`` and ``offset = (t1 + 1) * hop``
(the convention of the DCASE baselines' label decoders, where a frame index times the hop is
a time). PANNs' STFT frame ``t`` is *centred* on sample ``t * hop`` (see
:attr:`Framewise.times <panns_infer.Framewise.times>`), so these times sit half a hop (5 ms
at the released checkpoints' 10 ms hop) later than the frame centres: far below the 320 ms
resolution of the decision-level checkpoints. A clip of ``N`` samples has ``N // hop + 1``
frames, so an event that runs to the last frame may end up to one hop after the clip's end;
pass ``duration=`` to clip it. Times are rounded to the microsecond, which removes float noise
such as ``3 * 0.01 == 0.030000000000000002``.

Scores. An event's ``score`` is the largest probability among its frames, after the median
filter if one is used (so it is always ``>=`` the class's onset threshold).

Defaults, and why:

* ``threshold=0.5``, with no hysteresis (``offset_threshold`` = ``threshold``): the decision
  threshold of the DCASE sound event detection baselines (``thresholds=[0.5]`` in the DESED
  task 4 recipes) and the natural operating point of a sigmoid trained with binary
  cross-entropy. PANNs' own SED demos set no threshold at all: they only plot the ten classes
  with the largest framewise maximum, which :func:`panns_infer.plot.plot_framewise` does too.
  The best thresholds depend on the class and the data; tune them per class (``threshold=``
  accepts a mapping or an array) on labelled clips of your own.
* ``median_filter=None`` (off): the decision-level checkpoints compute one output every 32
  frames and hold it (``framewise[t] = segmentwise[t // 32]``), so their output is already
  piecewise constant over 0.32 s. A centred median filter of 33 frames or fewer is then an
  exact no-op, and a longer one deletes genuine 0.32 s events. The DCASE baselines' 7-frame
  filter was designed for models with a 64 ms output step. The option stays for other
  sources of framewise probabilities.
* ``min_duration=0`` and ``min_gap=0`` (off): for the same reason, every event from a
  decision-level checkpoint already lasts at least 0.32 s (but at the clip's end) and every gap
  is at least 0.32 s, so smaller values change nothing; larger ones are application choices.

>>> import numpy as np
>>> p = np.zeros((10, 2), dtype=np.float32)
>>> p[2:5, 0] = 0.9
>>> p[6:, 1] = 0.6
>>> detect_events(p, ["Speech", "Dog"], 0.1)  # doctest: +NORMALIZE_WHITESPACE
[Event(label='Speech', onset=0.2, offset=0.5, score=0.8999999761581421),
 Event(label='Dog', onset=0.6, offset=1.0, score=0.6000000238418579)]
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["Event", "detect_events", "plan_events", "detect_planned", "EventPlan", "events_to_tsv", "events_to_json",
           "DEFAULT_THRESHOLD", "TSV_HEADER"]

DEFAULT_THRESHOLD = 0.5
"""The onset threshold used when none is given (see the module docstring)."""

TSV_HEADER = ("filename", "onset", "offset", "event_label")
"""Columns of the DCASE event list format that ``sed_eval`` and ``sed_scores_eval`` read."""

_TIME_DECIMALS = 6   # event times are rounded to the microsecond
_EPS = 1e-9          # tolerance of the min_gap / min_duration comparisons, in seconds

PathOrStream = Union[str, "os.PathLike[str]", IO[str]]
Thresholds = Union[float, Mapping[str, float], Sequence[float], np.ndarray]


@dataclass(frozen=True)
class Event:
    """One detected sound event.

    Attributes:
        label: the class name.
        onset: start time in seconds from the beginning of the clip.
        offset: end time in seconds (exclusive), ``>= onset``.
        score: the largest framewise probability within the event.

    >>> e = Event("Dog", 1.0, 1.64, 0.8)
    >>> e.duration, e.to_dict()
    (0.64, {'label': 'Dog', 'onset': 1.0, 'offset': 1.64, 'score': 0.8})
    """

    label: str
    onset: float
    offset: float
    score: float

    def __post_init__(self) -> None:
        if not isinstance(self.label, str):
            raise InvalidArgumentError(f"Event label must be a string, got {self.label!r}")
        if not self.offset >= self.onset:
            raise InvalidArgumentError(
                f"Event offset must not precede its onset, got onset={self.onset!r}, offset={self.offset!r}")

    @property
    def duration(self) -> float:
        """``offset - onset`` in seconds, rounded to the microsecond."""
        return round(self.offset - self.onset, _TIME_DECIMALS)

    def to_dict(self) -> dict:
        """JSON-ready dict with ``label``, ``onset``, ``offset`` and ``score``."""
        return {"label": self.label, "onset": float(self.onset), "offset": float(self.offset),
                "score": float(self.score)}


# --- detection ---------------------------------------------------------------------------


def detect_events(probabilities: Any, class_names: Sequence[str], frame_hop: float, *,
                  threshold: Thresholds = DEFAULT_THRESHOLD,
                  offset_threshold: Optional[Thresholds] = None,
                  median_filter: Optional[float] = None,
                  min_duration: float = 0.0,
                  min_gap: float = 0.0,
                  classes: Optional[Union[str, Sequence[str]]] = None,
                  duration: Optional[float] = None) -> list[Event]:
    """Turn framewise probabilities into a list of events (see the module docstring).

    Args:
        probabilities: ``(frames, classes)`` array of probabilities, e.g.
            :attr:`Framewise.probabilities <panns_infer.Framewise.probabilities>`.
        class_names: the name of each column.
        frame_hop: seconds between two frames (0.01 for every released checkpoint).
        threshold: onset threshold in ``[0, 1]``: one number for every class, a mapping
            ``{class name: threshold}`` (classes it leaves out keep :data:`DEFAULT_THRESHOLD`),
            or an array with one value per column. A frame is active when its probability is
            ``>=`` the threshold, compared in the probabilities' dtype (so a float32
            probability equal to ``float32(0.7)`` meets ``threshold=0.7``).
        offset_threshold: the hysteresis threshold an event must stay at or above to go on;
            ``None`` (default) uses ``threshold``. Same forms as ``threshold`` (a mapping's
            missing classes use their onset threshold); must not exceed the onset threshold.
        median_filter: width in seconds of a centred median filter applied to each class's
            probabilities first; ``round(median_filter / frame_hop)`` frames, made odd by adding
            one, with the edges padded by repeating the first and last frames. ``None`` or a
            width of one frame or less: no filter (default).
        min_duration: events shorter than this many seconds (after merging and clipping) are
            dropped.
        min_gap: events of one class separated by less than this many seconds are merged.
        classes: detect only these classes (names, or a single name); default every class.
        duration: the clip's length in seconds; offsets past it are clipped to it.

    Returns:
        The events, sorted by onset, then label, then offset.

    Raises:
        InvalidArgumentError: a probability matrix that is not 2-D, numeric and finite, a
            ``class_names`` of the wrong length, an unknown class, or an option out of range.

    >>> import numpy as np
    >>> p = np.array([[0.1], [0.6], [0.4], [0.6], [0.2], [0.6], [0.1]])
    >>> [(e.onset, e.offset) for e in detect_events(p, ["Bell"], 0.01)]
    [(0.01, 0.02), (0.03, 0.04), (0.05, 0.06)]
    >>> [(e.onset, e.offset) for e in detect_events(p, ["Bell"], 0.01, offset_threshold=0.3)]
    [(0.01, 0.04), (0.05, 0.06)]
    >>> [(e.onset, e.offset) for e in detect_events(p, ["Bell"], 0.01, min_gap=0.015)]
    [(0.01, 0.06)]
    """
    probs = _check_probabilities(probabilities)
    names = _check_class_names(class_names, probs.shape[1])
    plan = plan_events(names, frame_hop, threshold=threshold, offset_threshold=offset_threshold,
                       median_filter=median_filter, min_duration=min_duration, min_gap=min_gap,
                       classes=classes, duration=duration)
    return detect_planned(probs[:, plan.columns], plan, plan.columns)


@dataclass(frozen=True)
class EventPlan:
    """The options of :func:`detect_events`, checked once and resolved per class.

    Built by :func:`plan_events`; :func:`detect_planned` runs it on any subset of the
    columns, so a long recording can be processed a block of classes at a time with the same
    validation and the same result as all at once.

    Attributes:
        names: the class names.
        hop: seconds per row.
        width: the median filter's width in rows (1: none).
        onset: the onset threshold of every class.
        offset: the offset threshold of every class.
        columns: the selected classes' column indices, ascending.
        min_duration: seconds.
        min_gap: seconds.
        duration: seconds, or ``None``.
    """

    names: list
    hop: float
    width: int
    onset: np.ndarray
    offset: np.ndarray
    columns: list
    min_duration: float
    min_gap: float
    duration: Optional[float]


def plan_events(class_names: Sequence[str], frame_hop: float, *,
                threshold: Thresholds = DEFAULT_THRESHOLD,
                offset_threshold: Optional[Thresholds] = None,
                median_filter: Optional[float] = None,
                min_duration: float = 0.0,
                min_gap: float = 0.0,
                classes: Optional[Union[str, Sequence[str]]] = None,
                duration: Optional[float] = None) -> EventPlan:
    """Check the options of :func:`detect_events` against the class names, without probabilities.

    Raises:
        InvalidArgumentError: as :func:`detect_events`, for everything but the probabilities.

    >>> plan_events(["Dog", "Cat"], 0.01, threshold={"Cat": 0.7}).onset.tolist()
    [0.5, 0.7]
    >>> plan_events(["Dog", "Cat"], 0.01, classes=["Dgo"])
    Traceback (most recent call last):
    ...
    panns_infer.errors.InvalidArgumentError: classes names an unknown class 'Dgo'; did you mean 'Dog'? (class names are case-sensitive; see Framewise.class_names)
    """  # noqa: E501 - the example shows the whole error message, as users see it
    names = _check_class_names(class_names, None)
    hop = _check_seconds(frame_hop, "frame_hop", positive=True)
    min_duration = _check_seconds(min_duration, "min_duration")
    min_gap = _check_seconds(min_gap, "min_gap")
    if duration is not None:
        duration = _check_seconds(duration, "duration")
    width = _median_width(median_filter, hop)

    index_of: dict[str, int] = {}
    for i, name in enumerate(names):
        index_of.setdefault(name, i)
    onset_thr = _per_class(threshold, "threshold", names, index_of,
                           np.full(len(names), DEFAULT_THRESHOLD))
    offset_thr = onset_thr if offset_threshold is None else _per_class(
        offset_threshold, "offset_threshold", names, index_of, onset_thr)
    columns = _select_classes(classes, names, index_of)
    for c in columns:
        if offset_thr[c] > onset_thr[c]:
            raise InvalidArgumentError(
                f"offset_threshold must not exceed the onset threshold, but for class {names[c]!r} it is "
                f"{offset_thr[c]:g} > {onset_thr[c]:g}; lower offset_threshold or raise threshold")
    return EventPlan(names, hop, width, onset_thr, offset_thr, columns, min_duration, min_gap, duration)


def detect_planned(probabilities: np.ndarray, plan: EventPlan, columns: Sequence[int]) -> list[Event]:
    """Events of the classes ``columns`` (a subset of ``plan.columns``), whose probabilities are
    the columns of ``probabilities``, in that order; sorted as :func:`detect_events` sorts.

    >>> plan = plan_events(["Dog", "Cat"], 0.1)
    >>> detect_planned(np.array([[0.9], [0.2]]), plan, [1])
    [Event(label='Cat', onset=0.0, offset=0.1, score=0.9)]
    """
    p = probabilities
    names, hop, columns = plan.names, plan.hop, list(columns)
    frames = p.shape[0]
    if frames == 0 or not columns:
        return []
    if plan.width > 1:
        p = _median_filter(p, plan.width)
    # Compare in the probabilities' dtype, so that ties at the threshold are exact.
    on = p >= plan.onset[columns].astype(p.dtype)
    off = p >= plan.offset[columns].astype(p.dtype)

    # Runs of frames at or above the offset threshold, per class, in one pass over a
    # class-major linear index (class k, frame t) -> k * frames + t.
    padded = np.zeros((len(columns), frames + 2), dtype=np.int8)
    padded[:, 1:-1] = off.T
    step = np.diff(padded, axis=1)
    run_class, run_start = np.nonzero(step == 1)
    _, run_end = np.nonzero(step == -1)          # exclusive ends, same order as the starts
    base = run_class * frames
    # Hysteresis: an event starts at the first frame of the run that reaches the onset threshold
    # and lasts to the end of the run; a run that never reaches it holds no event.
    on_linear = np.flatnonzero(on.T)
    pos = np.searchsorted(on_linear, base + run_start)
    first_on = on_linear[np.minimum(pos, max(len(on_linear) - 1, 0))] if len(on_linear) else pos
    keep = (pos < len(on_linear)) & (first_on < base + run_end)
    ev_class, ev_start, ev_end = run_class[keep], first_on[keep] - base[keep], run_end[keep]

    if plan.min_gap > 0 and len(ev_class) > 1:
        merge = (ev_class[1:] == ev_class[:-1]) & ((ev_start[1:] - ev_end[:-1]) * hop < plan.min_gap - _EPS)
        first = np.concatenate(([True], ~merge))
        last = np.concatenate((~merge, [True]))
        ev_class, ev_start, ev_end = ev_class[first], ev_start[first], ev_end[last]

    # Score: the maximum over each event's frames (reduceat over [start, end) pairs).
    flat = np.append(p.T.ravel(), -np.inf)
    bounds = np.column_stack((ev_class * frames + ev_start, ev_class * frames + ev_end)).ravel()
    scores = np.maximum.reduceat(flat, bounds)[::2] if len(bounds) else np.zeros(0)

    onsets = np.round(ev_start * hop, _TIME_DECIMALS)
    offsets = np.round(ev_end * hop, _TIME_DECIMALS)
    keep = np.ones(len(onsets), dtype=bool)
    if plan.duration is not None:
        offsets = np.minimum(offsets, plan.duration)
        keep &= onsets < plan.duration
    if plan.min_duration > 0:
        keep &= (offsets - onsets) >= plan.min_duration - _EPS
    events = [Event(names[columns[k]], float(on_s), float(off_s), float(s))
              for k, on_s, off_s, s, kept in zip(ev_class, onsets, offsets, scores, keep) if kept]
    events.sort(key=lambda e: (e.onset, e.label, e.offset))
    return events


def _check_probabilities(probabilities: Any) -> np.ndarray:
    try:
        probs = np.asarray(probabilities)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"probabilities must be a (frames, classes) array: {exc}") from exc
    if probs.ndim != 2:
        raise InvalidArgumentError(
            f"probabilities must be a (frames, classes) array, got shape {probs.shape}")
    if probs.dtype == bool or not np.issubdtype(probs.dtype, np.number) \
            or np.issubdtype(probs.dtype, np.complexfloating):
        raise InvalidArgumentError(f"probabilities must be real numbers, got dtype {probs.dtype}")
    if not np.issubdtype(probs.dtype, np.floating):
        probs = probs.astype(np.float64)
    if probs.size and not np.isfinite(probs).all():
        raise InvalidArgumentError("probabilities contain NaN or infinite values")
    return probs


def _check_class_names(class_names: Sequence[str], classes: Optional[int]) -> list[str]:
    if isinstance(class_names, str):
        raise InvalidArgumentError("class_names must be a sequence of names, got a single string")
    try:
        names = list(class_names)
    except TypeError:
        raise InvalidArgumentError(f"class_names must be a sequence of names, got {class_names!r}") from None
    if classes is not None and len(names) != classes:
        raise InvalidArgumentError(
            f"class_names has {len(names)} names but probabilities have {classes} columns")
    if not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError("class_names must all be strings")
    return names


def _check_seconds(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not np.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise InvalidArgumentError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return seconds


def _median_width(median_filter: Optional[float], hop: float) -> int:
    if median_filter is None:
        return 1
    seconds = _check_seconds(median_filter, "median_filter")
    width = int(round(seconds / hop))
    return width + 1 if width > 1 and width % 2 == 0 else max(width, 1)


def _median_filter(p: np.ndarray, width: int) -> np.ndarray:
    """Centred running median along axis 0, edges padded by repetition; in chunks of classes."""
    half = width // 2
    padded = np.pad(p, ((half, half), (0, 0)), mode="edge")
    out = np.empty_like(p)
    chunk = max(1, 4_000_000 // max(1, p.shape[0] * width))
    for c in range(0, p.shape[1], chunk):
        windows = np.lib.stride_tricks.sliding_window_view(padded[:, c:c + chunk], width, axis=0)
        out[:, c:c + chunk] = np.median(windows, axis=-1)
    return out


def _per_class(value: Any, name: str, names: list[str], index_of: dict[str, int],
               default: np.ndarray) -> np.ndarray:
    """A threshold option as one float per class, checked to be finite and in [0, 1]."""
    if isinstance(value, Mapping):
        out = default.astype(np.float64, copy=True)
        for label, thr in value.items():
            if label not in index_of:
                raise InvalidArgumentError(f"{name} names an unknown class {label!r}{_suggest(label, names)}")
            out[index_of[label]] = _check_threshold(thr, f"{name}[{label!r}]")
        return out
    refusal = f"{name} must be a number, a mapping {{class name: number}} or one number per class, got {value!r}"
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise InvalidArgumentError(refusal) from exc
    if raw.dtype.kind not in "iuf":  # strings, bytes, booleans, None, complex or mixed values are not numbers here
        raise InvalidArgumentError(refusal)
    arr = raw.astype(np.float64)
    if arr.ndim == 0:
        return np.full(len(names), _check_threshold(arr.item(), name))
    if arr.shape != (len(names),):
        raise InvalidArgumentError(
            f"{name} as an array must have one value per class, shape ({len(names)},), got shape {arr.shape}")
    bad = np.flatnonzero(~(np.isfinite(arr) & (arr >= 0) & (arr <= 1)))
    if len(bad):
        raise InvalidArgumentError(
            f"{name} values must be in [0, 1], got {arr[bad[0]].item()!r} for class {names[bad[0]]!r}")
    return arr


def _check_threshold(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    thr = float(value)
    if not (np.isfinite(thr) and 0 <= thr <= 1):
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    return thr


def _select_classes(classes: Optional[Union[str, Sequence[str]]], names: list[str],
                    index_of: dict[str, int]) -> list[int]:
    if classes is None:
        return list(range(len(names)))
    if isinstance(classes, str):
        classes = [classes]
    columns: list[int] = []
    for label in classes:
        if label not in index_of:
            raise InvalidArgumentError(f"classes names an unknown class {label!r}{_suggest(label, names)}")
        if index_of[label] not in columns:
            columns.append(index_of[label])
    return sorted(columns)


def _suggest(label: Any, names: list[str]) -> str:
    close = difflib.get_close_matches(str(label), names, n=3) if isinstance(label, str) else []
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} (class names are case-sensitive; see Framewise.class_names)"


# --- writing -----------------------------------------------------------------------------


def events_to_tsv(events: Union[Sequence[Event], Mapping[str, Sequence[Event]]], path_or_stream: PathOrStream,
                  *, filename: Optional[str] = None) -> None:
    r"""Write events as a DCASE event list: tab-separated, header ``filename onset offset event_label``.

    This is the format that ``sed_eval`` and ``sed_scores_eval`` read (and DCASE task 4 uses
    for its ground truth and submissions): one row per event, times in seconds with three
    decimals, ``filename`` being the audio file's name with its extension. A file is written
    atomically: to a temporary file in the same folder, then moved into place, so a failure
    never leaves a truncated file (and keeps an existing one).

    Args:
        events: the events of one clip (then give ``filename``), or a mapping
            ``{filename: events}`` for several clips (then leave ``filename`` out).
        path_or_stream: a file path, or an open text stream (written as is, not atomically).
        filename: the clip's file name for the ``filename`` column, e.g. ``"street.wav"``.

    Raises:
        InvalidArgumentError: ``filename`` missing or given when it should not be, or a name or
            label containing a tab or a newline.

    >>> import io
    >>> buf = io.StringIO()
    >>> events_to_tsv([Event("Dog", 0.32, 0.96, 0.8)], buf, filename="park.wav")
    >>> buf.getvalue().splitlines()
    ['filename\tonset\toffset\tevent_label', 'park.wav\t0.320\t0.960\tDog']
    """
    lines = ["\t".join(TSV_HEADER)]
    for name, clip_events in _by_file(events, filename).items():
        _check_field(name, "filename")
        for e in clip_events:
            _check_field(e.label, "event label")
            lines.append(f"{name}\t{e.onset:.3f}\t{e.offset:.3f}\t{e.label}")
    _write_text("\n".join(lines) + "\n", path_or_stream)


def events_to_json(events: Union[Sequence[Event], Mapping[str, Sequence[Event]]], path_or_stream: PathOrStream,
                   *, filename: Optional[str] = None, indent: Optional[int] = 2) -> None:
    """Write events as JSON: ``{"path": ..., "events": [{label, onset, offset, score}, ...]}``.

    ``path`` names the clip's file (the package's record vocabulary; the key is ``path`` for
    whatever name is given). A mapping ``{filename: events}`` writes a list of such objects,
    one per clip. Files are written atomically, as in :func:`events_to_tsv`.

    Args:
        events: the events of one clip, or a mapping ``{filename: events}``.
        path_or_stream: a file path, or an open text stream.
        filename: the clip's file path or name (optional for one clip; ``null`` in the JSON when
            left out).
        indent: passed to :func:`json.dumps`.

    >>> import io
    >>> buf = io.StringIO()
    >>> events_to_json([Event("Dog", 0.32, 0.96, 0.8)], buf, filename="park.wav", indent=None)
    >>> buf.getvalue()
    '{"path": "park.wav", "events": [{"label": "Dog", "onset": 0.32, "offset": 0.96, "score": 0.8}]}\\n'
    """
    if isinstance(events, Mapping):
        if filename is not None:
            raise InvalidArgumentError("give filename= only with a list of events, not with a mapping")
        payload: Any = [{"path": name, "events": [e.to_dict() for e in _check_events(evs)]}
                        for name, evs in events.items()]
    else:
        payload = {"path": filename, "events": [e.to_dict() for e in _check_events(events)]}
    _write_text(json.dumps(payload, indent=indent) + "\n", path_or_stream)


def _by_file(events: Any, filename: Optional[str]) -> dict[str, list[Event]]:
    if isinstance(events, Mapping):
        if filename is not None:
            raise InvalidArgumentError("give filename= only with a list of events, not with a mapping")
        return {str(name): _check_events(evs) for name, evs in events.items()}
    if filename is None:
        raise InvalidArgumentError(
            "the TSV's filename column needs filename= (the clip's file name, e.g. 'street.wav')")
    return {filename: _check_events(events)}


def _check_events(events: Any) -> list[Event]:
    if isinstance(events, (str, bytes, Event)):
        raise InvalidArgumentError(f"events must be a list of Event, got {events!r}")
    out = list(events)
    for e in out:
        if not isinstance(e, Event):
            raise InvalidArgumentError(f"events must be a list of Event, got an item {e!r}")
    return out


def _check_field(text: str, what: str) -> None:
    if not isinstance(text, str) or not text or any(ch in text for ch in "\t\r\n"):
        raise InvalidArgumentError(f"a TSV {what} must be non-empty text without tabs or newlines, got {text!r}")


def _write_text(text: str, path_or_stream: PathOrStream) -> None:
    if hasattr(path_or_stream, "write"):
        path_or_stream.write(text)
        return
    with _atomic_open(path_or_stream, "w") as f:
        f.write(text)


@contextlib.contextmanager
def _atomic_open(path: Union[str, "os.PathLike[str]"], mode: str = "w") -> Iterator[IO[Any]]:
    """Open ``NAME.<uuid>.incomplete`` beside ``path``; on success fsync it and :func:`os.replace`
    it onto ``path``; on any failure delete it, leaving an existing ``path`` untouched.

    ``mode`` is ``"w"`` (UTF-8 text, ``\\n`` line ends) or ``"wb"``.
    """
    try:
        dest = Path(os.fspath(path))
    except TypeError as exc:
        raise InvalidArgumentError(f"expected a file path or a writable stream, got {path!r}") from exc
    tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.incomplete")
    binary = "b" in mode
    f: IO[Any] = open(tmp, "xb") if binary else io.open(tmp, "x", encoding="utf-8", newline="\n")
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
