"""The 2-D ResNet family: ResNet22, ResNet38 and ResNet54, configurations of one network
(ARCHITECTURES.md 2.6 and 3.4; minimum lengths in 4.2).

The trunk is a log-mel front end, ``conv_block1`` (a :class:`~.blocks.ConvBlock` with 2x2
average pooling), an ImageNet-style ResNet named ``resnet`` (four stages, basic or
bottleneck blocks), a 2x2 average pool, ``conv_block_after1`` and the clip head. Unlike
torchvision, the blocks never use strided convolutions: a stride-2 block average-pools its
input first, and its shortcut (``downsample``) average-pools the un-pooled input before the
1x1 projection. The ``downsample`` sequences keep the pool at index 0 so that the
checkpoints' keys (``resnet.layer2.0.downsample.1.weight``) line up.

Length behaviour: the final time axis is ``floor(T / 32)`` with ``T = N // 320 + 1`` STFT
frames, so inputs need at least 9920 samples (0.31 s at 32 kHz); the base class pads shorter
ones. Every longer length works.

>>> model = ResNet("ResNet22")
>>> model.embedding_size, model.min_samples
(2048, 9920)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UnknownModelError
from ..frontend import FRONTEND_32K
from .blocks import ConvBlock, PannsModel, conv2d, module_reach
from .reach import Reach

__all__ = ["BasicBlock", "Bottleneck", "ResNetTrunk", "ResNetConfig", "ResNet", "RESNET_CONFIGS"]


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Shortcut projection: [avgpool(2x2),] conv 1x1, BN. The pool owns no keys."""
    layers: list[nn.Module] = [nn.AvgPool2d(2)] if stride == 2 else []
    layers += [conv2d(cin, cout, 1), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (expansion 1).

    Args:
        cin: input channels.
        planes: output channels.
        stride: 1, or 2 to average-pool the main path's input by 2x2 first.
        downsample: shortcut projection applied to the un-pooled input, or None for identity.
    """

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = conv2d(cin, planes, 3)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2d(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(x, 2) if self.stride == 2 else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)

    def time_reach(self, r: Reach) -> Reach:
        main = r.pool(self.stride).conv(3).conv(3)
        return main.union(r if self.downsample is None else module_reach(self.downsample, r))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 convolutions with a residual connection (expansion 4).

    Args:
        cin: input channels.
        planes: inner width; the block outputs ``4 * planes`` channels.
        stride: 1, or 2 to average-pool the main path's input by 2x2 first.
        downsample: shortcut projection applied to the un-pooled input, or None for identity.
    """

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = conv2d(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2d(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv2d(planes, planes * self.expansion, 1)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(x, 2) if self.stride == 2 else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)

    def time_reach(self, r: Reach) -> Reach:
        main = r.pool(self.stride).conv(1).conv(3).conv(1)
        return main.union(r if self.downsample is None else module_reach(self.downsample, r))


_Block = Union[type[BasicBlock], type[Bottleneck]]


class ResNetTrunk(nn.Module):
    """Four stages ``layer1..layer4`` (planes 64, 128, 256, 512; strides 1, 2, 2, 2).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in each of the four stages.
        cin: channels of the input map.
    """

    planes = (64, 128, 256, 512)
    strides = (1, 2, 2, 2)
    layer1: nn.Sequential  # the stages, created by name in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, block: _Block, layers: tuple[int, int, int, int], cin: int = 64) -> None:
        super().__init__()
        for stage, (planes, stride, count) in enumerate(zip(self.planes, self.strides, layers), 1):
            cout = planes * block.expansion
            downsample = _downsample(cin, cout, stride) if stride != 1 or cin != cout else None
            blocks = [block(cin, planes, stride, downsample)]
            blocks += [block(cout, planes) for _ in range(count - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            cin = cout
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@dataclass(frozen=True)
class ResNetConfig:
    """One member of the ResNet family.

    Attributes:
        block: "basic" (two 3x3 convolutions) or "bottleneck" (1x1, 3x3, 1x1, expansion 4).
        layers: blocks per stage.
    """

    block: str
    layers: tuple[int, int, int, int]


RESNET_CONFIGS: dict[str, ResNetConfig] = {
    "ResNet22": ResNetConfig("basic", (2, 2, 2, 2)),
    "ResNet38": ResNetConfig("basic", (3, 4, 6, 3)),
    "ResNet54": ResNetConfig("bottleneck", (3, 4, 6, 3)),
}

_BLOCKS: dict[str, _Block] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(PannsModel):
    """Log-mel -> conv_block1 -> ResNet -> avgpool 2x2 -> conv_block_after1 -> clip head.

    Args:
        arch: "ResNet22", "ResNet38" or "ResNet54".
        classes: number of output classes (527 for AudioSet).

    Raises:
        UnknownModelError: ``arch`` is not a ResNet architecture.
    """

    min_samples = 9920  # the final time axis, floor(T / 32), must not be empty
    embedding_size = 2048

    def __init__(self, arch: str, classes: int = 527) -> None:
        if arch not in RESNET_CONFIGS:
            raise UnknownModelError(
                f"Supported ResNet architectures are ({', '.join(RESNET_CONFIGS)}). "
                f"Found: {arch!r}")
        super().__init__(FRONTEND_32K, classes)
        self.arch = arch
        self.config = RESNET_CONFIGS[arch]
        self.add_logmel_stem()
        self.conv_block1 = ConvBlock(1, 64, pool=(2, 2))
        self.resnet = ResNetTrunk(_BLOCKS[self.config.block], self.config.layers, cin=64)
        self.conv_block_after1 = ConvBlock(self.resnet.out_channels, 2048, pool=(1, 1))
        self.fc1 = nn.Linear(2048, self.embedding_size)
        self.fc_audioset = nn.Linear(self.embedding_size, classes)

    def trunk_map(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.conv_block1(self.logmel(waveform))
        x = F.avg_pool2d(self.resnet(x), 2)
        return self.conv_block_after1(x)

    def time_reach(self) -> Reach:
        r = module_reach(self.conv_block1, self.stft_reach())
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            r = module_reach(getattr(self.resnet, stage), r)
        return module_reach(self.conv_block_after1, r.pool(2))
