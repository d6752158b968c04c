"""Building blocks shared by the PANNs networks (ARCHITECTURES.md section 2).

Module and attribute names follow the released checkpoints' state-dict keys, so that a
network built from these blocks loads a released file with strict matching.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..frontend import FrontEndConfig, LogmelFilterBank, Spectrogram

__all__ = [
    "conv2d",
    "ConvBlock",
    "ConvBlock5x5",
    "AttBlock",
    "PannsModel",
    "clip_head",
    "upsample_framewise",
]


def conv2d(cin: int, cout: int, kernel: int, *, groups: int = 1) -> nn.Conv2d:
    """A bias-free 2-D convolution with 'same' padding, the only kind the networks use."""
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)


def _avg_pool(x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
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


class ConvBlock5x5(nn.Module):
    """conv5x5 -> BN -> ReLU -> avgpool(pool) (Cnn6)."""

    def __init__(self, cin: int, cout: int, pool: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.pool = tuple(pool)
        self.conv1 = conv2d(cin, cout, 5)
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _avg_pool(F.relu(self.bn1(self.conv1(x)), inplace=True), self.pool)


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
        weights = torch.softmax(torch.clamp(self.att(x), -10.0, 10.0), dim=-1)
        probs = torch.sigmoid(self.cla(x))
        return (weights * probs).sum(dim=-1), probs


def clip_head(x: torch.Tensor, fc1: nn.Linear, fc_audioset: nn.Linear) -> dict[str, torch.Tensor]:
    """Clip-level head H: (mean over frequency) -> max + mean over time -> fc1 -> ReLU -> classifier.

    Args:
        x: ``(B, C, T, F)`` for 2-D trunks or ``(B, C, L)`` for 1-D trunks.
    """
    if x.dim() == 4:
        x = x.mean(dim=3)
    pooled = x.amax(dim=2) + x.mean(dim=2)
    embedding = F.relu(fc1(pooled))
    return {"clipwise_output": torch.sigmoid(fc_audioset(embedding)), "embedding": embedding}


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
    frames_per_segment: int = 32  # STFT frames per step of the final time axis

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
        """Forward pass on an input whose length the architecture accepts."""
        raise NotImplementedError

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
