"""Training-time augmentation and sampling used to train PANNs: SpecAugment, mixup, and a
class-balanced sampler for multi-label data.

Defaults follow the PANNs training recipe (Kong et al., TASLP 2020, and its reference code,
``audioset_tagging_cnn`` with ``torchlibrosa.augmentation.SpecAugmentation``):

- SpecAugment: 2 time masks of width drawn from ``0..63`` frames and 2 frequency masks of
  width drawn from ``0..7`` mel bins, set to 0 on the batch-normalised log-mel (0 is the
  per-bin mean after ``bn0``). Time warping is not used, as in the reference.
- mixup: ``lambda ~ Beta(1.0, 1.0)``. The reference mixes pairs of log-mels inside the
  network; :func:`mixup` mixes whatever it is given (waveforms, features) and the targets
  with the same weights, which works with every architecture.
- Balanced sampling: classes are visited round-robin in a shuffled order (reshuffled each
  round), and each visit takes the next clip of that class from a shuffled per-class list
  (reshuffled when used up), so rare classes are seen as often as common ones.

Every random choice takes a generator argument, so seeded runs repeat exactly.

>>> import torch
>>> spec = SpecAugment(generator=torch.Generator().manual_seed(0))
>>> spec(torch.ones(2, 1, 100, 64)).shape
torch.Size([2, 1, 100, 64])
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Optional, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from .errors import InvalidArgumentError

__all__ = ["SpecAugment", "mixup", "BalancedSampler"]

log = logging.getLogger("panns_infer")

SeedLike = Union[np.random.Generator, int, None]


def _positive_int(name: str, value: object, *, allow_zero: bool = True) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        kind = "a non-negative" if allow_zero else "a positive"
        raise InvalidArgumentError(f"{name} must be {kind} integer, got {value!r}")
    return int(value)


def _rng(generator: SeedLike) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None or (isinstance(generator, (int, np.integer)) and not isinstance(generator, bool)):
        return np.random.default_rng(generator)
    raise InvalidArgumentError(f"generator must be a numpy Generator, an integer seed or None, got {generator!r}")


class SpecAugment(nn.Module):
    """Time and frequency masking of a log-mel batch (SpecAugment without time warping).

    Masks are drawn independently for every example: each of ``time_masks`` masks has a
    width drawn uniformly from ``0 .. time_mask_width - 1`` frames and a start drawn
    uniformly among the positions where it fits; likewise in frequency. Masked cells are
    set to ``mask_value``. Like dropout, the module only masks in training mode
    (``module.train()``, the default for a new module) and passes the input through
    unchanged in eval mode.

    Inside :class:`panns_infer.transfer.PannsBackbone` (``spec_augment=SpecAugment()``) it
    is applied to the log-mel after ``bn0``, only while the backbone is in training mode.

    Args:
        time_mask_width: exclusive upper bound of a time mask's width, in frames (64 in PANNs).
        time_masks: number of time masks per example (2 in PANNs).
        freq_mask_width: exclusive upper bound of a frequency mask's width, in bins (8).
        freq_masks: number of frequency masks per example (2).
        mask_value: value written into masked cells (0, the mean after batch norm).
        generator: a :class:`torch.Generator` for reproducible masks (default: torch's
            global generator).

    Input: a tensor ``(batch, ..., time, freq)``, e.g. the ``(B, 1, T, mel_bins)`` log-mel.

    Example:
        >>> import torch
        >>> aug = SpecAugment(time_masks=1, freq_masks=0, generator=torch.Generator().manual_seed(1))
        >>> out = aug(torch.ones(1, 1, 200, 64))
        >>> bool((out == 0).any()) and bool((out == 1).any())
        True
        >>> torch.equal(aug.eval()(torch.ones(1, 1, 200, 64)), torch.ones(1, 1, 200, 64))
        True
    """

    def __init__(self, *, time_mask_width: int = 64, time_masks: int = 2, freq_mask_width: int = 8,
                 freq_masks: int = 2, mask_value: float = 0.0,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.time_mask_width = _positive_int("time_mask_width", time_mask_width)
        self.time_masks = _positive_int("time_masks", time_masks)
        self.freq_mask_width = _positive_int("freq_mask_width", freq_mask_width)
        self.freq_masks = _positive_int("freq_masks", freq_masks)
        self.mask_value = float(mask_value)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InvalidArgumentError(f"generator must be a torch.Generator or None, got {generator!r}")
        self.generator = generator

    def extra_repr(self) -> str:
        return (f"time_mask_width={self.time_mask_width}, time_masks={self.time_masks}, "
                f"freq_mask_width={self.freq_mask_width}, freq_masks={self.freq_masks}")

    def _stripes(self, batch: int, length: int, count: int, width: int, device: torch.device) -> torch.Tensor:
        """Boolean ``(batch, length)``: True where one of ``count`` random stripes covers."""
        if count == 0 or width <= 1 or length == 0:
            return torch.zeros(batch, length, dtype=torch.bool, device=device)
        gen = self.generator
        draw_device = gen.device if gen is not None else torch.device("cpu")
        u = torch.rand(2, batch, count, 1, generator=gen, device=draw_device, dtype=torch.float64)
        widths = torch.clamp(torch.floor(u[0] * width), max=length).long()  # 0 .. width-1, <= length
        starts = torch.floor(u[1] * (length - widths + 1)).long()  # the mask fits inside
        widths, starts = widths.to(device), starts.to(device)
        pos = torch.arange(length, device=device)
        return ((pos >= starts) & (pos < starts + widths)).any(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return a masked copy of ``x`` in training mode, ``x`` itself in eval mode.

        >>> import torch
        >>> x = torch.ones(1, 1, 100, 64)
        >>> SpecAugment().eval()(x) is x
        True
        """
        if not self.training:
            return x
        if x.dim() < 3:
            raise InvalidArgumentError(f"SpecAugment expects (batch, ..., time, freq), got shape {tuple(x.shape)}")
        batch, frames, bins = x.shape[0], x.shape[-2], x.shape[-1]
        time = self._stripes(batch, frames, self.time_masks, self.time_mask_width, x.device)
        freq = self._stripes(batch, bins, self.freq_masks, self.freq_mask_width, x.device)
        mask = time[:, :, None] | freq[:, None, :]  # (B, T, F)
        mask = mask.reshape(batch, *([1] * (x.dim() - 3)), frames, bins)
        return x.masked_fill(mask, self.mask_value)


