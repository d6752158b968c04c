"""Raw-waveform 1-D networks: LeeNet11, LeeNet24, DaiNet19, Res1dNet31 and Res1dNet51
(ARCHITECTURES.md 2.9, 3.7-3.9; length behaviour in 4.1 and 4.2).

These networks read the 32 kHz waveform directly: there is no STFT, so they own no
``spectrogram_extractor``/``logmel_extractor`` modules. Their ``frontend_config`` is still
:data:`~panns_infer.frontend.FRONTEND_32K`, which fixes the sample rate they expect. Each
ends with the clip head applied to a 1-D map (max + mean over the sample axis).

* LeeNet11/24 (one class, :class:`LeeNet`): nine blocks of stride-3 or pooled-by-3
  convolutions, one convolution per block in LeeNet11 and two in LeeNet24.
* DaiNet19: an 80-tap stride-4 convolution, then four residual blocks of four convolutions.
* Res1dNet31/51 (one class, :class:`Res1dNet`): an 11-tap stride-5 convolution, then a
  seven-stage 1-D ResNet whose blocks max-pool the main path and average-pool the shortcut.

Length behaviour (measured on the reference): LeeNets accept any length >= 1 (every stage
maps L to ceil(L / 3)); DaiNet19 needs 332 samples and Res1dNets 20 476 (0.64 s); the base
class zero-pads shorter inputs. Above those minimums every length works.

>>> [build(a).embedding_size for a in ("LeeNet11", "LeeNet24", "DaiNet19", "Res1dNet31")]
[512, 1024, 512, 2048]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UnknownModelError
from ..frontend import FRONTEND_32K
from .blocks import PannsModel, module_reach
from .reach import Reach

__all__ = [
    "LeeNetConvBlock",
    "LeeNetConfig",
    "LeeNet",
    "LEENET_CONFIGS",
    "DaiNetResBlock",
    "DaiNet19",
    "BasicBlockWav1d",
    "ResNetWav1d",
    "Res1dNet",
    "RES1DNET_LAYERS",
    "WAVEFORM_ARCHS",
    "build",
]


def conv1d(cin: int, cout: int, kernel: int, *, stride: int = 1, dilation: int = 1) -> nn.Conv1d:
    """A bias-free 1-D convolution with 'same' padding (for stride 1)."""
    return nn.Conv1d(cin, cout, kernel, stride=stride, padding=dilation * (kernel // 2),
                     dilation=dilation, bias=False)


# --- LeeNet ------------------------------------------------------------------------------


class LeeNetConvBlock(nn.Module):
    """One or two k3 convolutions (each followed by BN and ReLU), then an optional max pool.

    LeeNet11 uses one convolution per block (``conv1``, ``bn1``), LeeNet24 two (adding
    ``conv2``, ``bn2``). The pool has kernel = stride = ``pool`` and padding ``pool // 2``,
    so with pool 3 a length L becomes ceil(L / 3) and never reaches 0.

    Args:
        cin: input channels.
        cout: output channels.
        stride: stride of the first convolution.
        pool: max-pool size; 1 for none.
        convs: 1 or 2 convolutions.
    """

    def __init__(self, cin: int, cout: int, *, stride: int = 1, pool: int = 1,
                 convs: int = 1) -> None:
        super().__init__()
        self.pool = pool
        self.conv1 = conv1d(cin, cout, 3, stride=stride)
        self.bn1 = nn.BatchNorm1d(cout)
        if convs == 2:
            self.conv2 = conv1d(cout, cout, 3)
            self.bn2 = nn.BatchNorm1d(cout)
        self.convs = convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.convs == 2:
            x = F.relu(self.bn2(self.conv2(x)))
        if self.pool != 1:
            x = F.max_pool1d(x, self.pool, padding=self.pool // 2)
        return x

    def time_reach(self, r: Reach) -> Reach:
        r = module_reach(self.conv1, r)
        if self.convs == 2:
            r = module_reach(self.conv2, r)
        return r.pool(self.pool, padding=self.pool // 2)


@dataclass(frozen=True)
class LeeNetConfig:
    """One LeeNet.

    Attributes:
        channels: output channels of conv_block1..9.
        pools: max-pool size after each block (1 for none).
        convs: convolutions per block (1 for LeeNet11, 2 for LeeNet24).
        embedding: width of fc1.
    """

    channels: tuple[int, ...]
    pools: tuple[int, ...]
    convs: int
    embedding: int


LEENET_CONFIGS: dict[str, LeeNetConfig] = {
    "LeeNet11": LeeNetConfig((64, 64, 64, 128, 128, 128, 128, 128, 256),
                             (1, 3, 3, 3, 3, 3, 3, 3, 3), 1, 512),
    "LeeNet24": LeeNetConfig((64, 96, 128, 128, 256, 256, 512, 512, 1024),
                             (1, 3, 3, 3, 3, 3, 3, 3, 1), 2, 1024),
}


class LeeNet(PannsModel):
    """Sample-level CNN: a stride-3 block then eight max-pooled blocks, clip head.

    Args:
        arch: "LeeNet11" or "LeeNet24".
        classes: number of output classes (527 for AudioSet).
    """

    min_samples = 1  # every stage maps a length L >= 1 to ceil(L / 3) >= 1

    def __init__(self, arch: str, classes: int = 527) -> None:
        cfg = _lookup(LEENET_CONFIGS, arch)
        super().__init__(FRONTEND_32K, classes)
        self.arch = arch
        self.config = cfg
        self.embedding_size = cfg.embedding
        cin = 1
        for i, (cout, pool) in enumerate(zip(cfg.channels, cfg.pools), start=1):
            stride = 3 if i == 1 else 1
            setattr(self, f"conv_block{i}",
                    LeeNetConvBlock(cin, cout, stride=stride, pool=pool, convs=cfg.convs))
            cin = cout
        self.fc1 = nn.Linear(cin, cfg.embedding)
        self.fc_audioset = nn.Linear(cfg.embedding, classes)

    def trunk_map(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform[:, None, :]
        for i in range(1, len(self.config.channels) + 1):
            x = getattr(self, f"conv_block{i}")(x)
        return x

    def time_reach(self) -> Reach:
        r = Reach()
        for i in range(1, len(self.config.channels) + 1):
            r = module_reach(getattr(self, f"conv_block{i}"), r)
        return r


# --- DaiNet19 ----------------------------------------------------------------------------


class DaiNetResBlock(nn.Module):
    """Four k3 convolutions with BN (ReLU after the first three) plus a shortcut, then ReLU.

    The shortcut is the input when ``cin == cout`` and ``bn_downsample(downsample(x))``
    (a 1x1 projection) otherwise; both modules exist either way, as in the checkpoints.
    The block does not change the length.

    Args:
        cin: input channels.
        cout: output channels.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv1d(cin, cout, 3)
        self.conv2 = conv1d(cout, cout, 3)
        self.conv3 = conv1d(cout, cout, 3)
        self.conv4 = conv1d(cout, cout, 3)
        self.downsample = conv1d(cin, cout, 1)
        self.bn1 = nn.BatchNorm1d(cout)
        self.bn2 = nn.BatchNorm1d(cout)
        self.bn3 = nn.BatchNorm1d(cout)
        self.bn4 = nn.BatchNorm1d(cout)
        self.bn_downsample = nn.BatchNorm1d(cout)
        self.identity_shortcut = cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.relu(self.bn3(self.conv3(out)))
        out = self.bn4(self.conv4(out))
        shortcut = x if self.identity_shortcut else self.bn_downsample(self.downsample(x))
        return F.relu(out + shortcut)

    def time_reach(self, r: Reach) -> Reach:
        return r.conv(3).conv(3).conv(3).conv(3)  # the shortcut (identity or 1x1) reaches less


