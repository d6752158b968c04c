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

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

__all__ = ["Tags", "Framewise", "top_k_indices"]


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
    """

    labels: list[str]
    scores: np.ndarray
    probabilities: np.ndarray
    class_names: Sequence[str] = field(default=(), compare=False)
    source: Optional[str] = None

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray, class_names: Sequence[str], *, top_k: int,
                           source: Optional[str] = None) -> "Tags":
        """Build a result from a probability vector and the class names."""
        index = top_k_indices(probabilities, top_k)
        return cls([class_names[i] for i in index], probabilities[index], probabilities, class_names, source)

    def to_dict(self, *, full: bool = False) -> dict:
        """JSON-ready dict: source, top-k labels and scores (and every probability if ``full``)."""
        out: dict = {"source": self.source, "labels": list(self.labels),
                     "scores": [float(s) for s in self.scores]}
        if full:
            out["probabilities"] = {name: float(p) for name, p in zip(self.class_names, self.probabilities)}
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{label}={score:.3f}" for label, score in zip(self.labels[:5], self.scores[:5]))
        more = ", ..." if len(self.labels) > 5 else ""
        return f"Tags({shown}{more})"


@dataclass(frozen=True, repr=False)
class Framewise:
    """Frame-level (sound event detection) result of a decision-level checkpoint.

    Attributes:
        probabilities: ``(frames, classes)`` float32, one row per STFT frame.
        frame_hop: seconds between frames (0.01 for every released checkpoint).
        class_names: the names of all classes, in index order.
        clipwise: the clip-level probabilities ``(classes,)`` the model gives alongside.
        source: the input file's path, or ``None`` for arrays.
    """

    probabilities: np.ndarray
    frame_hop: float
    class_names: Sequence[str]
    clipwise: np.ndarray
    source: Optional[str] = None

    @property
    def labels(self) -> list[str]:
        """The class names (columns of :attr:`probabilities`)."""
        return list(self.class_names)

    @property
    def times(self) -> np.ndarray:
        """Time in seconds at the centre of each frame (frame t is centred on sample t*hop)."""
        return np.arange(self.probabilities.shape[0]) * self.frame_hop

    def to_dict(self) -> dict:
        """JSON-ready dict with the frame hop, labels and the probability matrix."""
        return {"source": self.source, "frame_hop": self.frame_hop, "labels": self.labels,
                "probabilities": self.probabilities.tolist()}

    def __repr__(self) -> str:
        frames, classes = self.probabilities.shape
        return (f"Framewise(frames={frames}, classes={classes}, frame_hop={self.frame_hop:g}s, "
                f"source={self.source!r})")
