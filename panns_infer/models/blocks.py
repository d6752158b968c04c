"""Building blocks shared by the PANNs networks (ARCHITECTURES.md section 2).

Module and attribute names follow the released checkpoints' state-dict keys, so that a
network built from these blocks loads a released file with strict matching.
"""

from __future__ import annotations

from typing import Optional, cast

import torch
from torch import nn
from torch.nn import functional as F

from ..frontend import FrontEndConfig, LogmelFilterBank, Spectrogram
from .reach import Reach

__all__ = [
    "conv2d",
    "ConvBlock",
    "ConvBlock5x5",
    "AttBlock",
    "PannsModel",
    "GlobalPool",
    "HEADS",
    "clip_head",
    "time_steps",
    "upsample_framewise",
    "module_reach",
]


def conv2d(cin: int, cout: int, kernel: int, *, groups: int = 1) -> nn.Conv2d:
    """A bias-free 2-D convolution with 'same' padding, the only kind the networks use."""
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)


def _avg_pool(x: torch.Tensor, pool: tuple[int, ...]) -> torch.Tensor:
    return x if pool == (1, 1) else F.avg_pool2d(x, pool)


class ConvBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> avgpool(pool)."""

    def __init__(self, cin: int, cout: int, pool: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.pool = tuple(pool)
        self.conv1 = conv2d(cin, cout, 3)
        self.conv2 = conv2d(cout, cout, 3)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU on the BN output (which nothing else holds) saves a feature map of
        # memory per layer; autograd allows it, since BN's backward needs its input only.
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return _avg_pool(x, self.pool)

    def time_reach(self, r: Reach) -> Reach:
        return r.conv(3).conv(3).pool(self.pool[0])


class ConvBlock5x5(nn.Module):
    """conv5x5 -> BN -> ReLU -> avgpool(pool) (Cnn6)."""

    def __init__(self, cin: int, cout: int, pool: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.pool = tuple(pool)
        self.conv1 = conv2d(cin, cout, 5)
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _avg_pool(F.relu(self.bn1(self.conv1(x)), inplace=True), self.pool)

    def time_reach(self, r: Reach) -> Reach:
        return r.conv(5).pool(self.pool[0])


class AttBlock(nn.Module):
    """Attention pooling over time: clip = sum_t softmax_t(att) * sigmoid(cla).

    ``bn_att`` exists in the checkpoints but is never used in the forward pass.
    """

    def __init__(self, cin: int, classes: int) -> None:
        super().__init__()
        self.att = nn.Conv1d(cin, classes, 1, bias=True)
        self.cla = nn.Conv1d(cin, classes, 1, bias=True)
        self.bn_att = nn.BatchNorm1d(classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``(B, C, T')`` -> (clip ``(B, K)``, per-step class probabilities ``(B, K, T')``)."""
        logits, probs = self.steps(x)
        weights = torch.softmax(logits, dim=-1)
        return (weights * probs).sum(dim=-1), probs

    def steps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``(B, C, T')`` -> (clamped attention logits, class probabilities), each ``(B, K, T')``:
        the per-step values the softmax over time pools."""
        return torch.clamp(self.att(x), -10.0, 10.0), torch.sigmoid(self.cla(x))


def time_steps(x: torch.Tensor) -> torch.Tensor:
    """A trunk's last map as per-step features ``(B, T', C)``: ``(B, C, T', F')`` averaged over
    frequency, or ``(B, C, L)`` transposed."""
    if x.dim() == 4:
        x = x.mean(dim=3)
    return x.transpose(1, 2)


def clip_head(x: torch.Tensor, fc1: nn.Linear, fc_audioset: nn.Linear) -> dict[str, torch.Tensor]:
    """Clip-level head H: (mean over frequency) -> max + mean over time -> fc1 -> ReLU -> classifier.

    Args:
        x: ``(B, C, T, F)`` for 2-D trunks or ``(B, C, L)`` for 1-D trunks.
    """
    steps = time_steps(x)
    return clip_from_pooled(steps.amax(dim=1) + steps.mean(dim=1), fc1, fc_audioset)


def clip_from_pooled(pooled: torch.Tensor, fc1: nn.Linear, fc_audioset: nn.Linear) -> dict[str, torch.Tensor]:
    """The clip head after pooling: ``pooled`` (max + mean over time, ``(B, C)``) -> fc1 -> ReLU
    -> classifier."""
    embedding = F.relu(fc1(pooled))
    return {"clipwise_output": torch.sigmoid(fc_audioset(embedding)), "embedding": embedding}


HEADS = ("clip", "max", "att")


class GlobalPool:
    """The pooling over the final time axis, computed piece by piece.

    Every network's output depends on the whole input only through this pooling, so feeding
    it the per-step outputs (:meth:`PannsModel.step_outputs`) of consecutive pieces gives the
    same pooled values as feeding the whole sequence at once:

    * ``"clip"`` (clip-level models): running max and sum of ``features`` -> ``max + mean``;
    * ``"max"`` (decision-level max): running max of ``segmentwise_output``;
    * ``"att"`` (attention): softmax over time of ``attention`` weighting
      ``segmentwise_output``, with a running maximum so that the exponentials never overflow
      (the log-sum-exp rearrangement).

    Args:
        head: one of :data:`HEADS`.
        dtype: accumulation type (the whole-input forward pass uses float32 like the
            reference; long inputs accumulate in float64).

    >>> pool = GlobalPool("clip")
    >>> x = torch.tensor([[[1.0], [3.0], [2.0], [6.0]]])
    >>> pool.update({"features": x[:, :3]}); pool.update({"features": x[:, 3:]})
    >>> pool.result()["pooled"]
    tensor([[9.]])
    """

    def __init__(self, head: str, dtype: torch.dtype = torch.float32) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head = head
        self.dtype = dtype
        self.count = 0
        self.state: dict[str, torch.Tensor] = {}

    def update(self, steps: dict[str, torch.Tensor]) -> None:
        """Add steps ``(B, T', D)`` (the next ones in time) of each per-step output."""
        steps = {k: v.to(self.dtype) for k, v in steps.items()}
        st = self.state
        if self.head == "clip":
            x = steps["features"]
            part_max, part_sum = x.amax(dim=1), x.sum(dim=1)
            self.count += x.shape[1]
            if st:
                st["max"], st["sum"] = torch.maximum(st["max"], part_max), st["sum"] + part_sum
            else:
                st["max"], st["sum"] = part_max, part_sum
        elif self.head == "max":
            part = steps["segmentwise_output"].amax(dim=1)
            st["max"] = torch.maximum(st["max"], part) if st else part
        else:
            logits, probs = steps["attention"], steps["segmentwise_output"]
            top = logits.amax(dim=1)
            if st:
                top = torch.maximum(st["top"], top)
            e = torch.exp(logits - top[:, None])
            part_norm, part_weighted = e.sum(dim=1), (e * probs).sum(dim=1)
            if st:
                rescale = torch.exp(st["top"] - top)
                part_norm = part_norm + st["norm"] * rescale
                part_weighted = part_weighted + st["weighted"] * rescale
            st["top"], st["norm"], st["weighted"] = top, part_norm, part_weighted

    def result(self) -> dict[str, torch.Tensor]:
        """``{"pooled": (B, C)}`` for the clip head, ``{"clipwise_output": (B, K)}`` otherwise."""
        st = self.state
        if not st:
            raise ValueError("no steps were pooled")
        if self.head == "clip":
            return {"pooled": st["max"] + st["sum"] / self.count}
        if self.head == "max":
            return {"clipwise_output": st["max"]}
        return {"clipwise_output": st["weighted"] / st["norm"]}


def upsample_framewise(seg: torch.Tensor, frames: int, ratio: int = 32) -> torch.Tensor:
    """Hold each of the T' steps of ``seg`` ``(B, T', K)`` for ``ratio`` frames; pad to ``frames``.

    The padded tail repeats the last step, and the result is cut to ``frames`` rows, so
    ``out[t] = seg[min(t // ratio, T' - 1)]``.
    """
    index = torch.clamp(torch.arange(frames, device=seg.device) // ratio, max=seg.shape[1] - 1)
    return seg.index_select(1, index)


class PannsModel(nn.Module):
    """Base class: what every network in :mod:`panns_infer.models` promises.

    A model maps a waveform batch ``(B, N)`` at ``sample_rate`` to a dict with
    ``clipwise_output`` ``(B, classes)`` and either ``embedding`` ``(B, E)`` (clip-level
    models) or ``framewise_output`` ``(B, T, classes)`` (decision-level models, which also
    give ``segmentwise_output`` ``(B, T', classes)``, the values before each is held for
    ``frames_per_segment`` frames).

    Inputs the reference cannot process are made valid first (:meth:`target_length`):
    clips shorter than ``min_samples`` are zero-padded at the end to that length (as the
    training data was padded to 10 s), and architectures with further length constraints
    pad to the next valid length. Framewise outputs are then cut back to the frames of
    the original input.
    """

    arch: str = ""
    min_samples: int = 1
    embedding_size: Optional[int] = None
    has_framewise: bool = False
    head: str = "clip"  # the global pooling: one of HEADS (see GlobalPool)
    frames_per_segment: int = 32  # STFT frames per step of the final time axis
    # the clip head's layers (checkpoint names), created by the models whose ``head`` is "clip"
    fc1: nn.Linear
    fc_audioset: nn.Linear
    # the input batch norm: BatchNorm2d over mel bins (add_logmel_stem), BatchNorm1d in waveform models
    bn0: nn.Module

    def __init__(self, frontend: FrontEndConfig, classes: int = 527) -> None:
        super().__init__()
        self.frontend_config = frontend
        self.classes = classes

    @property
    def sample_rate(self) -> int:
        return self.frontend_config.sample_rate

    def target_length(self, num_samples: int) -> int:
        """The length an input of ``num_samples`` is zero-padded to before the network."""
        return max(num_samples, self.min_samples)

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        num_samples = waveform.shape[-1]
        target = self.target_length(num_samples)
        if target != num_samples:
            waveform = F.pad(waveform, (0, target - num_samples))
        out = self.forward_valid(waveform)
        if "framewise_output" in out:
            out["framewise_output"] = out["framewise_output"][:, : self.frontend_config.frames(num_samples)]
        return out

    def forward_valid(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward pass on an input whose length the architecture accepts: per-step outputs,
        pooled over the whole time axis, then the head."""
        steps = self.step_outputs(waveform)
        pool = GlobalPool(self.head)
        pool.update(steps)
        out = self.finish(pool.result())
        if "segmentwise_output" in steps:
            seg = steps["segmentwise_output"]
            out["segmentwise_output"] = seg
            out["framewise_output"] = upsample_framewise(seg, self.frontend_config.frames(waveform.shape[-1]),
                                                         self.frames_per_segment)
        return out

    # -- the time-local part and the pooled head, for exact inference piece by piece ----------

    def trunk_map(self, waveform: torch.Tensor) -> torch.Tensor:
        """The last map before the clip head: ``(B, C, T', F')`` or ``(B, C, L)``."""
        raise NotImplementedError

    def step_outputs(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything before the global pooling, per step of the final time axis ``(B, T', D)``.

        Clip-level models give ``features`` (the trunk's map averaged over frequency);
        decision-level ones ``segmentwise_output`` (and ``attention``, the clamped logits of
        the attention head). Step ``i`` depends only on the input samples that
        :meth:`time_reach` names, so these can be computed piece by piece.
        """
        return {"features": time_steps(self.trunk_map(waveform))}

    def finish(self, pooled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Clip outputs from :class:`GlobalPool`'s result."""
        if self.head == "clip":
            return clip_from_pooled(pooled["pooled"], self.fc1, self.fc_audioset)
        return {"clipwise_output": pooled["clipwise_output"]}

    def time_reach(self) -> Reach:
        """Which input samples each step of :meth:`step_outputs` depends on (derived from the
        layers; see :mod:`panns_infer.models.reach`)."""
        raise NotImplementedError

    def stft_reach(self) -> Reach:
        """The centred STFT's frames: frame t reads samples ``t*hop - n_fft/2 .. t*hop + n_fft/2 - 1``."""
        cfg = self.frontend_config
        return Reach().layer(cfg.window_size, stride=cfg.hop_size, padding=cfg.window_size // 2)

    # -- log-mel stem, shared by every log-mel model -----------------------------------------

    def add_logmel_stem(self) -> None:
        """Create ``spectrogram_extractor``, ``logmel_extractor`` and ``bn0`` (checkpoint names)."""
        cfg = self.frontend_config
        self.spectrogram_extractor = Spectrogram(cfg)
        self.logmel_extractor = LogmelFilterBank(cfg)
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, N)`` -> normalised log-mel ``(B, 1, T, mel_bins)``."""
        x = self.logmel_extractor(self.spectrogram_extractor(waveform))
        return self.bn0(x.transpose(1, 3)).transpose(1, 3)


_POINTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout)


def module_reach(module: nn.Module, r: Reach) -> Reach:
    """The reach after ``module``, derived from its layers along the time axis (axis 0 of 2-D
    kernels): sequences are walked in order, convolutions and pools slide, point-wise layers
    keep the reach, and modules with their own ``time_reach(r)`` (residual blocks) say it.

    >>> module_reach(nn.Sequential(conv2d(1, 4, 3), nn.AvgPool2d(2), nn.ReLU()), Reach())
    Reach(jump=2, lo=-1, hi=2)
    """
    own_reach = getattr(module, "time_reach", None)
    if own_reach is not None:
        return own_reach(r)
    if isinstance(module, nn.Sequential):
        for child in module:
            r = module_reach(child, r)
        return r
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        padding = cast(int, module.padding[0])  # the package's convolutions pad by numbers, never "same"
        return r.layer(module.kernel_size[0], stride=module.stride[0], padding=padding,
                       dilation=module.dilation[0])
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool1d, nn.MaxPool2d)):
        def first(v):
            return v if isinstance(v, int) else v[0]

        return r.layer(first(module.kernel_size), stride=first(module.stride), padding=first(module.padding))
    if isinstance(module, _POINTWISE):
        return r
    raise TypeError(f"no time reach known for {type(module).__name__}")
