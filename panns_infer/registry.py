"""The released PANNs checkpoints, as data.

One frozen :class:`Checkpoint` per file published by the PANNs authors (Zenodo record
3987831, weights under CC BY 4.0). Entries with no published checksum are *unpinned*: a
download of one is still checked against the server's Content-Length and then loaded with
strict key and shape matching as the expected architecture, but its bytes cannot be proven.

>>> get_checkpoint("Cnn14").filename
'Cnn14_mAP=0.431.pth'
>>> get_checkpoint("Cnn14_mAP=0.431.pth").name
'Cnn14'
>>> [c.name for c in list_checkpoints("Cnn14_Decision*")]
['Cnn14_DecisionLevelMax', 'Cnn14_DecisionLevelAtt']
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from .errors import UnknownModelError
from .frontend import FRONTEND_16K, FRONTEND_32K, FrontEndConfig

__all__ = ["Checkpoint", "CHECKPOINTS", "DEFAULT_CHECKPOINT", "get_checkpoint", "list_checkpoints",
           "LABELS_URL", "ZENODO_RECORD"]

ZENODO_RECORD = "3987831"
_BASE_URL = f"https://zenodo.org/record/{ZENODO_RECORD}/files/"
LABELS_URL = "https://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv"
LICENCE = "CC-BY-4.0"
DEFAULT_CHECKPOINT = "Cnn14"


@dataclass(frozen=True)
class Checkpoint:
    """One released checkpoint.

    Attributes:
        name: registry name, e.g. ``"Cnn14"``.
        filename: the published file name, e.g. ``"Cnn14_mAP=0.431.pth"``.
        arch: the architecture (a name known to :mod:`panns_infer.models`).
        mAP: AudioSet evaluation mAP reported by the authors.
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"`` as published, or ``None`` (unpinned).
        size: file size in bytes where published, else ``None``.
        frontend: the STFT/mel configuration (waveform-only models use 32 kHz too).
        licence: licence of the weights.
    """

    name: str
    filename: str
    arch: str
    mAP: float
    checksum: Optional[str] = None
    size: Optional[int] = None
    frontend: FrontEndConfig = FRONTEND_32K
    licence: str = LICENCE

    @property
    def url(self) -> str:
        """Download URL on Zenodo (``=`` in the file name is percent-encoded)."""
        return _BASE_URL + quote(self.filename) + "?download=1"

    @property
    def sample_rate(self) -> int:
        """Sample rate the network expects, in Hz."""
        return self.frontend.sample_rate

    @property
    def pinned(self) -> bool:
        """True when a published checksum proves the downloaded bytes."""
        return self.checksum is not None


def _ckpt(name: str, mAP: float, checksum: Optional[str] = None, **kw) -> Checkpoint:
    filename = kw.pop("filename", f"{name}_mAP={mAP:.3f}.pth")
    return Checkpoint(name=name, filename=filename, arch=kw.pop("arch", name), mAP=mAP,
                      checksum=checksum, **kw)


_TABLE = (
    _ckpt("Cnn14", 0.431, "md5:541141fa2ee191a88f24a3219fff024e"),
    _ckpt("Cnn14_16k", 0.438, "md5:362fc5ff18f1d6ad2f6d464b45893f2c", frontend=FRONTEND_16K),
    _ckpt("Cnn14_DecisionLevelMax", 0.385,
          "sha256:dd3b4043a87d4ec13df8082c0fcfee3fb5084151808e47e060987a95eabdd142", size=327_428_481),
    _ckpt("Cnn14_DecisionLevelAtt", 0.425, "md5:c8281ca2b9967244b91d557aa941e8ca"),
    _ckpt("Wavegram_Logmel_Cnn14", 0.439, "md5:17fa9ab65af3c0eb5ffbc5f65552c4e1"),
    _ckpt("Wavegram_Cnn14", 0.389, "md5:1e3506ab640371e0b5a417b15fd66d21"),
    _ckpt("Cnn6", 0.343, "md5:e25e26b84585b14c7754c91e48efc9be"),
    _ckpt("Cnn10", 0.380, "md5:bfb1f1f9968938fa8ef4012b8471f5f6"),
    _ckpt("Cnn14_emb512", 0.420),
    _ckpt("Cnn14_emb128", 0.412),
    _ckpt("Cnn14_emb32", 0.364),
    _ckpt("ResNet22", 0.430, "md5:cf36d413096793c4e15dc752a3abd599"),
    _ckpt("ResNet38", 0.434, "md5:bf12f36aaabac4e0855e22d3c3239c1b"),
    _ckpt("ResNet54", 0.429, "md5:4f1f1406d37a29e2379916885e18c5f3"),
    _ckpt("MobileNetV1", 0.389, "md5:a419303e1c88aa1b9d2ac3811563d371"),
    _ckpt("MobileNetV2", 0.383),
    _ckpt("LeeNet11", 0.266),
    _ckpt("LeeNet24", 0.336),
    _ckpt("DaiNet19", 0.295),
    _ckpt("Res1dNet31", 0.365),
    _ckpt("Res1dNet51", 0.355),
)

CHECKPOINTS: dict[str, Checkpoint] = {c.name: c for c in _TABLE}
_BY_FILENAME = {c.filename.lower(): c for c in _TABLE}


def get_checkpoint(name: str) -> Checkpoint:
    """Look a checkpoint up by registry name or published file name (case-insensitive).

    Raises:
        UnknownModelError: the name is in neither column; the message lists the names.
    """
    if not isinstance(name, str):
        raise UnknownModelError(f"checkpoint names are strings, got {type(name).__name__}")
    if name in CHECKPOINTS:
        return CHECKPOINTS[name]
    for entry in _TABLE:
        if entry.name.lower() == name.lower():
            return entry
    found = _BY_FILENAME.get(name.lower())
    if found is not None:
        return found
    raise UnknownModelError(
        f"Supported checkpoints are ({', '.join(CHECKPOINTS)}). Found: {name!r}. "
        "Pass one of these names, a path to a .pth file, or an http(s) URL."
    )


def list_checkpoints(pattern: str = "*") -> list[Checkpoint]:
    """Registry entries whose name matches the fnmatch ``pattern``, in table order."""
    return [c for c in _TABLE if fnmatch.fnmatchcase(c.name, pattern)]
