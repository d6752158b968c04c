"""The PANNs networks, one module per family, and a builder keyed by architecture name.

>>> model = build_model("Cnn10")
>>> model.arch, model.sample_rate, model.embedding_size, model.min_samples
('Cnn10', 32000, 512, 4800)
>>> "Cnn14_DecisionLevelMax" in list_architectures()
True
"""

from __future__ import annotations

from typing import Callable

from ..errors import UnknownModelError
from .blocks import PannsModel
from .cnn import CNN_CONFIGS, Cnn
from .mobilenet import MOBILENET_ARCHS, MobileNet
from .resnet import RESNET_CONFIGS, ResNet
from .waveform import WAVEFORM_ARCHS
from .waveform import build as build_waveform_model
from .wavegram import WavegramCnn14

__all__ = ["PannsModel", "build_model", "list_architectures", "ARCHITECTURES"]



def _builder(build: Callable[[str, int], PannsModel], name: str) -> Callable[[int], PannsModel]:
    """``classes -> build(name, classes)``."""
    return lambda classes: build(name, classes)


ARCHITECTURES: dict[str, Callable[[int], PannsModel]] = {}
for _name in CNN_CONFIGS:
    ARCHITECTURES[_name] = _builder(Cnn, _name)
for _name in ("Wavegram_Cnn14", "Wavegram_Logmel_Cnn14"):
    ARCHITECTURES[_name] = _builder(WavegramCnn14, _name)
for _name in RESNET_CONFIGS:
    ARCHITECTURES[_name] = _builder(ResNet, _name)
for _name in MOBILENET_ARCHS:
    ARCHITECTURES[_name] = _builder(MobileNet, _name)
for _name in WAVEFORM_ARCHS:
    ARCHITECTURES[_name] = _builder(build_waveform_model, _name)


def list_architectures() -> list[str]:
    """Names of every architecture this package can build."""
    return list(ARCHITECTURES)


def build_model(arch: str, classes: int = 527) -> PannsModel:
    """Build an (untrained) network by architecture name, in eval mode.

    Names are matched without regard to case, as registry names are (``"cnn6"`` builds
    Cnn6); the model's :attr:`~PannsModel.arch` is the canonical spelling.

    Raises:
        UnknownModelError: ``arch`` is not a supported architecture.

    >>> build_model("cnn6").arch
    'Cnn6'
    """
    builder = ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    if builder is None and isinstance(arch, str):
        builder = next((b for name, b in ARCHITECTURES.items() if name.lower() == arch.lower()), None)
    if builder is None:
        raise UnknownModelError(
            f"Supported architectures are ({', '.join(ARCHITECTURES)}). Found: {arch!r}"
        )
    return builder(classes).eval()
