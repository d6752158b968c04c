"""What :func:`panns_infer.list_models` reports: the registry joined with each network's facts.

>>> info = {m.name: m for m in list_models()}["Cnn14"]
>>> info.arch, info.sample_rate, info.mAP, info.embedding_size, info.pinned
('Cnn14', 32000, 0.431, 2048, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from .models import build_model
from .registry import list_checkpoints

__all__ = ["ModelInfo", "list_models"]


@dataclass(frozen=True)
class ModelInfo:
    """One released checkpoint as :func:`list_models` describes it.

    Attributes:
        name: registry name, accepted by ``AudioTagger(name)``.
        filename: the published file name.
        arch: architecture.
        sample_rate: input rate in Hz (other rates are resampled).
        mAP: AudioSet mAP reported by the authors.
        embedding_size: length of ``embed()`` vectors; ``None`` for decision-level models.
        framewise: whether ``framewise()`` (sound event detection) is available.
        min_seconds: shortest input the reference accepts (shorter input is zero-padded).
        size: published file size in bytes, if known.
        pinned: whether a published checksum verifies the download.
        url: where it is downloaded from.
    """

    name: str
    filename: str
    arch: str
    sample_rate: int
    mAP: float
    embedding_size: Optional[int]
    framewise: bool
    min_seconds: float
    size: Optional[int]
    pinned: bool
    url: str

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return asdict(self)


_FACTS: dict[str, tuple[Optional[int], bool, int]] = {}


def _facts(arch: str) -> tuple[Optional[int], bool, int]:
    if arch not in _FACTS:
        with torch.device("meta"):  # structure only: no memory, no initialisation cost
            model = build_model(arch)
        _FACTS[arch] = (model.embedding_size, model.has_framewise, model.min_samples)
    return _FACTS[arch]


def list_models(pattern: str = "*") -> list[ModelInfo]:
    """Every released checkpoint whose name matches the fnmatch ``pattern``.

    >>> [m.name for m in list_models("Cnn14_Decision*")]
    ['Cnn14_DecisionLevelMax', 'Cnn14_DecisionLevelAtt']
    """
    out = []
    for entry in list_checkpoints(pattern):
        embedding, framewise, min_samples = _facts(entry.arch)
        out.append(ModelInfo(entry.name, entry.filename, entry.arch, entry.sample_rate, entry.mAP,
                             embedding, framewise, round(min_samples / entry.sample_rate, 4),
                             entry.size, entry.pinned, entry.url))
    return out
