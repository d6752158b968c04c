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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Optional, Sequence, Union

import numpy as np
import torch

from .audio import as_clips
from .checkpoint import load_model
from .engine import Engine, Item, LongFile, ProgressCallback
from .errors import DeviceError, InvalidArgumentError, UnsupportedOperationError
from .frontend import SpectrogramMethod, check_spectrogram
from .labels import audioset_labels, check_labels, read_labels_csv
from .models import PannsModel
from .registry import DEFAULT_CHECKPOINT, Checkpoint
from .results import Framewise, Tags, Timeline, expand_segments
from .windows import grid_spans

if TYPE_CHECKING:
    from .stream import StreamUpdate

__all__ = ["AudioTagger", "resolve_device"]

log = logging.getLogger("panns_infer")

PathLike = Union[str, os.PathLike]


def _seconds(item: Item, rate: int) -> float:
    """Seconds of audio in a clip or long file (at the model's rate)."""
    return (item.num_samples if isinstance(item, LongFile) else len(item.samples)) / rate


def _input_rate(item: Item) -> Optional[int]:
    """The input's own sample rate (a long file's from its header)."""
    if isinstance(item, LongFile):
        from .audio import probe_file

        return probe_file(item.path)[1]
    return item.original_rate


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
            default the AudioSet list shipped with the package is used (no download).
        batch_size: clips (or windows of long inputs) per forward pass.
        window: ``None`` (default): every input gives the reference's whole-input result;
            inputs longer than ``whole_up_to`` are computed in exact overlapping chunks, so
            memory stays bounded for recordings of any length. A number (e.g. ``10.0``, the
            training clip length): inputs longer than ``whole_up_to`` run as overlapping
            windows this many seconds long, whose outputs combine by ``aggregate``.
        hop: seconds between windows, rounded down to whole 0.32 s segments (default:
            half the window).
        whole_up_to: inputs up to this many seconds (30 s) run whole in one pass; longer
            ones in exact chunks keeping about this many seconds each (or as windows).
            ``math.inf`` runs every input in one pass, whatever the memory it needs.
        aggregate: with windows, how an input's windows combine into its clip outputs, the
            same rule for tags, embeddings, framewise clip scores and :meth:`infer`:
            ``"max"`` (default; a class is as present as in its strongest window) or
            ``"mean"``.
        precision: ``"fp32"`` (default; equal to the reference), or on CUDA ``"tf32"``,
            ``"fp16"`` or ``"bf16"`` for speed, with the tolerances the README gives.
        sha256: checksum of a URL checkpoint (recommended).
        offline: never touch the network (default: the ``PANNS_INFER_OFFLINE`` variable).
        progress: show download progress bars (default: when stderr is a terminal).
        optimize: on the CPU in ``fp32``, run a faster copy of the CNN-family networks
            (batch norm folded, Winograd and packed-GEMM convolutions;
            :mod:`panns_infer.fast`; ~2x faster, ~0.4 s to build for Cnn14) with the same
            outputs to float32 rounding. The plain network's conv weights are freed once
            copied, so they are never held twice. ``False`` runs the plain network.
        spectrogram: how that faster copy computes the power spectrogram. ``"reference"``
            (default): the reference's DFT as a convolution, so outputs equal the
            reference's on every kind of sound. ``"fft"``: an FFT, ~8 ms less per 10 s
            clip, which moves probabilities by up to ~3e-4 and embeddings by ~2e-3 on tonal
            audio (tones, chords, sweeps); it only changes the CPU fast path.

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
                 window: Optional[float] = None, hop: Optional[float] = None, whole_up_to: float = 30.0,
                 aggregate: str = "max", precision: str = "fp32",
                 sha256: Optional[str] = None, offline: Optional[bool] = None,
                 progress: Optional[bool] = None, optimize: bool = True,
                 spectrogram: SpectrogramMethod = "reference") -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        check_spectrogram(spectrogram)  # before anything loads
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._offline = offline
        self._progress = progress
        from . import hub  # imported here: requests is only needed when something may be downloaded

        path, entry = hub.resolve_checkpoint(checkpoint, sha256=sha256, offline=offline, progress=progress)
        self.checkpoint_path = path
        self._net: PannsModel = load_model(path, arch=arch or (entry.arch if entry else None),
                                           filename=entry.filename if entry else None)
        self._net.to(self.device)
        self._engine = Engine(self._net, self.device, batch_size=batch_size, window=window, hop=hop,
                              whole_up_to=whole_up_to, precision=precision, optimize=optimize,
                              spectrogram=spectrogram, aggregate=aggregate)
        self._labels_arg = labels
        self._labels: Optional[list[str]] = None
        self._labels_lock = threading.Lock()
        if labels is not None:
            self._labels = self._load_labels()

    # -- construction helpers ------------------------------------------------------------------

    def _load_labels(self) -> list[str]:
        arg = self._labels_arg
        if arg is None:
            names = audioset_labels(offline=self._offline, progress=self._progress)
        elif isinstance(arg, (str, os.PathLike)):
            names = read_labels_csv(arg, expected=None)
        else:
            names = list(arg)
        return check_labels(names, self._net.classes)

    # -- properties ----------------------------------------------------------------------------

    @property
    def model(self) -> PannsModel:
        """The network inference runs (an ``nn.Module`` in eval mode), already in memory.

        With ``optimize=True`` on the CPU in ``fp32`` this is the faster copy from
        :func:`panns_infer.fast.optimize` (same ``forward`` outputs, ``arch``, ``sample_rate``
        ...; batch norm folded into its convolutions), else the plain network as loaded. It is
        never read from the checkpoint file again: the tagger keeps working when that file is
        moved or replaced. For the plain network's modules, pass ``optimize=False``.
        """
        return self._engine.runner

    @property
    def arch(self) -> str:
        """Architecture name of the loaded network."""
        return self._net.arch

    @property
    def sample_rate(self) -> int:
        """Sample rate the network expects; other rates are resampled to it."""
        return self._net.sample_rate

    @property
    def embedding_size(self) -> Optional[int]:
        """Length of :meth:`embed` vectors (``None`` for decision-level checkpoints)."""
        return self._net.embedding_size

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

    def _items(self, x: Any, sample_rate: Optional[int]) -> tuple[Sequence[Item], bool]:
        """Inputs as clips in memory, or :class:`LongFile` for files too long for one pass."""

        def long_file(el: Any) -> Optional[LongFile]:
            if isinstance(el, (str, os.PathLike)) and Path(el).is_file():
                return self._engine.file_item(el)
            return None

        if isinstance(x, (str, os.PathLike)):
            item = long_file(x)
            return ([item], True) if item else as_clips(x, sample_rate=sample_rate, target_rate=self.sample_rate)
        if isinstance(x, (list, tuple)):
            longs = [long_file(el) for el in x]
            rest = [el for el, item in zip(x, longs) if item is None]
            clips = iter(as_clips(rest, sample_rate=sample_rate, target_rate=self.sample_rate)[0])
            return [item if item is not None else next(clips) for item in longs], False
        return as_clips(x, sample_rate=sample_rate, target_rate=self.sample_rate)

    def tag(self, x: Any, *, sample_rate: Optional[int] = None, top_k: int = 10, aggregate: Optional[str] = None,
            callback: Optional[ProgressCallback] = None) -> Union[Tags, list[Tags]]:
        """Clip-level tags.

        Args:
            x: a path, a 1-D array/tensor, a 2-D ``(batch, samples)`` array/tensor, or a
                list mixing paths and 1-D arrays of any lengths.
            sample_rate: the rate of arrays/tensors (default: :attr:`sample_rate`).
            top_k: how many labels to keep in ``Tags.labels``/``Tags.scores``.
            aggregate: with windows, how an input's windows combine (default: the tagger's
                ``aggregate``); unused in the default exact mode.
            callback: called as ``callback(seconds_done, seconds_total)`` while running.

        Returns:
            One :class:`Tags` for one clip, a list for a batch or list.

        >>> AudioTagger("Cnn14").tag("dog.flac", top_k=2)      # doctest: +SKIP
        Tags(Dog=0.912, Animal=0.887)
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidArgumentError(f"top_k must be a non-negative integer, got {top_k!r}")
        items, single = self._items(x, sample_rate)
        names = self.labels
        outs = self._engine.run(items, ["clipwise_output"], aggregate=aggregate, callback=callback)
        tags = [Tags.from_probabilities(o["clipwise_output"], names, top_k=top_k, source=c.source,
                                        duration=_seconds(c, self.sample_rate), sample_rate=_input_rate(c))
                for o, c in zip(outs, items)]
        return tags[0] if single else tags

    def embed(self, x: Any, *, sample_rate: Optional[int] = None, aggregate: Optional[str] = None,
              callback: Optional[ProgressCallback] = None) -> np.ndarray:
        """Embeddings (the penultimate layer), ``(D,)`` for one clip or ``(N, D)`` for several.

        With windows, an input longer than ``whole_up_to`` gives the ``aggregate`` (default:
        the tagger's) of its windows' embeddings; by default it is the whole input's embedding.

        Raises:
            UnsupportedOperationError: the checkpoint is decision-level (no embedding).

        >>> AudioTagger("Cnn14").embed("dog.flac").shape        # doctest: +SKIP
        (2048,)
        """
        if self.embedding_size is None:
            raise UnsupportedOperationError(
                f"{self.arch} is a decision-level model and has no embedding output; use a clip-level "
                "checkpoint such as 'Cnn14' for embeddings")
        items, single = self._items(x, sample_rate)
        outs = self._engine.run(items, ["embedding"], aggregate=aggregate, callback=callback)
        if single:
            return outs[0]["embedding"]
        if not outs:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        return np.stack([o["embedding"] for o in outs])

    def framewise(self, x: Any, *, sample_rate: Optional[int] = None,
                  callback: Optional[ProgressCallback] = None) -> Union[Framewise, list[Framewise]]:
        """Frame-level probabilities for sound event detection (decision-level checkpoints).

        By default every input's frames are the whole input's (long ones computed in exact
        chunks). With windows, an input longer than ``whole_up_to`` runs as overlapping
        windows whose frames are stitched keeping each window's centre, and its ``clipwise``
        combines the windows by the tagger's ``aggregate``.

        Raises:
            UnsupportedOperationError: the checkpoint is clip-level.

        >>> AudioTagger("Cnn14_DecisionLevelMax").framewise("street.wav").probabilities.shape  # doctest: +SKIP
        (1001, 527)
        """
        if not self._net.has_framewise:
            raise UnsupportedOperationError(
                f"{self.arch} is a clip-level model without framewise output; use a sound event "
                "detection checkpoint: 'Cnn14_DecisionLevelMax' or 'Cnn14_DecisionLevelAtt'"
                + (" (a Cnn14_DecisionLevelMax file loads as Cnn14 unless its name, its checksum or "
                   "arch='Cnn14_DecisionLevelMax' says otherwise)" if self.arch == "Cnn14" else ""))
        items, single = self._items(x, sample_rate)
        names = self.labels
        outs = self._engine.run(items, ["segmentwise_output", "clipwise_output"], callback=callback)
        hop = self._net.frontend_config.frame_seconds
        results = [Framewise.from_segments(o["segmentwise_output"], frames_per_segment=self._net.frames_per_segment,
                                           num_frames=o["num_frames"], frame_hop=hop, class_names=names,
                                           clipwise=o["clipwise_output"], source=c.source)
                   for o, c in zip(outs, items)]
        return results[0] if single else results

    def timeline(self, x: Any, *, segment: float = 2.0, hop: float = 1.0, sample_rate: Optional[int] = None,
                 callback: Optional[ProgressCallback] = None) -> Union[Timeline, list[Timeline]]:
        """Tag consecutive segments: a ``(segments, classes)`` probability timeline.

        Works with any checkpoint (its clip-level output is used). Segment k covers
        ``[k*hop, k*hop + segment)`` seconds; the last one ends with the recording. Files are
        streamed, so memory does not grow with their length.

        >>> AudioTagger("Wavegram_Logmel_Cnn14").timeline("street.flac", segment=2.0, hop=1.0)  # doctest: +SKIP
        Timeline(segments=59, classes=527, hop=1s, source='street.flac')
        """
        if not (isinstance(segment, (int, float)) and isinstance(hop, (int, float)) and 0 < hop <= segment):
            raise InvalidArgumentError(f"need 0 < hop <= segment seconds, got segment={segment!r}, hop={hop!r}")
        rate = self.sample_rate
        seg_samples, hop_samples = max(1, int(round(segment * rate))), max(1, int(round(hop * rate)))
        items, single = self._items(x, sample_rate)
        names = self.labels
        results = []
        for item in items:
            length = item.num_samples if isinstance(item, LongFile) else len(item.samples)
            spans = grid_spans(length, segment=seg_samples, hop=hop_samples)
            rows, starts, ends = [], [], []
            for start, end, out in self._engine.over_spans(item, spans, ["clipwise_output"]):
                rows.append(out["clipwise_output"])
                starts.append(start / rate)
                ends.append(end / rate)
                if callback:
                    callback(end / rate, length / rate)
            results.append(Timeline(np.stack(rows) if rows else np.zeros((0, len(names)), np.float32),
                                    np.array(starts), np.array(ends), hop_samples / rate, names, item.source))
        return results[0] if single else results

    def stream(self, source: Any, *, sample_rate: Optional[int] = None, raw: Optional[str] = None,
               window: Optional[float] = 10.0, hop: float = 1.0, top_k: int = 10, embeddings: bool = False,
               events: Union[bool, dict, None] = None, max_lag: Optional[float] = None,
               idle_timeout: Optional[float] = None, poll: float = 0.1,
               mode: str = "exact") -> Generator["StreamUpdate", None, None]:
        """Tag live audio: every ``hop`` seconds of input, the framewise rows and tags that became
        final (``mode="exact"``), or the tags of the latest window (``mode="windows"``).

        Args:
            source: an iterable of 1-D chunks of any sizes (arrays or tensors, at
                ``sample_rate``), a binary file object (encoded audio, or raw PCM declared by
                ``raw``), a path to a file that may still be growing (followed until
                ``idle_timeout`` seconds pass without new bytes), or ``"mic"``.
            sample_rate: the rate of array chunks (default: :attr:`sample_rate`).
            raw: the format of headerless PCM bytes, ``"FORMAT:RATE[:CHANNELS]"`` (e.g.
                ``"s16le:32000"``; see :func:`panns_infer.stream_sources.parse_raw`).
            window: seconds tagged per update. Exact: the final steps of the last ``window``
                seconds, pooled as the network pools (``None``: every step since the start, the
                running clip result). Windows: the latest window run through the network
                (before a whole window exists: everything so far).
            hop: seconds of input between updates, rounded down to whole steps of the network
                (0.32 s for Cnn14; windows: for decision-level checkpoints only, so the
                windows are those :meth:`framewise` uses).
            top_k: labels kept in each update's tags.
            embeddings: add each window's embedding (clip-level checkpoints).
            events: ``True`` or a dict of :meth:`Framewise.events` options (``threshold``,
                ``offset_threshold``, ``median_filter``, ``min_duration``, ``min_gap``,
                ``classes``) to report events as they close (decision-level checkpoints).
            max_lag: for live sources (file objects, paths, ``"mic"``): seconds of audio that
                may wait while the model runs; beyond that the oldest audio is skipped and the
                skipped span is reported (``StreamUpdate.skipped``). ``None`` (default, but 5 s
                or two windows for ``"mic"``): never skip; the reader waits, slowing the writer.
            idle_timeout: end the stream after this many seconds without data (``None``: wait).
            poll: seconds between checks of a growing file.
            mode: ``"exact"`` (default): the network runs on the newest ``hop`` with the
                receptive-field margin of real audio on each side (1.6 s for the decision-level
                Cnn14s; :mod:`panns_infer.stream_exact`), so rows are final ``margin + hop``
                after their audio arrived and equal the whole recording's. ``"windows"``: the
                network runs on the latest ``window`` every ``hop``.

        Yields:
            :class:`~panns_infer.stream.StreamUpdate` objects. Exact: the rows of all updates,
            concatenated, equal :meth:`framewise` of the whole recording, the events its
            events, and with ``window=None`` the final update's tags its :meth:`tag`.
            Windows: each update's tags equal :meth:`tag` of its ``[start, end)`` slice;
            framewise rows, once final, and events equal those of :meth:`framewise` on the
            whole recording with ``AudioTagger(..., window=window, hop=hop, whole_up_to=0)``.

        >>> sed = AudioTagger("Cnn14_DecisionLevelMax")                        # doctest: +SKIP
        >>> for u in sed.stream(chunks, sample_rate=48000, events=True):        # doctest: +SKIP
        ...     print(u.start, u.end, u.tags.labels[:3], u.events)
        """
        from .live import live_updates

        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidArgumentError(f"top_k must be a non-negative integer, got {top_k!r}")
        # "in (None, False)" does not narrow for mypy; it also turns events=0 off, so it stays
        options = {} if events is True else None if events in (None, False) else dict(events)  # type: ignore[arg-type]
        return live_updates(self._engine, self.labels, source, sample_rate=sample_rate, raw=raw, window=window,
                            hop=hop, top_k=top_k, embeddings=embeddings, events=options, max_lag=max_lag,
                            idle_timeout=idle_timeout, poll=poll, mode=mode)

    def log_mel(self, x: Any, *, sample_rate: Optional[int] = None) -> np.ndarray:
        """The log-mel spectrogram (dB, before the network's normalisation) of one clip,
        ``(frames, mel_bins)``: the picture the network sees, e.g. for :meth:`Framewise.plot`.

        Raises:
            UnsupportedOperationError: the checkpoint is a waveform-only network.
        """
        if not hasattr(self._net, "logmel_extractor"):
            raise UnsupportedOperationError(f"{self.arch} reads the waveform directly and has no log-mel front end")
        clips, single = as_clips(x, sample_rate=sample_rate, target_rate=self.sample_rate)
        if not single:
            raise InvalidArgumentError("log_mel() takes one clip (a path or a 1-D array)")
        with torch.inference_mode():
            wave = torch.from_numpy(np.pad(clips[0].samples, (0, max(0, 513 - len(clips[0].samples)))))
            spec = self._net.spectrogram_extractor(wave[None].to(self.device))
            return self._net.logmel_extractor(spec)[0, 0].cpu().numpy()

    def infer(self, x: Any, *, sample_rate: Optional[int] = None) -> Union[dict[str, np.ndarray],
                                                                          list[dict[str, np.ndarray]]]:
        """Every raw output of the network (``clipwise_output``, ``embedding`` or
        ``framewise_output``) as numpy arrays: one dict for one clip, a list for a batch or
        list. Long inputs follow the same rule as :meth:`tag` and :meth:`embed`.

        >>> AudioTagger("Cnn14").infer("dog.flac")["embedding"].shape      # doctest: +SKIP
        (2048,)
        """
        items, single = self._items(x, sample_rate)
        if not self._net.has_framewise:
            outs = self._engine.run(items, ["clipwise_output", "embedding"])
        else:
            outs = [{"clipwise_output": o["clipwise_output"], "framewise_output": self._frames(o)}
                    for o in self._engine.run(items, ["clipwise_output", "segmentwise_output"])]
        return outs[0] if single else outs

    def _frames(self, out: dict) -> np.ndarray:
        return expand_segments(out["segmentwise_output"], out["num_frames"], self._net.frames_per_segment)
