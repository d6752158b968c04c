"""Safe checkpoint loading and architecture detection.

Checkpoints are read with ``torch.load(weights_only=True)``: the unpickler only builds
tensors, plain containers, and the few numpy objects that the released files carry (the
training sampler's arrays, pickled under numpy 1.x names). A file that needs anything else
is refused with :class:`~panns_infer.errors.UnsafeCheckpointError` before any of its code
can run.

Accepted layouts: ``{"model": state_dict, ...}`` (the released files, with ``iteration`` and
``sampler`` beside it), ``{"model": state_dict}``, a bare state dict; keys may carry a
``module.`` prefix (saved from ``DataParallel``). Half-precision weights are converted to
float32 (the networks run in float32; a warning is logged).

>>> detect_architecture({"pre_conv0.weight": None, "logmel_extractor.melW": None})
'Wavegram_Logmel_Cnn14'
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union, cast

import numpy as np
import torch

from .errors import (
    AmbiguousArchitectureWarning,
    ArchitectureError,
    CheckpointError,
    CheckpointNotFoundError,
    DependencyError,
    UnsafeCheckpointError,
)
from .models import PannsModel, build_model, list_architectures

__all__ = ["read_state_dict", "detect_architecture", "load_model", "verify_checkpoint_file", "require_torch"]

log = logging.getLogger("panns_infer")

PathLike = Union[str, os.PathLike]

_FRONTEND_KEYS = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
                  "logmel_extractor.melW")


def _numpy_globals() -> list:
    """The numpy objects a released checkpoint's pickle refers to, and nothing else."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]  # the same module, numpy 1.x's path
    allowed: list = [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype]
    # Files written under numpy 1.x name the functions by their old module path.
    allowed += [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                (multiarray.scalar, "numpy.core.multiarray.scalar")]
    # numpy >= 1.25 pickles a dtype through its class (numpy.dtypes.Int64DType, ...); older numpy
    # calls numpy.dtype, and torch still checks the class of what that builds (numpy.dtype[int64]).
    for code in "?bhilqBHILQefdgFDG":
        allowed.append(type(np.dtype(code)))
    return allowed


MIN_TORCH = (2, 6)  # the first release whose weights-only loader takes safe_globals with (object, name) pairs


def _torch_version(text: str) -> tuple[int, int]:
    """``"2.5.1+cpu"`` -> ``(2, 5)``.

    >>> _torch_version("2.13.0+cpu"), _torch_version("2.6.0a0+git1234"), _torch_version("2.5rc1")
    ((2, 13), (2, 6), (2, 5))
    """
    major, minor = text.split("+")[0].split(".")[:2]
    digits = "".join(itertools.takewhile(str.isdigit, minor))  # "5rc1" is minor 5, not 51
    return int(major), int(digits or 0)


def require_torch(version: Optional[str] = None) -> None:
    """Refuse a torch too old to load checkpoints safely, naming the version needed.

    Args:
        version: a torch version string; ``None`` checks the installed torch.

    Raises:
        DependencyError: ``version`` is older than :data:`MIN_TORCH`.

    >>> require_torch("2.6.0")
    >>> require_torch("2.5.1")
    Traceback (most recent call last):
    ...
    panns_infer.errors.DependencyError: panns_infer needs torch >= 2.6 to load checkpoints safely, but torch 2.5.1 is installed: upgrade it with pip install 'torch>=2.6'. The checkpoint file itself was not checked and may be fine.
    """  # noqa: E501 - the example shows the whole error message, as users see it
    version = torch.__version__ if version is None else version
    if _torch_version(version) < MIN_TORCH or not hasattr(torch.serialization, "safe_globals"):
        need = ".".join(map(str, MIN_TORCH))
        raise DependencyError(
            f"panns_infer needs torch >= {need} to load checkpoints safely, but torch {version} is "
            f"installed: upgrade it with pip install 'torch>={need}'. The checkpoint file itself was "
            "not checked and may be fine.")