class DaiNet19(PannsModel):
    """conv0 (k80, stride 4) -> BN -> four residual blocks, max-pooled by 4 between -> head.

    Args:
        classes: number of output classes (527 for AudioSet).
    """

    arch = "DaiNet19"
    min_samples = 332  # floor((N - 80) / 4) + 1 must reach 64 for the third max pool
    embedding_size = 512
    channels = (64, 128, 256, 512)
    conv_block1: DaiNetResBlock  # created by name in __init__
    conv_block2: DaiNetResBlock
    conv_block3: DaiNetResBlock
    conv_block4: DaiNetResBlock

    def __init__(self, classes: int = 527) -> None:
        super().__init__(FRONTEND_32K, classes)
        self.conv0 = nn.Conv1d(1, 64, 80, stride=4, bias=False)
        self.bn0 = nn.BatchNorm1d(64)
        cin = 64
        for i, cout in enumerate(self.channels, start=1):
            setattr(self, f"conv_block{i}", DaiNetResBlock(cin, cout))
            cin = cout
        self.fc1 = nn.Linear(cin, self.embedding_size)
        self.fc_audioset = nn.Linear(self.embedding_size, classes)

    def trunk_map(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.bn0(self.conv0(waveform[:, None, :]))  # no ReLU here, as in the reference
        x = F.max_pool1d(self.conv_block1(x), 4)
        x = F.max_pool1d(self.conv_block2(x), 4)
        x = F.max_pool1d(self.conv_block3(x), 4)
        return self.conv_block4(x)

    def time_reach(self) -> Reach:
        r = module_reach(self.conv0, Reach())
        for i in range(1, 4):
            r = module_reach(getattr(self, f"conv_block{i}"), r).pool(4)
        return module_reach(self.conv_block4, r)


# --- Res1dNet31 / Res1dNet51 -------------------------------------------------------------


class BasicBlockWav1d(nn.Module):
    """k3 conv -> BN -> ReLU -> k3 conv (dilation 2) -> BN, plus a shortcut, then ReLU.

    With ``stride`` > 1 the main path is first max-pooled by ``stride``; the shortcut
    (``downsample``) average-pools the un-pooled input instead.

    Args:
        cin: input channels.
        planes: output channels.
        stride: pool size of the main path (1 or 4).
        downsample: shortcut projection, or None for identity.
    """

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = conv1d(cin, planes, 3)
        self.bn1 = nn.BatchNorm1d(planes)
        self.conv2 = conv1d(planes, planes, 3, dilation=2)
        self.bn2 = nn.BatchNorm1d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool1d(x, self.stride) if self.stride != 1 else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)

    def time_reach(self, r: Reach) -> Reach:
        main = module_reach(self.conv2, module_reach(self.conv1, r.pool(self.stride)))
        return main.union(r if self.downsample is None else module_reach(self.downsample, r))


