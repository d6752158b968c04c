"""MobileNetV1 and MobileNetV2 on log-mel spectrograms (ARCHITECTURES.md 2.7, 2.8, 3.5, 3.6;
minimum lengths in 4.2).

Both networks are one ``features`` sequence followed by the clip head. As in the reference,
downsampling is never a strided convolution: an average pool sits between a unit's 3x3
convolution and its batch norm. The checkpoints address every layer by its index in these
sequences (``features.3.4.weight``, ``features.2.conv.3.weight``), so the units are built
as :class:`torch.nn.Sequential` with the pools (no keys) at their own indices; a pool of
size 1 is an :class:`torch.nn.Identity`.

The PANNs MobileNetV2 downsamples in the 96-channel stage and not in the 160-channel one,
unlike the ImageNet network.

Length behaviour: five 2x2 pools leave ``floor(T / 32)`` time steps (``T = N // 320 + 1``),
so inputs need at least 9920 samples; the base class pads shorter ones.

>>> MobileNet("MobileNetV2").features[11].conv[4]
AvgPool2d(kernel_size=2, stride=2, padding=0)
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnknownModelError
from ..frontend import FRONTEND_32K
from .blocks import PannsModel, conv2d, module_reach
from .reach import Reach

__all__ = ["MobileNet", "MOBILENET_ARCHS", "conv_bn", "conv_dw", "InvertedResidual"]

MOBILENET_ARCHS = ("MobileNetV1", "MobileNetV2")


def _pool(stride: int) -> nn.Module:
    return nn.AvgPool2d(stride) if stride != 1 else nn.Identity()


def conv_bn(cin: int, cout: int, stride: int, *, relu6: bool = False) -> nn.Sequential:
    """[0] conv 3x3, [1] avgpool(stride), [2] BN, [3] ReLU (ReLU6 in MobileNetV2)."""
    act = nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True)
    return nn.Sequential(conv2d(cin, cout, 3), _pool(stride), nn.BatchNorm2d(cout), act)


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNetV1 depthwise-separable unit.

    [0] depthwise 3x3, [1] avgpool(stride), [2] BN, [3] ReLU, [4] conv 1x1, [5] BN, [6] ReLU.
    """
    return nn.Sequential(
        conv2d(cin, cin, 3, groups=cin), _pool(stride), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 unit: (expand 1x1) -> depthwise 3x3 -> avgpool -> project 1x1, linear output.

    Args:
        cin: input channels.
        cout: output channels.
        stride: average-pool size after the depthwise convolution (1 or 2).
        expand: expansion ratio t; the hidden width is ``round(cin * t)``.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = round(cin * expand)
        self.use_residual = stride == 1 and cin == cout
        depthwise = [conv2d(hidden, hidden, 3, groups=hidden), _pool(stride),
                     nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        project = [conv2d(hidden, cout, 1), nn.BatchNorm2d(cout)]
        expansion = [] if expand == 1 else [conv2d(cin, hidden, 1), nn.BatchNorm2d(hidden),
                                            nn.ReLU6(inplace=True)]
        self.conv = nn.Sequential(*expansion, *depthwise, *project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out

    def time_reach(self, r: Reach) -> Reach:
        out = module_reach(self.conv, r)
        return out.union(r) if self.use_residual else out


# (output channels, stride) of MobileNetV1 features.1..13; features.0 is conv_bn(1 -> 32, 2).
_V1_UNITS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# (expansion t, output channels, repeats, stride of the first unit) of MobileNetV2
# features.1..17; features.0 is conv_bn(1 -> 32, 2) and features.18 a 1x1 conv to 1280.
_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
              (6, 96, 3, 2), (6, 160, 3, 1), (6, 320, 1, 1))


def _v1_features() -> nn.Sequential:
    units = [conv_bn(1, 32, 2)]
    cin = 32
    for cout, stride in _V1_UNITS:
        units.append(conv_dw(cin, cout, stride))
        cin = cout
    return nn.Sequential(*units)


def _v2_features() -> nn.Sequential:
    units: list[nn.Module] = [conv_bn(1, 32, 2, relu6=True)]
    cin = 32
    for expand, cout, repeats, stride in _V2_STAGES:
        for i in range(repeats):
            units.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    units.append(nn.Sequential(conv2d(cin, 1280, 1), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)))
    return nn.Sequential(*units)


class MobileNet(PannsModel):
    """Log-mel -> ``features`` (MobileNetV1 or V2) -> clip head with a 1024-wide embedding.

    Args:
        arch: "MobileNetV1" or "MobileNetV2".
        classes: number of output classes (527 for AudioSet).

    Raises:
        UnknownModelError: ``arch`` is not a MobileNet architecture.
    """

    min_samples = 9920  # the final time axis, floor(T / 32), must not be empty
    embedding_size = 1024

    def __init__(self, arch: str, classes: int = 527) -> None:
        if arch not in MOBILENET_ARCHS:
            raise UnknownModelError(
                f"Supported MobileNet architectures are ({', '.join(MOBILENET_ARCHS)}). "
                f"Found: {arch!r}")
        super().__init__(FRONTEND_32K, classes)
        self.arch = arch
        self.add_logmel_stem()
        self.features = _v1_features() if arch == "MobileNetV1" else _v2_features()
        width = 1024 if arch == "MobileNetV1" else 1280
        self.fc1 = nn.Linear(width, self.embedding_size)
        self.fc_audioset = nn.Linear(self.embedding_size, classes)

    def trunk_map(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.features(self.logmel(waveform))

    def time_reach(self) -> Reach:
        return module_reach(self.features, self.stft_reach())