def _torch_load(path: Path) -> object:
    # Not memory-mapped: load_model assigns the loaded tensors as the parameters, and mapped
    # ones would tie a running model to the file (rewriting it in place would crash it with
    # SIGBUS). Building the model on the meta device still avoids a second copy.
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _unusable(value: torch.Tensor) -> str:
    """Why a tensor cannot be loaded as a weight, or ``""``."""
    if value.is_nested:
        return "nested"
    if value.layout != torch.strided:
        return str(value.layout).replace("torch.", "")
    if value.is_meta:
        return "meta, without values"
    if value.is_complex() or value.dtype == torch.bool:
        return str(value.dtype).replace("torch.", "")
    return ""


def _beyond_storage(value: torch.Tensor) -> bool:
    """Whether a (dense) tensor's shape and strides reach past the bytes of its storage."""
    if value.numel() == 0:
        return False
    last = value.storage_offset() + sum((n - 1) * step for n, step in zip(value.shape, value.stride()))
    return (last + 1) * value.element_size() > value.untyped_storage().nbytes()


def _refuse_compressed_zip(path: Path, source: str) -> None:
    """torch.save stores its zip entries uncompressed; torch.load would inflate a compressed one
    whole in memory (a 1 MB file can hold 1 GB of zeros), so such a file is refused unread."""
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy (pre-1.6) format, or not a zip: torch.load reports it
        with zipfile.ZipFile(path) as archive:
            packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError):
        return
    if packed:
        raise CheckpointError(f"{source} has compressed entries ({', '.join(packed[:3])}), which torch.save "
                              "never writes, so it was not saved by torch.save and is not inflated; re-save "
                              "the weights with torch.save(state_dict, path)")


def _unwrap(obj: object, source: str, *, file_bytes: Optional[int] = None) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict inside ``obj`` in float32, and whether it held reduced-precision floats.

    ``file_bytes``, the size of the file ``obj`` was read from, bounds the bytes its tensors'
    storages may claim (the file stores them uncompressed).
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{source} holds {type(obj).__name__}, not a state dict: expected {{'model': state_dict}} "
            "or a bare state dict of tensors"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: entries that are not named tensors: {bad[:5]!r}")
    odd = [f"{k} ({_unusable(v)})" for k, v in obj.items() if _unusable(v)]
    if odd:
        raise CheckpointError(f"{source}: tensors that cannot be weights: {', '.join(odd[:5])}; a checkpoint "
                              "holds dense real-valued tensors, as model.state_dict() gives them")
    short = [k for k, v in obj.items() if _beyond_storage(v)]
    if not short and file_bytes is not None:
        storages = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in obj.values()}
        if sum(storages.values()) > file_bytes:
            short = sorted(obj, key=lambda k: -obj[k].untyped_storage().nbytes())[:1]
    if short:  # torch 2.6 returns such tensors from a hostile file; reading them reads past the data
        raise CheckpointError(f"{source}: tensors that declare more values than the file holds: "
                              f"{', '.join(short[:5])}; it is truncated or corrupt: download it again")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    reduced = sorted({str(v.dtype) for v in state.values() if v.is_floating_point() and v.dtype != torch.float32})
    if reduced:
        log.warning("%s holds %s weights; converting them to float32 (outputs will differ from the "
                    "float32 original by the rounding already in the file)", source, "/".join(reduced))
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    # One sum per tensor screens for NaN and Inf (either makes the sum non-finite) at about a
    # tenth of the cost of torch.isfinite: ~30 ms for Cnn14's 80 M weights.
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v.sum())]
    if broken:
        raise CheckpointError(f"{source} holds NaN or infinite values in {len(broken)} tensor(s), e.g. "
                              f"{', '.join(broken[:3])}; the file is corrupt: download it again, or re-export "
                              "it from a model whose weights are finite")
    return state, bool(reduced)


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and return its state dict (any accepted layout), in float32.

    Raises:
        CheckpointNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the pickle needs objects beyond tensors and numpy arrays.
        CheckpointError: the file is truncated, corrupt, or holds no state dict.
    """
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    source = repr(str(path))
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointNotFoundError(f"checkpoint {source} {what}; pass a .pth file, a registry name "
                                      "(see panns_infer.list_models()) or an http(s) URL")
    _refuse_compressed_zip(path, source)
    require_torch()  # outside the try below: an old torch is not a corrupt file
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as exc:
        _refuse_other_formats(path, source)
        detail = _unpickling_detail(str(exc))
        if "GLOBAL" in detail:
            raise UnsafeCheckpointError(
                f"{source} was refused: unpickling it needs objects other than tensors and numpy "
                f"arrays, which could run code; nothing from it was executed ({detail}). "
                "Only load checkpoints from sources you trust, saved as plain state dicts."
            ) from None
        raise CheckpointError(f"{source} is not a readable PyTorch checkpoint ({detail}); "
                              "it may be truncated or corrupt: download it again") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError,
            TypeError, AttributeError, MemoryError) as exc:
        _refuse_other_formats(path, source)
        raise CheckpointError(f"{source} is not a readable PyTorch checkpoint ({_first_line(exc)}); "
                              "it may be truncated or corrupt: download it again") from None
    return _unwrap(obj, source, file_bytes=path.stat().st_size)


# Files that are often passed where a checkpoint belongs, by their first bytes.
_SIGNATURES = (
    (b"RIFF", "a RIFF file (WAV audio?)"), (b"fLaC", "FLAC audio"), (b"OggS", "Ogg audio"),
    (b"ID3", "MP3 audio"), (b"\xff\xfb", "MP3 audio"), (b"\xff\xf3", "MP3 audio"), (b"\xff\xf2", "MP3 audio"),
    (b"FORM", "AIFF audio"), (b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file (Keras?)"),
    (b"\x1f\x8b", "a gzip archive"), (b"\x89PNG", "a PNG image"), (b"%PDF", "a PDF document"),
)
_EXTENSIONS = {".onnx": "an ONNX model", ".safetensors": "a safetensors file", ".tflite": "a TensorFlow Lite model",
               ".h5": "an HDF5 file (Keras?)", ".npz": "a NumPy archive", ".json": "a JSON file",
               ".csv": "a CSV file", ".txt": "a text file", ".yaml": "a YAML file", ".html": "an HTML page"}


def _other_format(path: Path) -> Optional[str]:
    """What a file that is not a PyTorch checkpoint is, when it can be told, else ``None``."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if head[8:10] == b'{"':  # an 8-byte header length, then the JSON header
        return "a safetensors file"
    known = _EXTENSIONS.get(path.suffix.lower())
    if known:
        return known
    if head.lstrip()[:1] in (b"{", b"[", b"<"):  # JSON, or markup: <!DOCTYPE, <html>, <?xml
        return "a text file (JSON, HTML or XML), e.g. an error page saved instead of the file"
    return None


