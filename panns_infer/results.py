"""Result objects returned by :class:`~panns_infer.AudioTagger`.

Small frozen dataclasses holding numpy arrays, with ``to_dict()`` for JSON.

>>> import numpy as np
>>> t = Tags.from_probabilities(np.array([0.1, 0.9, 0.5], dtype=np.float32), ["a", "b", "c"], top_k=2)
>>> t.labels, t.scores.tolist()
(['b', 'c'], [0.8999999761581421, 0.5])
>>> t
Tags(b=0.900, c=0.500)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

__all__ = ["Tags", "Framewise", "Timeline", "top_k_indices", "expand_segments"]

if TYPE_CHECKING:
    from .events import Event


_EXPAND_LIMIT = 16 * 2 ** 20  # bytes of expanded frames that events() creates at once


def expand_segments(segments: np.ndarray, num_frames: int, frames_per_segment: int) -> np.ndarray:
    """Frame-level rows from segment rows: frame t takes segment ``min(t // r, S - 1)``."""
    index = np.minimum(np.arange(num_frames) // frames_per_segment, len(segments) - 1)
    return segments[index]


def _events_filename(source: Optional[str], filename: Optional[str], *, required: bool) -> Optional[str]:
    """The filename column of an event list: ``filename`` if given, else the result's source."""
    if filename is None and source is not None:
        return os.fspath(source)
    if filename is None and required:
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(
            "this result has no source file; give filename= (e.g. 'street.wav') for the TSV's filename column")
    return filename


def top_k_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, largest first; ties keep class order."""
    order = np.argsort(-probabilities, kind="stable")
    return order[: max(0, k)]


@dataclass(frozen=True, repr=False)
class Tags:
    """Clip-level tagging result.

    Attributes:
        labels: the top-k class names, most probable first.
        scores: their probabilities, ``(k,)`` float32.
        probabilities: every class's probability, ``(classes,)`` float32.
        class_names: the names of all classes, in index order.
        source: the input file's path, or ``None`` for arrays.
        duration: seconds of audio tagged (``None`` when not known).
        sample_rate: the input's own rate, before resampling (``None`` when not known).
    """

    labels: list[str]
    scores: np.ndarray
    probabilities: np.ndarray
    class_names: Sequence[str] = field(default=(), compare=False)
    source: Optional[str] = None
    duration: Optional[float] = None
    sample_rate: Optional[int] = None

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray, class_names: Sequence[str], *, top_k: int,
                           source: Optional[str] = None, duration: Optional[float] = None,
                           sample_rate: Optional[int] = None) -> "Tags":
        """Build a result from a probability vector and the class names."""
        index = top_k_indices(probabilities, top_k)
        return cls([class_names[i] for i in index], probabilities[index], probabilities, class_names, source,
                   duration, sample_rate)

    def to_dict(self, *, full: bool = False) -> dict:
        """JSON-ready dict in the package's record vocabulary: ``path`` (the source),
        ``duration``, ``sample_rate``, the top-k ``labels`` and ``scores`` (and every class's
        ``probabilities`` if ``full``).

        >>> Tags(["Dog"], np.array([0.9]), np.array([0.9]), ["Dog"], "dog.wav", 2.0, 44100).to_dict()
        {'path': 'dog.wav', 'duration': 2.0, 'sample_rate': 44100, 'labels': ['Dog'], 'scores': [0.9]}
        """
        out: dict = {"path": self.source, "duration": self.duration, "sample_rate": self.sample_rate,
                     "labels": list(self.labels), "scores": [float(s) for s in self.scores]}
        if full:
            out["probabilities"] = {name: float(p) for name, p in zip(self.class_names, self.probabilities)}
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{label}={score:.3f}" for label, score in zip(self.labels[:5], self.scores[:5]))
        more = ", ..." if len(self.labels) > 5 else ""
        return f"Tags({shown}{more})"


class Framewise:
    """Frame-level (sound event detection) result of a decision-level checkpoint.

    Decision-level networks give one value per *segment* of 32 frames (0.32 s) and hold it
    for the segment's frames; a result keeps those segment rows and expands them to frames
    only when :attr:`probabilities` is read, so an hour of audio costs 24 MB, not 760 MB.

    Attributes:
        probabilities: ``(frames, classes)`` float32, one row per STFT frame.
        frame_hop: seconds between frames (0.01 for every released checkpoint).
        class_names: the names of all classes, in index order.
        clipwise: the clip-level probabilities ``(classes,)`` the model gives alongside.
        source: the input file's path, or ``None`` for arrays.
    """

    def __init__(self, probabilities: np.ndarray, frame_hop: float, class_names: Sequence[str],
                 clipwise: np.ndarray, source: Optional[str] = None) -> None:
        self._rows = np.asarray(probabilities)
        self._frames_per_row = 1
        self.num_frames = self._rows.shape[0]
        self.frame_hop = frame_hop
        self.class_names = class_names
        self.clipwise = clipwise
        self.source = source
        self._expanded: Optional[np.ndarray] = None

    @classmethod
    def from_segments(cls, segments: np.ndarray, *, frames_per_segment: int, num_frames: int,
                      frame_hop: float, class_names: Sequence[str], clipwise: np.ndarray,
                      source: Optional[str] = None) -> "Framewise":
        """A result whose frame t holds segment ``min(t // frames_per_segment, S - 1)``."""
        out = cls(segments, frame_hop, class_names, clipwise, source)
        out._frames_per_row = frames_per_segment
        out.num_frames = num_frames
        return out

    @property
    def probabilities(self) -> np.ndarray:
        """``(frames, classes)`` probabilities (expanded from segments on first access)."""
        if self._expanded is None:
            self._expanded = self._frames(slice(None))
        return self._expanded

    def _frames(self, columns: Any) -> np.ndarray:
        rows = self._rows[:, columns]
        if self._frames_per_row == 1:
            return rows
        return expand_segments(rows, self.num_frames, self._frames_per_row)

    @property
    def shape(self) -> tuple[int, int]:
        """``(frames, classes)``, without expanding."""
        return (self.num_frames, self._rows.shape[1])

    @property
    def labels(self) -> list[str]:
        """The class names (columns of :attr:`probabilities`)."""
        return list(self.class_names)

    @property
    def times(self) -> np.ndarray:
        """Time in seconds at the centre of each frame (frame t is centred on sample t*hop)."""
        return np.arange(self.num_frames) * self.frame_hop

    def to_dict(self) -> dict:
        """JSON-ready dict with the frame hop, labels and the probability matrix."""
        return {"path": self.source, "frame_hop": self.frame_hop, "labels": self.labels,
                "probabilities": self.probabilities.tolist()}

    def events(self, **options: Any) -> list["Event"]:
        """Detected sound events; see :func:`panns_infer.events.detect_events`.

        Keyword options (all optional): ``threshold`` (default 0.5; a number, a mapping
        ``{class: threshold}`` or one value per class), ``offset_threshold`` (hysteresis),
        ``median_filter`` (seconds), ``min_duration`` and ``min_gap`` (seconds), ``classes``
        (a subset of names) and ``duration`` (the clip's length, to clip the last offsets).

        >>> import numpy as np
        >>> fw = Framewise(np.array([[0.1], [0.7], [0.8], [0.2]]), 0.01, ["Dog"], np.array([0.8]))
        >>> fw.events()
        [Event(label='Dog', onset=0.01, offset=0.03, score=0.8)]
        """
        from .events import detect_events, detect_planned, plan_events

        names = list(self.class_names)
        block = max(1, _EXPAND_LIMIT // max(1, 4 * self.num_frames))
        if self._expanded is not None or block >= len(names):
            return detect_events(self.probabilities, names, self.frame_hop, **options)
        # A long recording: the options are checked once, for every class, then the frames are
        # expanded and searched a block of classes at a time (bounded memory).
        plan = plan_events(names, self.frame_hop, **options)
        found: list = []
        for first in range(0, len(names), block):
            columns = [c for c in plan.columns if first <= c < first + block]
            if columns:
                found += detect_planned(self._frames(columns), plan, columns)
        return sorted(found, key=lambda e: (e.onset, e.label, e.offset))

    def to_tsv(self, path: Any, *, filename: Optional[str] = None, **options: Any) -> None:
        """Write :meth:`events` as a DCASE event list; see :func:`panns_infer.events.events_to_tsv`.

        ``filename`` fills the ``filename`` column and defaults to :attr:`source` as given (the
        full path, so ``x/clip.wav`` and ``y/clip.wav`` stay apart); the other keyword options
        go to :meth:`events`. A name with a tab or a line break cannot be a TSV field: give
        ``filename=``.

        >>> fw.to_tsv("street.tsv", threshold=0.3)  # doctest: +SKIP
        """
        from .events import events_to_tsv

        events_to_tsv(self.events(**options), path, filename=_events_filename(self.source, filename, required=True))

    def to_json(self, path: Any, *, filename: Optional[str] = None, **options: Any) -> None:
        """Write :meth:`events` (not the probabilities: see :meth:`to_dict`) as JSON
        (``{"path": ..., "events": [...]}``, ``path`` being :attr:`source` as given unless
        ``filename`` is passed); see :func:`panns_infer.events.events_to_json`. Options as in
        :meth:`to_tsv`.

        >>> fw.to_json("street.json", min_duration=0.5)  # doctest: +SKIP
        """
        from .events import events_to_json

        events_to_json(self.events(**options), path, filename=_events_filename(self.source, filename, required=False))

    def plot(self, path: Any, *, top_k: int = 10, logmel: Optional[np.ndarray] = None) -> Any:
        """Save a figure of the ``top_k`` classes over time (and the log-mel above, if given);
        see :func:`panns_infer.plot.plot_framewise`. Needs ``pip install 'panns-infer[plot]'``.

        >>> fw.plot("street.png", top_k=5)  # doctest: +SKIP
        PosixPath('street.png')
        """
        from .plot import plot_framewise

        return plot_framewise(self, path, top_k=top_k, logmel=logmel)

    def __repr__(self) -> str:
        frames, classes = self.shape
        return (f"Framewise(frames={frames}, classes={classes}, frame_hop={self.frame_hop:g}s, "
                f"source={self.source!r})")


@dataclass(frozen=True, repr=False)
class Timeline:
    """Clip-level probabilities of consecutive (overlapping) segments of a recording.

    Attributes:
        probabilities: ``(segments, classes)`` float32.
        starts: start of each segment in seconds.
        ends: end of each segment in seconds (the last may be shorter).
        hop: seconds between segment starts.
        class_names: the names of all classes, in index order.
        source: the input file's path, or ``None`` for arrays.

    For events, segment i stands for the ``hop``-long cell centred on the segment's centre,
    ``[centre - hop/2, centre + hop/2)``; the first cell reaches back to 0 and the last one
    on to the end of the recording.
    """

    probabilities: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    hop: float
    class_names: Sequence[str]
    source: Optional[str] = None

    @property
    def labels(self) -> list[str]:
        """The class names (columns of :attr:`probabilities`)."""
        return list(self.class_names)

    @property
    def duration(self) -> float:
        """Seconds covered, from the first start to the last end."""
        return float(self.ends[-1]) if len(self.ends) else 0.0

    def events(self, **options: Any) -> list["Event"]:
        """Events over the timeline, as for :meth:`Framewise.events` (same options).

        Thresholds, the median filter and ``min_gap`` work on the segment grid (one row per
        ``hop``); the events are then placed in time (see the class docstring), clipped to the
        timeline's end and to ``duration`` when given, and only then filtered by
        ``min_duration``, so an event is kept or dropped by the length it is reported with,
        and no event runs past ``duration``.

        >>> import numpy as np
        >>> tl = Timeline(np.array([[0.1], [0.9], [0.8]]), np.array([0., 1, 2]), np.array([2., 3, 4]), 1.0, ["Dog"])
        >>> tl.events()
        [Event(label='Dog', onset=1.5, offset=4.0, score=0.9)]
        >>> tl.events(duration=3.0, min_duration=1.5)
        [Event(label='Dog', onset=1.5, offset=3.0, score=0.9)]
        """
        from dataclasses import replace

        from .events import Event, _check_probabilities, detect_planned, plan_events

        probs = _check_probabilities(self.probabilities)
        plan = plan_events(list(self.class_names), self.hop, **options)
        if not len(self.starts):
            return []
        grid = detect_planned(probs[:, plan.columns], replace(plan, min_duration=0.0, duration=None),
                              plan.columns)
        shift = float(self.ends[0] - self.starts[0]) / 2 - self.hop / 2  # cell k starts at k*hop + shift
        last = len(self.starts) * self.hop - 1e-9
        end = self.duration if plan.duration is None else min(self.duration, plan.duration)
        out = []
        for e in grid:
            onset = 0.0 if e.onset <= 1e-9 else max(0.0, round(e.onset + shift, 6))
            offset = self.duration if e.offset >= last else round(e.offset + shift, 6)
            offset = min(offset, end)
            if onset >= end or offset - onset < plan.min_duration - 1e-9:
                continue
            out.append(Event(e.label, onset, offset, e.score))
        return sorted(out, key=lambda e: (e.onset, e.label, e.offset))

    def to_tsv(self, path: Any, *, filename: Optional[str] = None, **options: Any) -> None:
        """Write :meth:`events` as a DCASE event list (``filename onset offset event_label``)."""
        from .events import events_to_tsv

        events_to_tsv(self.events(**options), path, filename=_events_filename(self.source, filename, required=True))

    def to_dict(self) -> dict:
        """JSON-ready dict: segment times, labels, probabilities."""
        return {"path": self.source, "hop": self.hop, "starts": self.starts.tolist(),
                "ends": self.ends.tolist(), "labels": self.labels,
                "probabilities": self.probabilities.tolist()}

    def __repr__(self) -> str:
        return (f"Timeline(segments={len(self.starts)}, classes={self.probabilities.shape[1]}, "
                f"hop={self.hop:g}s, source={self.source!r})")
