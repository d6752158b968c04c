"""The HEAR 2021 common API (Holistic Evaluation of Audio Representations) for PANNs.

``import panns_infer.hear as hear`` gives a module that the HEAR tools accept as is::

    m = hear.load_model()                               # Cnn14; or a registry name / .pth path
    scene = hear.get_scene_embeddings(audio, m)         # (n_sounds, scene_embedding_size)
    emb, ts = hear.get_timestamp_embeddings(audio, m)   # (n_sounds, n_frames, D), (n_sounds, n_frames) ms

``audio`` is a float tensor ``(n_sounds, n_samples)`` at ``m.sample_rate`` on the model's
device; results come back as float32 tensors on that device.

Choices, and why:

- **Sample rate.** HEAR accepts models at 16000, 22050, 44100 or 48000 Hz (its validator
  refuses others). Cnn14_16k runs at its native 16 kHz. The 32 kHz networks are exposed at
  48 kHz by default and the audio is resampled to 32 kHz inside the model (a Kaiser-windowed
  sinc polyphase filter on the model's device; the networks use nothing above 14 kHz).
  ``load_model(..., sample_rate=32000)`` skips the resampling (what the PANNs authors' own
  HEAR submission did), at the price of failing HEAR's sample-rate check.
- **Scene embeddings** are the clip embedding (the ``embedding`` output, 2048-D for Cnn14),
  equal to :meth:`panns_infer.AudioTagger.embed` for audio at the network's rate.
- **Timestamp embeddings** are the last conv block's features averaged over frequency, before
  the clip pooling (2048-D for Cnn14, 512-D for Cnn6/Cnn10). One such step pools ``R`` STFT
  frames (R = 32 for Cnn14: 320 ms; 16 for Cnn6/10: 160 ms). For a finer hop the trunk is
  run again on the log-mel shifted by ``R / k`` frames and the ``k`` sequences are
  interleaved (``timestamp_hop_ms``, default the largest hop <= 50 ms, HEAR's recommendation:
  40 ms for every supported network; costs ``k`` trunk passes). The audio is zero-padded by
  half a window (``(R - 1) * hop / 2`` samples) at both ends, so the windows are centred on
  ``0, hop, 2*hop, ...`` ms, and every centre inside the clip gets an embedding; the
  timestamps are those centres, in milliseconds. A clip shorter than one hop (even one
  sample) gets one embedding, at 0 ms.
- Batches are cut into chunks of ``batch_size`` sounds; every sound's result is the same in
  any batch (up to float rounding).

Supported checkpoints: the clip-level CNN family (Cnn6, Cnn10, Cnn14, Cnn14_16k,
Cnn14_emb512/128/32); others raise :class:`~panns_infer.errors.UnsupportedOperationError`.

>>> import torch
>>> from panns_infer.models import build_model
>>> m = load_model(build_model("Cnn6"))      # HEAR passes a path; a model works too
>>> m.sample_rate, m.scene_embedding_size, m.timestamp_embedding_size, m.timestamp_hop_ms
(48000, 512, 512, 40.0)
>>> emb, ts = get_timestamp_embeddings(torch.zeros(2, 48000), m)
>>> emb.shape, ts[0, :3].tolist()
(torch.Size([2, 26, 512]), [0.0, 40.0, 80.0])
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import InvalidArgumentError, InvalidAudioError, UnsupportedOperationError
from .models import PannsModel
from .models.cnn import Cnn
from .registry import DEFAULT_CHECKPOINT
from .transfer import CheckpointLike, _cnn_blocks, _frame_ratio, resolve_model

__all__ = ["HearModel", "load_model", "get_scene_embeddings", "get_timestamp_embeddings",
           "HEAR_SAMPLE_RATES"]

log = logging.getLogger("panns_infer")

#: The sample rates the HEAR 2021 validator accepts.
HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)
_MAX_HOP_MS = 50.0  # HEAR's recommended largest timestamp interval


class _Resampler(nn.Module):
    """Band-limited resampling by a rational factor: a Kaiser-windowed sinc, run as a strided
    convolution with one kernel per output phase (differentiable, on any device).

    Output sample ``m`` sits at input position ``m * orig / new``; the low-pass cut-off is
    ``rolloff`` times the lower Nyquist frequency. Output length is ``ceil(N * new / orig)``.
    """

    kernel: torch.Tensor  # a buffer: one filter per output phase

    def __init__(self, orig_rate: int, new_rate: int, *, zero_crossings: int = 64, rolloff: float = 0.9475937167399596,
                 beta: float = 14.769656459379492) -> None:
        super().__init__()
        g = math.gcd(orig_rate, new_rate)
        self.orig, self.new = orig_rate // g, new_rate // g
        cutoff = min(1.0, self.new / self.orig) * rolloff  # as a fraction of the input Nyquist
        self.width = math.ceil(zero_crossings / cutoff)  # half-length of the filter, input samples
        taps = np.arange(2 * self.width + self.orig, dtype=np.float64) - self.width
        phase = np.arange(self.new, dtype=np.float64)[:, None] * self.orig / self.new
        dist = taps[None, :] - phase  # input samples from the output position
        window = np.i0(beta * np.sqrt(np.clip(1.0 - (dist / self.width) ** 2, 0.0, None))) / np.i0(beta)
        window[np.abs(dist) > self.width] = 0.0
        kernel = cutoff * np.sinc(cutoff * dist) * window
        self.register_buffer("kernel", torch.from_numpy(kernel.astype(np.float32))[:, None, :], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` -> ``(B, ceil(N * new / orig))``; the signal is zero outside ``0..N-1``."""
        batch, length = x.shape
        out_len = -(-length * self.new // self.orig)
        steps = -(-out_len // self.new)
        total = (steps - 1) * self.orig + self.kernel.shape[-1]
        padded = F.pad(x[:, None, :], (self.width, max(0, total - length - self.width)))
        y = F.conv1d(padded, self.kernel, stride=self.orig)  # (B, new, steps)
        return y.transpose(1, 2).reshape(batch, -1)[:, :out_len]


class HearModel(nn.Module):
    """A PANNs network with the attributes HEAR expects; build it with :func:`load_model`.

    Attributes:
        sample_rate: the rate the audio must have (Hz).
        scene_embedding_size: length of a scene embedding.
        timestamp_embedding_size: length of a timestamp embedding.
        timestamp_hop_ms: interval between timestamps, in milliseconds.
        batch_size: sounds per forward pass.
        model: the wrapped :class:`~panns_infer.models.PannsModel`.

    Calling the module gives scene embeddings.

    >>> from panns_infer.models import build_model
    >>> HearModel(build_model("Cnn14_16k")).sample_rate
    16000
    """

    def __init__(self, model: PannsModel, *, sample_rate: Optional[int] = None,
                 timestamp_hop_ms: Optional[float] = None, batch_size: int = 16) -> None:
        super().__init__()
        if not isinstance(model, Cnn) or model.embedding_size is None:
            raise UnsupportedOperationError(
                f"the HEAR API needs a clip-level CNN-family checkpoint (Cnn6, Cnn10, Cnn14, Cnn14_16k, "
                f"Cnn14_emb512/128/32) for scene and timestamp embeddings; {model.arch} is not one")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        native = model.sample_rate
        if sample_rate is None:
            sample_rate = native if native in HEAR_SAMPLE_RATES else 48000
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise InvalidArgumentError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
        if sample_rate not in HEAR_SAMPLE_RATES:
            log.warning("HEAR model at %d Hz: the HEAR validator only accepts %s", sample_rate, HEAR_SAMPLE_RATES)
        self.model = model.eval()
        self.sample_rate = int(sample_rate)
        self.resampler = _Resampler(sample_rate, native) if sample_rate != native else None
        cfg = model.frontend_config
        self._ratio = _frame_ratio(model)
        native_ms = self._ratio * cfg.hop_size * 1000 / native
        allowed = [native_ms / k for k in range(1, self._ratio + 1) if self._ratio % k == 0]
        if timestamp_hop_ms is None:
            timestamp_hop_ms = max(h for h in allowed if h <= _MAX_HOP_MS)
        match = [k for k in range(1, self._ratio + 1)
                 if self._ratio % k == 0 and abs(native_ms / k - float(timestamp_hop_ms)) < 1e-9]
        if not match:
            raise InvalidArgumentError(
                f"timestamp_hop_ms must be one of {[round(h, 4) for h in allowed]} for {model.arch}, "
                f"got {timestamp_hop_ms!r}")
        self.shifts = match[0]
        self.timestamp_hop_ms = float(native_ms / self.shifts)
        self.scene_embedding_size = int(model.embedding_size)
        self.timestamp_embedding_size = int(model.config.channels[-1])
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        """Where the weights are (and where results are returned)."""
        return next(self.model.parameters()).device

    def extra_repr(self) -> str:
        return (f"arch={self.model.arch!r}, sample_rate={self.sample_rate}, "
                f"timestamp_hop_ms={self.timestamp_hop_ms}")

    def _prepare(self, audio: torch.Tensor) -> torch.Tensor:
        if not isinstance(audio, torch.Tensor):
            raise InvalidAudioError(f"audio must be a torch tensor (n_sounds, n_samples), got {type(audio).__name__}")
        if audio.dim() != 2:
            raise InvalidAudioError(f"audio must have shape (n_sounds, n_samples), got {tuple(audio.shape)}")
        if audio.shape[1] == 0:
            raise InvalidAudioError("audio has no samples (n_samples == 0)")
        if not audio.is_floating_point():
            raise InvalidAudioError(f"audio must be floating point in [-1, 1], got {audio.dtype}")
        return audio.to(device=self.device, dtype=torch.float32)

    def _native(self, chunk: torch.Tensor) -> torch.Tensor:
        return chunk if self.resampler is None else self.resampler(chunk)

    def scene(self, audio: torch.Tensor) -> torch.Tensor:
        """Scene embeddings; see :func:`get_scene_embeddings`.

        >>> import torch
        >>> from panns_infer.models import build_model
        >>> HearModel(build_model("Cnn6")).scene(torch.zeros(2, 4800)).shape
        torch.Size([2, 512])
        """
        audio = self._prepare(audio)
        self.eval()
        outs = [torch.zeros(0, self.scene_embedding_size, device=self.device)]
        with torch.no_grad():
            for start in range(0, audio.shape[0], self.batch_size):
                outs.append(self.model(self._native(audio[start:start + self.batch_size]))["embedding"])
        return torch.cat(outs)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Scene embeddings, as :meth:`scene`."""
        return self.scene(audio)

    def timestamps(self, num_samples: int) -> np.ndarray:
        """Timestamps (ms) of the embeddings of a sound of ``num_samples`` at :attr:`sample_rate`.

        >>> from panns_infer.models import build_model
        >>> HearModel(build_model("Cnn6")).timestamps(4800).tolist()   # 100 ms at 48 kHz
        [0.0, 40.0, 80.0]
        """
        native = self.model.sample_rate
        step = self._ratio * self.model.frontend_config.hop_size // self.shifts  # native samples
        last = (int(num_samples) * native) // (self.sample_rate * step)  # last centre inside the clip
        return np.arange(last + 1) * (step * 1000.0 / native)

    def timestamp_embeddings(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timestamp embeddings and timestamps; see :func:`get_timestamp_embeddings`.

        >>> import torch
        >>> from panns_infer.models import build_model
        >>> emb, ts = HearModel(build_model("Cnn6")).timestamp_embeddings(torch.zeros(1, 4800))
        >>> emb.shape, ts.shape
        (torch.Size([1, 3, 512]), torch.Size([1, 3]))
        """
        audio = self._prepare(audio)
        self.eval()
        times = self.timestamps(audio.shape[1])
        count, ratio, shifts = len(times), self._ratio, self.shifts
        hop = self.model.frontend_config.hop_size
        pad = (ratio - 1) * hop // 2  # half a window: centres fall on 0, step, 2*step, ...
        feats = torch.zeros(audio.shape[0], count, self.timestamp_embedding_size, device=self.device)
        with torch.no_grad():
            for start in range(0, audio.shape[0], self.batch_size):
                x = F.pad(self._native(audio[start:start + self.batch_size]), (pad, pad))
                logmel = self.model.logmel(x)  # (b, 1, T, M); T >= ratio frames
                for k in range(min(shifts, count)):
                    needed = -(-(count - k) // shifts)  # timestamps k, k + shifts, ... below count
                    y = _cnn_blocks(self.model, logmel[:, :, k * (ratio // shifts):])
                    y = y.mean(dim=3).transpose(1, 2)
                    if y.shape[1] < needed:  # cannot happen with the padding above
                        raise RuntimeError(f"internal error: {y.shape[1]} steps for {needed} timestamps")
                    feats[start:start + x.shape[0], k::shifts] = y[:, :needed]
        stamps = torch.as_tensor(times, dtype=torch.float32, device=self.device).expand(audio.shape[0], count)
        return feats, stamps.contiguous()


def load_model(model_file_path: Union[str, CheckpointLike] = "", *, sample_rate: Optional[int] = None,
               timestamp_hop_ms: Optional[float] = None, batch_size: int = 16,
               offline: Optional[bool] = None) -> HearModel:
    """Load a checkpoint as a HEAR model (a ``torch.nn.Module``, on the CPU, in eval mode).

    Args:
        model_file_path: a path to a ``.pth`` file, a registry name, a URL, or a loaded
            :class:`~panns_infer.models.PannsModel`; empty means ``"Cnn14"`` (downloaded
            once into the cache).
        sample_rate: the rate the model accepts; default the network's own when HEAR allows
            it (16000 for Cnn14_16k), else 48000 with resampling to the network's 32000.
        timestamp_hop_ms: interval between timestamp embeddings; default the largest allowed
            value <= 50 ms (40 ms). Allowed: the trunk step (320 ms for Cnn14, 160 ms for
            Cnn6/10) divided by a divisor of its frame ratio (32 or 16).
        batch_size: sounds per forward pass.
        offline: forbid downloads (default: the ``PANNS_INFER_OFFLINE`` variable).

    Raises:
        UnsupportedOperationError: a checkpoint outside the clip-level CNN family.
        InvalidArgumentError: a bad ``sample_rate``, ``timestamp_hop_ms`` or ``batch_size``.
        CheckpointError, DownloadError: see :func:`panns_infer.transfer.resolve_model`.

    Example:
        >>> m = load_model()                                  # doctest: +SKIP
        >>> m.sample_rate, m.scene_embedding_size            # doctest: +SKIP
        (48000, 2048)
    """
    checkpoint = model_file_path if not (isinstance(model_file_path, str) and model_file_path == "") \
        else DEFAULT_CHECKPOINT
    model = resolve_model(checkpoint, offline=offline)
    return HearModel(model, sample_rate=sample_rate, timestamp_hop_ms=timestamp_hop_ms, batch_size=batch_size)


def _check_model(model: object) -> HearModel:
    if not isinstance(model, HearModel):
        raise InvalidArgumentError(f"model must come from panns_infer.hear.load_model, got {type(model).__name__}")
    return model


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """One embedding per sound: ``(n_sounds, model.scene_embedding_size)``, float32.

    Args:
        audio: ``(n_sounds, n_samples)`` float tensor at ``model.sample_rate``, in [-1, 1].
        model: from :func:`load_model`.

    Raises:
        InvalidAudioError: not a 2-D floating-point tensor, or no samples.

    Example:
        >>> import torch
        >>> from panns_infer.models import build_model
        >>> get_scene_embeddings(torch.zeros(3, 100), load_model(build_model("Cnn6"))).shape
        torch.Size([3, 512])
    """
    return _check_model(model).scene(audio)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings at regular times: ``(n_sounds, n_frames, D)`` and timestamps ``(n_sounds, n_frames)``.

    Timestamps are in milliseconds, at the centres of the windows the embeddings describe:
    ``0, hop, 2*hop, ...`` up to the last centre inside the sound.

    Args:
        audio: ``(n_sounds, n_samples)`` float tensor at ``model.sample_rate``, in [-1, 1].
        model: from :func:`load_model`.

    Raises:
        InvalidAudioError: not a 2-D floating-point tensor, or no samples.

    Example:
        >>> import torch
        >>> from panns_infer.models import build_model
        >>> emb, ts = get_timestamp_embeddings(torch.zeros(1, 1), load_model(build_model("Cnn6")))
        >>> emb.shape, ts.tolist()
        (torch.Size([1, 1, 512]), [[0.0]])
    """
    return _check_model(model).timestamp_embeddings(audio)