def _refuse_other_formats(path: Path, source: str) -> None:
    what = _other_format(path)
    if what is not None:
        raise CheckpointError(f"{source} is {what}, not a PyTorch checkpoint: pass a .pth file saved by "
                              "torch.save (a state dict), a registry name (see panns_infer.list_models()) "
                              "or an http(s) URL")


def _unpickling_detail(text: str) -> str:
    """The informative line of torch's weights-only error (which global, which opcode)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line:
            return line
        if "Unsupported" in line:  # torch 2.6 prefixes it with its advice on one line
            return line[line.index("Unsupported"):]
    return lines[0][:200] if lines else "unpickling failed"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def detect_architecture(state: Mapping[str, object], *, filename: Optional[str] = None) -> str:
    """Name the architecture of a state dict from its keys and shapes (ARCHITECTURES.md 5).

    Cnn14 and Cnn14_DecisionLevelMax have identical keys and shapes; here the file name
    decides (a name containing ``DecisionLevelMax`` means the latter), else Cnn14 is
    assumed. :func:`load_model` goes further: it also recognises the released files by
    checksum, and warns when nothing tells the two apart.

    Raises:
        ArchitectureError: no supported architecture has these keys.
    """

    def has(key: str) -> bool:
        return key in state

    def has_prefix(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in state)

    def shape(key: str) -> Optional[tuple]:
        value = state.get(key)
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    if has("pre_conv0.weight"):
        return "Wavegram_Logmel_Cnn14" if has("logmel_extractor.melW") else "Wavegram_Cnn14"
    if has("att_block.att.weight"):
        return "Cnn14_DecisionLevelAtt"
    if has_prefix("resnet.layer5."):
        return "Res1dNet51" if has_prefix("resnet.layer2.2.") else "Res1dNet31"
    if has("resnet.layer1.0.conv3.weight"):
        return "ResNet54"
    if shape("resnet.layer1.0.conv1.weight") == (64, 64, 3, 3):
        return "ResNet38" if has_prefix("resnet.layer2.2.") else "ResNet22"
    if has("features.1.conv.0.weight"):
        return "MobileNetV2"
    if has("features.13.4.weight"):
        return "MobileNetV1"
    if shape("conv0.weight") == (64, 1, 80):
        return "DaiNet19"
    if has_prefix("conv_block9."):
        return "LeeNet24" if has("conv_block9.conv2.weight") else "LeeNet11"
    if shape("conv_block1.conv1.weight") == (64, 1, 5, 5):
        return "Cnn6"
    if has("conv_block4.conv2.weight") and not has_prefix("conv_block5."):
        return "Cnn10"
    if has_prefix("conv_block6.") and has("fc1.weight"):
        width = shape("fc1.weight")
        if width is not None and width[1:] == (2048,):
            if width[0] in (512, 128, 32):
                return f"Cnn14_emb{width[0]}"
            if width[0] == 2048:
                if shape("logmel_extractor.melW") == (257, 64):
                    return "Cnn14_16k"
                if filename and "decisionlevelmax" in Path(filename).name.lower():
                    return "Cnn14_DecisionLevelMax"
                return "Cnn14"
    sample = ", ".join(list(state)[:6])
    raise ArchitectureError(
        f"the state dict ({len(state)} keys, starting {sample}) matches no supported architecture. "
        f"Supported: {', '.join(list_architectures())}. If it is one of them, pass arch=."
    )


def _strict_load(model: PannsModel, state: Mapping[str, torch.Tensor], source: str,
                 detected: Optional[str]) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    dtypes = [f"{k} {state[k].dtype} (expected {v.dtype})" for k, v in expected.items()
              if k in state and state[k].is_floating_point() != v.is_floating_point()]
    if missing or unexpected or wrong or dtypes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        if wrong:
            parts.append(f"{len(wrong)} wrong shape(s), e.g. {wrong[:3]}")
        if dtypes:
            parts.append(f"{len(dtypes)} wrong dtype(s), e.g. {dtypes[:3]}")
        hint = f" The file looks like {detected}." if detected and detected != model.arch else ""
        raise ArchitectureError(f"{source} does not match architecture {model.arch}: "
                                f"{'; '.join(parts)}.{hint}")
    # assign: the parameters become the loaded tensors instead of copies of them.
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True, assign=True)


def load_model(checkpoint: Union[PathLike, Mapping[str, torch.Tensor]], *, arch: Optional[str] = None,
               filename: Optional[str] = None) -> PannsModel:
    """Load a checkpoint file (or an in-memory state dict) into its network, in eval mode.

    The architecture is ``arch`` when given, else detected from the keys and shapes. Cnn14
    and Cnn14_DecisionLevelMax cannot be told apart that way; for them, in this order: a
    file that is one of the released checkpoints (published checksum; hashed only when the
    name does not tell, or the size is the published one) is that checkpoint's
    architecture, whatever its name; else a name containing ``DecisionLevelMax`` or
    ``Cnn14`` (any case) chooses; else Cnn14 is loaded with an
    :class:`~panns_infer.errors.AmbiguousArchitectureWarning` (also logged) that says to
    pass ``arch=``.

    Args:
        checkpoint: path to a ``.pth`` file, or a state dict.
        arch: architecture name; detected from the state dict when ``None``.
        filename: a file name to help detection (Cnn14 vs Cnn14_DecisionLevelMax) when
            ``checkpoint`` is a state dict or a cache path whose name is not telling.

    Raises:
        CheckpointError: (or a subclass) the file is unsafe, unreadable, or does not match.

    >>> state = build_model("Cnn6").state_dict()
    >>> load_model(state).arch
    'Cnn6'
    """
    if isinstance(checkpoint, Mapping):
        (state, reduced), source = _unwrap(checkpoint, "state dict"), "the state dict"
    else:
        (state, reduced), source = _read(Path(checkpoint)), repr(str(checkpoint))
        filename = filename or Path(checkpoint).name
    detected: Optional[str]
    try:
        detected = detect_architecture(state, filename=filename)
    except ArchitectureError:
        if arch is None:
            raise
        detected = None
    if arch is None and detected in TWINS:
        detected = _settle_twins(None if isinstance(checkpoint, Mapping) else Path(checkpoint), filename, source)
    with torch.device("meta"):  # no memory for initial weights: the loaded tensors are assigned
        model = build_model(cast(str, arch or detected))  # detection raised unless one is set
    if hasattr(model, "logmel_extractor"):
        from .frontend import build_frontend_state, check_frontend_tensors

        check_frontend_tensors(state, model.frontend_config, source=source, reduced_precision=reduced)
        if reduced:  # fixed functions of the configuration: use exact float32 values, not rounded ones
            exact = build_frontend_state(model.frontend_config)
            state.update({k: exact[k] for k in _FRONTEND_KEYS if k in state})
    _strict_load(model, state, source, detected)
    return model.eval()


TWINS = ("Cnn14", "Cnn14_DecisionLevelMax")
"""Architectures whose state dicts have identical keys and shapes (ARCHITECTURES.md 5)."""


def _named_twin(filename: Optional[str]) -> Optional[str]:
    """The twin a file name names (the longest twin name it contains, any case), or ``None``."""
    name = Path(filename).name.lower() if filename else ""
    return max((t for t in TWINS if t.lower() in name), key=len, default=None)


def _released_twin(path: Path, *, named: Optional[str]) -> Optional[str]:
    """The twin architecture of the released file ``path`` is (by its published checksum), or ``None``.

    Hashing costs about a second for Cnn14's 300 MB, so a file whose name already tells is
    hashed only when its size is the published size of a released twin.
    """
    from . import registry

    try:
        size = path.stat().st_size
    except OSError:
        return None
    entries = [c for c in registry.CHECKPOINTS.values() if c.arch in TWINS and c.checksum
               and (c.size == size if c.size is not None else named is None)]
    if not entries:
        return None
    # entries have a checksum (filtered above)
    hashes = {c.checksum.split(":", 1)[0]: None for c in entries}  # type: ignore[union-attr]
    digests = {algorithm: hashlib.new(algorithm) for algorithm in hashes}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for digest in digests.values():
                digest.update(chunk)
    for c in entries:
        algorithm, expected = c.checksum.split(":", 1)  # type: ignore[union-attr]  # filtered above
        if digests[algorithm].hexdigest() == expected.lower():
            return c.arch
    return None


def _settle_twins(path: Optional[Path], filename: Optional[str], source: str) -> str:
    """Cnn14 or Cnn14_DecisionLevelMax for a state dict that fits both (see :func:`load_model`)."""
    named = _named_twin(filename)
    released = _released_twin(path, named=named) if path is not None else None
    if released is not None:
        if named is not None and named != released:
            log.warning("%s is named like %s but is the released %s checkpoint (by its checksum); "
                        "loading it as %s", source, named, released, released)
        return released
    if named is not None:
        return named
    message = (f"{source} fits both Cnn14 and Cnn14_DecisionLevelMax (identical keys and shapes), and "
               "nothing names one: not arch=, not a registry name, not the file's name or checksum. "
               "Loading it as Cnn14 (clip-level tags; no framewise output). Pass arch='Cnn14' or "
               "arch='Cnn14_DecisionLevelMax' (--arch on the command line) to choose and silence this "
               "warning, or keep the architecture's name in the file name.")
    log.warning("%s", message)
    warnings.warn(message, AmbiguousArchitectureWarning, stacklevel=_user_stacklevel())
    return "Cnn14"


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by this function's caller point at the first
    line outside this package (the user's), however many of the package's frames lie between:
    ``load_model`` called directly or through ``AudioTagger`` alike."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(1)  # the function that warns: stacklevel 1
    level = 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back
        level += 1
    return level


def verify_checkpoint_file(path: PathLike, *, arch: str) -> None:
    """Check that ``path`` is a safe, complete checkpoint of ``arch`` (used for unpinned downloads).

    Raises:
        CheckpointError: (or a subclass) otherwise.
    """
    load_model(path, arch=arch)
