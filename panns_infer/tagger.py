"""The public API: :class:`AudioTagger`.

>>> import numpy as np
>>> from panns_infer import AudioTagger
>>> tagger = AudioTagger("Cnn14")                                    # doctest: +SKIP
>>> tagger.tag("dog.flac", top_k=5)                                   # doctest: +SKIP
Tags(Dog=0.912, Animal=0.887, ...)
>>> tagger.embed(np.zeros(32000, dtype=np.float32)).shape            # doctest: +SKIP
(2048,)
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from .audio import Clip, as_clips
from .checkpoint import load_model
from .errors import (CheckpointNotFoundError, DeviceError, DownloadError, InvalidArgumentError, LabelsError,
                     OfflineError, UnknownModelError, UnsupportedOperationError)
from .labels import check_labels, read_labels_csv
from .models import PannsModel
from .registry import DEFAULT_CHECKPOINT, Checkpoint, get_checkpoint
from .results import Framewise, Tags

__all__ = ["AudioTagger", "resolve_device"]

log = logging.getLogger("panns_infer")

PathLike = Union[str, os.PathLike]


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a device that exists.

    ``"auto"`` picks the first CUDA device when there is one, else the CPU. An explicit
    CUDA device is honoured exactly, or refused with :class:`DeviceError`.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} was requested, but CUDA is not available here "
                              "(no GPU, or a CPU-only torch build); use device='cpu' or 'auto'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {device!r} was requested, but this machine has {count} CUDA "
                              f"device(s): cuda:0..cuda:{count - 1}")
    elif dev.type != "cpu":
        raise DeviceError(f"device {device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev


def _looks_like_path(text: str) -> bool:
    return text.endswith((".pth", ".pt", ".ckpt", ".bin"))


class AudioTagger:
    """Audio tagging, embeddings and sound event detection with one PANNs checkpoint.

    Args:
        checkpoint: a registry name (``"Cnn14"``, see :func:`panns_infer.list_models`), a
            released file name (``"Cnn14_mAP=0.431.pth"``), a path to a checkpoint file
            (any layout), or an http(s) URL. Registry names and URLs are downloaded once
            into the cache.
        arch: architecture name, to override detection from the state dict.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        labels: a path to an AudioSet-format label CSV, or a list of class names. By
            default the AudioSet list is used (fetched into the cache on first need).
        batch_size: clips per forward pass.
        sha256: checksum of a URL checkpoint (recommended).
        offline: never touch the network (default: the ``PANNS_INFER_OFFLINE`` variable).
        progress: show download progress bars (default: when stderr is a terminal).

    Clips are grouped by length before batching and never padded to each other, so a
    clip's result does not depend on what else is in the call.

    Example:
        >>> tagger = AudioTagger("Cnn14")                         # doctest: +SKIP
        >>> tagger.tag("dog.flac", top_k=3).labels                 # doctest: +SKIP
        ['Dog', 'Animal', 'Domestic animals, pets']
    """

    def __init__(self, checkpoint: Union[PathLike, Checkpoint] = DEFAULT_CHECKPOINT, *,
                 arch: Optional[str] = None, device: Union[str, torch.device] = "auto",
                 labels: Union[PathLike, Sequence[str], None] = None, batch_size: int = 8,
                 sha256: Optional[str] = None, offline: Optional[bool] = None,
                 progress: Optional[bool] = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._offline = offline
        self._progress = progress
        path, entry = self._resolve_checkpoint(checkpoint, sha256)
        self.checkpoint_path = path
        self.model: PannsModel = load_model(path, arch=arch or (entry.arch if entry else None),
                                            filename=entry.filename if entry else None)
        self.model.to(self.device)
        self._labels_arg = labels
        self._labels: Optional[list[str]] = None
        self._labels_lock = threading.Lock()
        if labels is not None:
            self._labels = self._load_labels()

    # -- construction helpers ------------------------------------------------------------------

    def _resolve_checkpoint(self, checkpoint: Any, sha256: Optional[str]) -> tuple[Path, Optional[Checkpoint]]:
        from . import hub  # imported here: only needed when something may be downloaded

        if isinstance(checkpoint, Checkpoint):
            return hub.download(checkpoint, offline=self._offline, progress=self._progress), checkpoint
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise InvalidArgumentError(f"checkpoint must be a name, path or URL, got {type(checkpoint).__name__}")
        text = os.fspath(checkpoint)
        if text.startswith(("http://", "https://")):
            return hub.download_url(text, sha256=sha256, offline=self._offline, progress=self._progress), None
        if Path(text).exists():
            return Path(text), None
        if not (os.sep in text or "/" in text):  # a bare name: registry name or released file name
            try:
                entry = get_checkpoint(text)
            except UnknownModelError:
                if not _looks_like_path(text):
                    raise
            else:
                return hub.download(entry, offline=self._offline, progress=self._progress), entry
        raise CheckpointNotFoundError(
            f"checkpoint file {text!r} does not exist; pass an existing .pth file, a registry name "
            "(see panns_infer.list_models()) or an http(s) URL")

    def _load_labels(self) -> list[str]:
        arg = self._labels_arg
        if arg is None:
            from . import hub

            try:
                names = read_labels_csv(hub.labels_file(offline=self._offline, progress=self._progress))
            except (OfflineError, DownloadError) as exc:
                raise LabelsError(
                    f"the AudioSet class labels are not in the cache and could not be fetched ({exc}). "
                    "Pass labels= a path to class_labels_indices.csv or a list of names, or run once "
                    "online to cache them."
                ) from None
        elif isinstance(arg, (str, os.PathLike)):
            names = read_labels_csv(arg, expected=None)
        else:
            names = list(arg)
        return check_labels(names, self.model.classes)

    # -- properties ----------------------------------------------------------------------------

    @property
    def arch(self) -> str:
        """Architecture name of the loaded network."""
        return self.model.arch

    @property
    def sample_rate(self) -> int:
        """Sample rate the network expects; other rates are resampled to it."""
        return self.model.sample_rate

    @property
    def embedding_size(self) -> Optional[int]:
        """Length of :meth:`embed` vectors (``None`` for decision-level checkpoints)."""
        return self.model.embedding_size

    @property
    def labels(self) -> list[str]:
        """Class names, in output order (loaded on first use)."""
        if self._labels is None:
            with self._labels_lock:
                if self._labels is None:
                    self._labels = self._load_labels()
        return self._labels

    def __repr__(self) -> str:
        return f"AudioTagger(arch={self.arch!r}, device={str(self.device)!r}, checkpoint={str(self.checkpoint_path)!r})"

    # -- inference -----------------------------------------------------------------------------

    def _run(self, clips: Sequence[Clip], outputs: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Run the network on clips grouped by padded length; return per-clip outputs in order."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i, clip in enumerate(clips):
            groups[self.model.target_length(len(clip.samples))].append(i)
        results: list[Optional[dict[str, np.ndarray]]] = [None] * len(clips)
        frames_of = self.model.frontend_config.frames
        with torch.inference_mode():
            for length, members in groups.items():
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start:start + self.batch_size]
                    batch = np.zeros((len(chunk), length), dtype=np.float32)
                    for row, i in enumerate(chunk):
                        batch[row, : len(clips[i].samples)] = clips[i].samples
                    tensor = torch.from_numpy(batch)
                    if self.device.type == "cuda":
                        tensor = tensor.pin_memory().to(self.device, non_blocking=True)
                    out = self.model(tensor)
                    arrays = {k: out[k].float().cpu().numpy() for k in outputs}
                    for row, i in enumerate(chunk):
                        res = {k: v[row] for k, v in arrays.items()}
                        if "framewise_output" in res:
                            res["framewise_output"] = res["framewise_output"][: frames_of(len(clips[i].samples))]
                        results[i] = res
        return results  # type: ignore[return-value]

    def tag(self, x: Any, *, sample_rate: Optional[int] = None, top_k: int = 10) -> Union[Tags, list[Tags]]:
        """Clip-level tags.

        Args:
            x: a path, a 1-D array/tensor, a 2-D ``(batch, samples)`` array/tensor, or a
                list mixing paths and 1-D arrays of any lengths.
            sample_rate: the rate of arrays/tensors (default: :attr:`sample_rate`).
            top_k: how many labels to keep in ``Tags.labels``/``Tags.scores``.

        Returns:
            One :class:`Tags` for one clip, a list for a batch or list.

        >>> AudioTagger("Cnn14").tag("dog.flac", top_k=2)      # doctest: +SKIP
        Tags(Dog=0.912, Animal=0.887)
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidArgumentError(f"top_k must be a non-negative integer, got {top_k!r}")
        clips, single = as_clips(x, sample_rate=sample_rate, target_rate=self.sample_rate)
        names = self.labels
        outs = self._run(clips, ["clipwise_output"])
        tags = [Tags.from_probabilities(o["clipwise_output"], names, top_k=top_k, source=c.source)
                for o, c in zip(outs, clips)]
        return tags[0] if single else tags

    def embed(self, x: Any, *, sample_rate: Optional[int] = None) -> np.ndarray:
        """Embeddings (the penultimate layer), ``(D,)`` for one clip or ``(N, D)`` for several.

        Raises:
            UnsupportedOperationError: the checkpoint is decision-level (no embedding).

        >>> AudioTagger("Cnn14").embed("dog.flac").shape        # doctest: +SKIP
        (2048,)
        """
        if self.embedding_size is None:
            raise UnsupportedOperationError(
                f"{self.arch} is a decision-level model and has no embedding output; use a clip-level "
                "checkpoint such as 'Cnn14' for embeddings")
        clips, single = as_clips(x, sample_rate=sample_rate, target_rate=self.sample_rate)
        outs = self._run(clips, ["embedding"])
        if single:
            return outs[0]["embedding"]
        if not outs:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        return np.stack([o["embedding"] for o in outs])

    def framewise(self, x: Any, *, sample_rate: Optional[int] = None) -> Union[Framewise, list[Framewise]]:
        """Frame-level probabilities for sound event detection (decision-level checkpoints).

        Raises:
            UnsupportedOperationError: the checkpoint is clip-level.

        >>> AudioTagger("Cnn14_DecisionLevelMax").framewise("street.wav").probabilities.shape  # doctest: +SKIP
        (1001, 527)
        """
        if not self.model.has_framewise:
            raise UnsupportedOperationError(
                f"{self.arch} is a clip-level model without framewise output; use a sound event "
                "detection checkpoint: 'Cnn14_DecisionLevelMax' or 'Cnn14_DecisionLevelAtt'")
        clips, single = as_clips(x, sample_rate=sample_rate, target_rate=self.sample_rate)
        names = self.labels
        outs = self._run(clips, ["framewise_output", "clipwise_output"])
        hop = self.model.frontend_config.frame_seconds
        results = [Framewise(o["framewise_output"], hop, names, o["clipwise_output"], c.source)
                   for o, c in zip(outs, clips)]
        return results[0] if single else results

    def infer(self, x: Any, *, sample_rate: Optional[int] = None) -> list[dict[str, np.ndarray]]:
        """Every raw output of the network (``clipwise_output``, ``embedding`` or
        ``framewise_output``) for each clip, as numpy arrays; always a list.
        """
        clips, _ = as_clips(x, sample_rate=sample_rate, target_rate=self.sample_rate)
        keys = ["clipwise_output", "framewise_output" if self.model.has_framewise else "embedding"]
        return self._run(clips, keys)
