"""Wavegram_Cnn14 and Wavegram_Logmel_Cnn14 (ARCHITECTURES.md 2.10, 3.10, 3.11).

A learned "wavegram" branch turns the waveform into a (time, 32-bin) map at the same step
as the log-mel path after its first block. Wavegram_Logmel_Cnn14 concatenates both maps.

The length trap: the reference concatenation fails whenever the two branches' time axes
differ, which at 32 kHz happens iff ``N // 320`` is odd and ``N % 320 <= 315`` (about half
of all lengths). :meth:`WavegramCnn14.target_length` pads such inputs with at most 316 zero
samples (under 10 ms) to the next length where the axes agree; lengths that work in the
reference are left untouched, so their outputs equal the reference's.

>>> m = WavegramCnn14("Wavegram_Logmel_Cnn14")
>>> m.target_length(320_000), m.target_length(32_320), m.target_length(100)
(320000, 32636, 10236)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..frontend import FRONTEND_32K
from .blocks import ConvBlock, PannsModel, module_reach
from .reach import Reach

__all__ = ["ConvPreWavBlock", "WavegramCnn14", "wavegram_logmel_valid_length"]

_WAVEGRAM_MIN_SAMPLES = 10_236  # ceil(N / 5) must reach 2048


def wavegram_logmel_valid_length(num_samples: int, hop: int = 320) -> int:
    """Smallest length >= ``num_samples`` whose wavegram and log-mel time axes agree.

    The log-mel path has ``T = N // hop + 1`` frames, the wavegram ``L = ceil(N / 5) // 64``
    steps; after halving both they must be equal. With ``N = hop*q + r`` that fails iff q is
    odd and r <= 315, and ``hop*q + 316`` is then the next length that works.
    """
    q, r = divmod(num_samples, hop)
    if q % 2 == 1 and r <= hop - 5:
        return hop * q + hop - 4
    return num_samples


class ConvPreWavBlock(nn.Module):
    """Conv1d k3 -> BN -> ReLU -> Conv1d k3 dilation 2 -> BN -> ReLU -> maxpool 4."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=2, dilation=2, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.bn2 = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool1d(x, 4)

    def time_reach(self, r: Reach) -> Reach:
        return r.conv(3).conv(3, dilation=2).pool(4)


class WavegramCnn14(PannsModel):
    """Wavegram branch (+ optionally the log-mel branch) followed by Cnn14 blocks 2-6."""

    embedding_size = 2048
    min_samples = _WAVEGRAM_MIN_SAMPLES

    def __init__(self, arch: str, classes: int = 527) -> None:
        if arch not in ("Wavegram_Cnn14", "Wavegram_Logmel_Cnn14"):
            raise ValueError(f"not a wavegram architecture: {arch!r}")
        super().__init__(FRONTEND_32K, classes)
        self.arch = arch
        self.with_logmel = arch == "Wavegram_Logmel_Cnn14"
        self.pre_conv0 = nn.Conv1d(1, 64, 11, stride=5, padding=5, bias=False)
        self.pre_bn0 = nn.BatchNorm1d(64)
        self.pre_block1 = ConvPreWavBlock(64, 64)
        self.pre_block2 = ConvPreWavBlock(64, 128)
        self.pre_block3 = ConvPreWavBlock(128, 128)
        self.pre_block4 = ConvBlock(4, 64, pool=(2, 1))
        if self.with_logmel:
            self.add_logmel_stem()
        else:  # constructed but unused by the reference; declared so that strict loading works
            self.bn0 = nn.BatchNorm2d(64)
        self.conv_block1 = ConvBlock(1, 64)
        self.conv_block2 = ConvBlock(128 if self.with_logmel else 64, 128)
        self.conv_block3 = ConvBlock(128, 256)
        self.conv_block4 = ConvBlock(256, 512)
        self.conv_block5 = ConvBlock(512, 1024)
        self.conv_block6 = ConvBlock(1024, 2048, pool=(1, 1))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes)

    def target_length(self, num_samples: int) -> int:
        n = super().target_length(num_samples)
        if self.with_logmel:
            n = wavegram_logmel_valid_length(n, self.frontend_config.hop_size)
        return n

    def wavegram(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, N)`` -> ``(B, 64, L // 2, 32)``."""
        x = F.relu(self.pre_bn0(self.pre_conv0(waveform[:, None, :])))
        x = self.pre_block3(self.pre_block2(self.pre_block1(x)))  # (B, 128, L)
        batch, _, steps = x.shape
        x = x.reshape(batch, 4, 32, steps).transpose(2, 3)  # (B, 4, L, 32)
        return self.pre_block4(x)

    def trunk_map(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.wavegram(waveform)
        if self.with_logmel:
            x = torch.cat([self.conv_block1(self.logmel(waveform)), x], dim=1)
        for block in self._blocks():
            x = block(x)
        return x

    def _blocks(self) -> tuple[nn.Module, ...]:
        return (self.conv_block2, self.conv_block3, self.conv_block4, self.conv_block5, self.conv_block6)

    def time_reach(self) -> Reach:
        r = module_reach(self.pre_conv0, Reach())
        block: nn.Module
        for block in (self.pre_block1, self.pre_block2, self.pre_block3, self.pre_block4):
            r = module_reach(block, r)  # the reshape to (4, L, 32) keeps the time axis
        if self.with_logmel:
            r = r.union(module_reach(self.conv_block1, self.stft_reach()))
        for block in self._blocks():
            r = module_reach(block, r)
        return r