def mixup(x: torch.Tensor, y: torch.Tensor, *, alpha: float = 1.0,
          generator: SeedLike = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix every example with a random partner from the same batch, inputs and targets alike.

    For each example ``i``: ``lam_i ~ Beta(alpha, alpha)``, a partner ``j = perm(i)`` from a
    random permutation, ``x'_i = lam_i * x_i + (1 - lam_i) * x_j`` and the same for ``y``.
    The default ``alpha=1.0`` (``lam`` uniform on [0, 1]) is the PANNs setting.

    Args:
        x: inputs ``(batch, ...)`` (waveforms, spectrograms or features), floating point.
        y: targets ``(batch, classes)`` as float probabilities (one-hot or multi-hot).
            Turn class indices into one-hot first: ``F.one_hot(y, classes).float()``.
        alpha: the Beta distribution's parameter, > 0.
        generator: a :class:`numpy.random.Generator` or an integer seed for reproducible
            draws (default: fresh OS entropy).

    Returns:
        ``(mixed_x, mixed_y)``, same shapes and dtypes as the inputs. Train with a loss that
        takes soft targets, e.g. ``F.binary_cross_entropy_with_logits`` or
        ``F.cross_entropy(logits, mixed_y)``.

    Raises:
        InvalidArgumentError: mismatched batch sizes, non-float targets, or ``alpha <= 0``.

    Example:
        >>> import torch
        >>> x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> mx, my = mixup(x, y, generator=0)
        >>> bool(torch.allclose(my[:, 1], mx[:, 0]))     # the target follows the input
        True
    """
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise InvalidArgumentError(f"alpha must be a positive number, got {alpha!r}")
    if x.shape[0] != y.shape[0]:
        raise InvalidArgumentError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
    if not x.is_floating_point() or not y.is_floating_point():
        raise InvalidArgumentError(
            f"mixup needs floating-point inputs and targets, got {x.dtype} and {y.dtype}; turn class "
            "indices into one-hot targets first: torch.nn.functional.one_hot(y, num_classes).float()")
    rng = _rng(generator)
    batch = x.shape[0]
    lam = rng.beta(alpha, alpha, size=batch)
    perm = torch.from_numpy(rng.permutation(batch)).to(x.device)

    def mix(t: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(lam, dtype=t.dtype, device=t.device).reshape(batch, *([1] * (t.dim() - 1)))
        return w * t + (1 - w) * t.index_select(0, perm.to(t.device))

    return mix(x), mix(y)


class BalancedSampler(Sampler[int]):
    """Indices that visit classes round-robin and draw one clip of each (PANNs' balanced sampler).

    Each round goes through every class that has clips, in a freshly shuffled order, and
    yields the next clip of that class from its own shuffled list; a class's list is
    reshuffled when it is used up. Over ``k`` full rounds every class is drawn exactly
    ``k`` times, however rare it is. A clip with several labels is reachable from each of
    them.

    Args:
        targets: ``(num_clips, num_classes)`` multi-hot array (any nonzero value counts as a
            label), or a 1-D sequence of integer class indices for single-label data.
        num_samples: indices per iteration (one epoch); default ``num_clips``.
        generator: a :class:`numpy.random.Generator` or an integer seed; each iteration
            continues the same stream, so seeded epochs differ from each other but repeat
            across runs.

    Raises:
        InvalidArgumentError: empty or malformed targets, or no clip with any label.

    Use with a DataLoader: ``DataLoader(dataset, batch_size=32, sampler=BalancedSampler(y))``.

    Example:
        >>> sampler = BalancedSampler([0, 0, 0, 0, 1], num_samples=4, generator=0)
        >>> sorted(int(i) == 4 for i in sampler)          # class 1 (clip 4) in half the draws
        [False, False, True, True]
    """

    def __init__(self, targets: Union[np.ndarray, torch.Tensor, Sequence], *,
                 num_samples: Optional[int] = None, generator: SeedLike = None) -> None:
        arr = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
        if arr.ndim == 1:
            if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
                raise InvalidArgumentError(
                    "1-D targets must be a non-empty sequence of non-negative integer class indices, "
                    f"got dtype {arr.dtype} with {arr.size} entries")
            multi = np.zeros((arr.size, int(arr.max()) + 1), dtype=bool)
            multi[np.arange(arr.size), arr] = True
        elif arr.ndim == 2 and arr.shape[0] > 0:
            multi = arr != 0
        else:
            raise InvalidArgumentError(
                f"targets must be (num_clips, num_classes) or 1-D class indices, got shape {arr.shape}")
        self.num_clips = multi.shape[0]
        self.indexes_per_class = [np.flatnonzero(multi[:, k]) for k in range(multi.shape[1])]
        self.classes = [k for k, idx in enumerate(self.indexes_per_class) if idx.size]
        if not self.classes:
            raise InvalidArgumentError("targets hold no label at all; nothing to balance")
        empty = multi.shape[1] - len(self.classes)
        if empty:
            log.info("BalancedSampler: %d of %d classes have no clips and are skipped", empty, multi.shape[1])
        self.num_samples = self.num_clips if num_samples is None else _positive_int(
            "num_samples", num_samples, allow_zero=False)
        self._rng = _rng(generator)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = self._rng
        order = {k: rng.permutation(self.indexes_per_class[k]) for k in self.classes}
        pointer = dict.fromkeys(self.classes, 0)
        produced = 0
        while produced < self.num_samples:
            for k in rng.permutation(self.classes):
                k = int(k)
                if pointer[k] == len(order[k]):
                    order[k], pointer[k] = rng.permutation(self.indexes_per_class[k]), 0
                yield int(order[k][pointer[k]])
                pointer[k] += 1
                produced += 1
                if produced == self.num_samples:
                    return
