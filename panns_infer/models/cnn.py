"""The plain CNN family: Cnn6, Cnn10, Cnn14 (and its 16 kHz, embedding-size and
decision-level variants), all configurations of one network (ARCHITECTURES.md 3.1-3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..frontend import FRONTEND_16K, FRONTEND_32K, FrontEndConfig
from .blocks import AttBlock, ConvBlock, ConvBlock5x5, PannsModel, module_reach, time_steps
from .reach import Reach

__all__ = ["CnnConfig", "Cnn", "CNN_CONFIGS"]


@dataclass(frozen=True)
class CnnConfig:
    """One member of the CNN family.

    Attributes:
        channels: output channels of conv_block1..N.
        last_pool: pool of the last block ((2, 2) for Cnn6/10, (1, 1) for Cnn14).
        kernel: 3 (two 3x3 convolutions per block) or 5 (one 5x5 convolution, Cnn6).
        embedding: width of fc1, the embedding size.
        head: "clip" (clip-level), "max" or "att" (decision-level).
        frontend: the STFT/mel configuration it was trained with.
        min_samples: shortest input the reference accepts at ``frontend``'s rate.
    """

    channels: tuple[int, ...]
    last_pool: tuple[int, int]
    kernel: int
    embedding: int
    head: str
    frontend: FrontEndConfig
    min_samples: int


_CNN14 = (64, 128, 256, 512, 1024, 2048)
_CNN10 = (64, 128, 256, 512)

CNN_CONFIGS: dict[str, CnnConfig] = {
    "Cnn6": CnnConfig(_CNN10, (2, 2), 5, 512, "clip", FRONTEND_32K, 4800),
    "Cnn10": CnnConfig(_CNN10, (2, 2), 3, 512, "clip", FRONTEND_32K, 4800),
    "Cnn14": CnnConfig(_CNN14, (1, 1), 3, 2048, "clip", FRONTEND_32K, 9920),
    "Cnn14_16k": CnnConfig(_CNN14, (1, 1), 3, 2048, "clip", FRONTEND_16K, 4960),
    "Cnn14_emb512": CnnConfig(_CNN14, (1, 1), 3, 512, "clip", FRONTEND_32K, 9920),
    "Cnn14_emb128": CnnConfig(_CNN14, (1, 1), 3, 128, "clip", FRONTEND_32K, 9920),
    "Cnn14_emb32": CnnConfig(_CNN14, (1, 1), 3, 32, "clip", FRONTEND_32K, 9920),
    "Cnn14_DecisionLevelMax": CnnConfig(_CNN14, (1, 1), 3, 2048, "max", FRONTEND_32K, 9920),
    "Cnn14_DecisionLevelAtt": CnnConfig(_CNN14, (1, 1), 3, 2048, "att", FRONTEND_32K, 9920),
}

class Cnn(PannsModel):
    """Log-mel front end, a stack of conv blocks, and a clip-level or decision-level head."""

    def __init__(self, arch: str, classes: int = 527) -> None:
        cfg = CNN_CONFIGS[arch]
        super().__init__(cfg.frontend, classes)
        self.arch = arch
        self.config = cfg
        self.min_samples = cfg.min_samples
        self.has_framewise = cfg.head != "clip"
        self.embedding_size = None if self.has_framewise else cfg.embedding
        self.add_logmel_stem()
        block = ConvBlock5x5 if cfg.kernel == 5 else ConvBlock
        cin = 1
        for i, cout in enumerate(cfg.channels, start=1):
            pool = cfg.last_pool if i == len(cfg.channels) else (2, 2)
            setattr(self, f"conv_block{i}", block(cin, cout, pool))
            cin = cout
        self.fc1 = nn.Linear(cin, cfg.embedding)
        if cfg.head == "att":
            self.att_block = AttBlock(cfg.embedding, classes)
        else:
            self.fc_audioset = nn.Linear(cfg.embedding, classes)

    def trunk(self, waveform: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Waveform -> last block's map ``(B, C, T', F')`` and the STFT frame count T."""
        x = self.logmel(waveform)
        frames = x.shape[2]
        for i in range(1, len(self.config.channels) + 1):
            x = getattr(self, f"conv_block{i}")(x)
        return x, frames

    @property
    def head(self) -> str:  # type: ignore[override]  # the base's class attribute, here read from the config
        """The global pooling: "clip", "max" or "att" (see :class:`~.blocks.GlobalPool`)."""
        return self.config.head

    def step_outputs(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        x, _ = self.trunk(waveform)
        if self.config.head == "clip":
            return {"features": time_steps(x)}
        x = x.mean(dim=3)  # (B, C, T')
        x = F.max_pool1d(x, 3, stride=1, padding=1) + F.avg_pool1d(x, 3, stride=1, padding=1)
        h = F.relu(self.fc1(x.transpose(1, 2)))  # (B, T', E)
        if self.config.head == "max":
            return {"segmentwise_output": torch.sigmoid(self.fc_audioset(h))}
        logits, probs = self.att_block.steps(h.transpose(1, 2))
        return {"segmentwise_output": probs.transpose(1, 2), "attention": logits.transpose(1, 2)}

    def time_reach(self) -> Reach:
        r = self.stft_reach()
        for i in range(1, len(self.config.channels) + 1):
            r = module_reach(getattr(self, f"conv_block{i}"), r)
        if self.config.head != "clip":
            r = r.layer(3, padding=1)  # the 3-step max + average smoothing before the frame head
        return r