class ResNetWav1d(nn.Module):
    """Seven stages ``layer1..layer7`` of :class:`BasicBlockWav1d` (strides 1, then 4).

    Block 0 of a stage with stride 4 gets ``downsample`` = [avgpool 4 (no keys), conv 1x1,
    BN], which yields the checkpoints' ``layerL.0.downsample.1`` / ``.2`` keys.

    Args:
        layers: blocks per stage.
        cin: channels of the input map.
    """

    planes = (64, 128, 256, 512, 1024, 1024, 2048)
    strides = (1, 4, 4, 4, 4, 4, 4)

    def __init__(self, layers: tuple[int, ...], cin: int = 64) -> None:
        super().__init__()
        for stage, (planes, stride, count) in enumerate(zip(self.planes, self.strides, layers), 1):
            downsample = None
            if stride != 1 or cin != planes:
                downsample = nn.Sequential(nn.AvgPool1d(stride), conv1d(cin, planes, 1),
                                           nn.BatchNorm1d(planes))
            blocks = [BasicBlockWav1d(cin, planes, stride, downsample)]
            blocks += [BasicBlockWav1d(planes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            cin = planes
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in range(1, len(self.planes) + 1):
            x = getattr(self, f"layer{stage}")(x)
        return x


RES1DNET_LAYERS: dict[str, tuple[int, ...]] = {
    "Res1dNet31": (2, 2, 2, 2, 2, 2, 2),
    "Res1dNet51": (2, 3, 4, 6, 4, 3, 2),
}


class Res1dNet(PannsModel):
    """conv0 (k11, stride 5) -> BN -> 1-D ResNet -> clip head.

    Args:
        arch: "Res1dNet31" or "Res1dNet51".
        classes: number of output classes (527 for AudioSet).
    """

    min_samples = 20_476  # ceil(N / 5) must reach 4 ** 6 for layer7's pool
    embedding_size = 2048

    def __init__(self, arch: str, classes: int = 527) -> None:
        layers = _lookup(RES1DNET_LAYERS, arch)
        super().__init__(FRONTEND_32K, classes)
        self.arch = arch
        self.conv0 = conv1d(1, 64, 11, stride=5)
        self.bn0 = nn.BatchNorm1d(64)
        self.resnet = ResNetWav1d(layers, cin=64)
        self.fc1 = nn.Linear(self.resnet.out_channels, self.embedding_size)
        self.fc_audioset = nn.Linear(self.embedding_size, classes)

    def trunk_map(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.bn0(self.conv0(waveform[:, None, :]))  # no ReLU here, as in the reference
        return self.resnet(x)

    def time_reach(self) -> Reach:
        r = module_reach(self.conv0, Reach())
        for stage in range(1, len(self.resnet.planes) + 1):
            r = module_reach(getattr(self.resnet, f"layer{stage}"), r)
        return r


# --- registry helpers --------------------------------------------------------------------

WAVEFORM_ARCHS = (*LEENET_CONFIGS, "DaiNet19", *RES1DNET_LAYERS)


def _lookup(table: dict, arch: str):
    try:
        return table[arch]
    except KeyError:
        raise UnknownModelError(
            f"Supported architectures are ({', '.join(table)}). Found: {arch!r}") from None


def build(arch: str, classes: int = 527) -> PannsModel:
    """Build the raw-waveform network ``arch`` (one of :data:`WAVEFORM_ARCHS`).

    Raises:
        UnknownModelError: ``arch`` is not a raw-waveform architecture of this module.

    >>> build("Res1dNet51").min_samples
    20476
    """
    if arch == "DaiNet19":
        return DaiNet19(classes)
    if arch in LEENET_CONFIGS:
        return LeeNet(arch, classes)
    if arch in RES1DNET_LAYERS:
        return Res1dNet(arch, classes)
    raise UnknownModelError(
        f"Supported raw-waveform architectures are ({', '.join(WAVEFORM_ARCHS)}). "
        f"Found: {arch!r}")
