"""Audio input: decoding files, checking arrays, downmixing and resampling.

Everything becomes a 1-D float32 numpy array at the model's sample rate:

* files are decoded with soundfile (libsndfile: WAV, FLAC, OGG, MP3, ...); several channels
  are averaged to mono;
* arrays and tensors: float arrays are taken as they are (float64 is cast to float32);
  integer PCM is scaled to [-1, 1) (int8/int16/int32 by their full range, uint8 around 128);
* other sample rates are converted with resampy's ``kaiser_best`` filter, the resampler the
  AudioSet training data went through.

Samples that are NaN or infinite, and empty clips, are refused with
:class:`~panns_infer.errors.InvalidAudioError` rather than turned into meaningless output.

>>> import numpy as np
>>> to_float32(np.array([0, 16384, -32768], dtype=np.int16))
array([ 0. ,  0.5, -1. ], dtype=float32)
>>> resample(np.zeros(44100, dtype=np.float32), 44100, 32000).shape
(32000,)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import soundfile
import torch

from .errors import AudioDecodeError, InvalidAudioError

__all__ = ["Clip", "to_float32", "resample", "read_audio", "as_clips"]

PathLike = Union[str, os.PathLike]
AudioInput = Union[PathLike, np.ndarray, torch.Tensor]

_INT_SCALE = {np.dtype(np.int8): 2.0 ** 7, np.dtype(np.int16): 2.0 ** 15, np.dtype(np.int32): 2.0 ** 31}
_MAX_RATE = 1_000_000


@dataclass(frozen=True)
class Clip:
    """One mono clip at the model's rate, with where it came from.

    Attributes:
        samples: 1-D float32 waveform.
        source: the file path, or ``None`` for arrays.
        original_rate: the rate of the input before resampling.
    """

    samples: np.ndarray
    source: Optional[str]
    original_rate: int


def to_float32(x: np.ndarray) -> np.ndarray:
    """Convert samples to float32, scaling integer PCM to [-1, 1)."""
    dtype = x.dtype
    if dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if dtype in _INT_SCALE:
        return (x.astype(np.float32) / np.float32(_INT_SCALE[dtype])).astype(np.float32)
    if dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    raise InvalidAudioError(
        f"audio samples of dtype {dtype} are not supported; use float32/float64, or int8, int16, "
        "int32 or uint8 PCM"
    )


def _check_rate(rate: Any) -> int:
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, np.integer, float, np.floating)):
        raise InvalidAudioError(f"sample_rate must be a positive integer, got {rate!r}")
    if not np.isfinite(rate) or rate != int(rate) or not 0 < rate <= _MAX_RATE:
        raise InvalidAudioError(f"sample_rate must be a whole number of Hz in 1..{_MAX_RATE}, got {rate!r}")
    return int(rate)


def resample(x: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D float32 waveform with resampy's ``kaiser_best`` filter."""
    if rate == target_rate:
        return x
    import resampy  # imported lazily: it compiles with numba on first use

    out = resampy.resample(x, rate, target_rate, filter="kaiser_best", axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _finish(samples: np.ndarray, rate: int, target_rate: int, source: Optional[str], what: str) -> Clip:
    if samples.size == 0:
        raise InvalidAudioError(f"{what} has no samples")
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise InvalidAudioError(f"{what} contains {bad} NaN or infinite sample(s); clean the audio first")
    out = resample(np.ascontiguousarray(samples, dtype=np.float32), rate, target_rate)
    if out.size == 0:  # e.g. a single sample at a much higher rate
        out = np.zeros(1, dtype=np.float32)
    return Clip(out, source, rate)


def read_audio(path: PathLike, target_rate: int) -> Clip:
    """Decode an audio file to a mono float32 clip at ``target_rate``.

    Raises:
        AudioDecodeError: the path is missing, a directory, or not decodable audio.
        InvalidAudioError: the file decodes to no samples or to non-finite values.
    """
    name = os.fspath(path)
    p = Path(name)
    if not p.exists():
        raise AudioDecodeError(f"audio file {name!r} does not exist")
    if p.is_dir():
        raise AudioDecodeError(f"{name!r} is a directory, not an audio file")
    try:
        data, rate = soundfile.read(name, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        raise AudioDecodeError(
            f"cannot decode {name!r} as audio ({str(exc).strip() or type(exc).__name__}); "
            "supported formats are those libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3, ...)"
        ) from None
    if rate <= 0:
        raise AudioDecodeError(f"{name!r} declares an invalid sample rate {rate}")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return _finish(mono, int(rate), target_rate, name, f"audio file {name!r}")


def _array_clips(x: Any, rate: int, target_rate: int, label: str) -> list[Clip]:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype.kind in "OUSV" or x.dtype == np.bool_ or x.dtype.kind == "c":
        raise InvalidAudioError(f"{label}: expected numeric audio samples, got an array of dtype {x.dtype}")
    x = to_float32(x)
    if x.ndim == 1:
        return [_finish(x, rate, target_rate, None, label)]
    if x.ndim == 2:
        return [_finish(row, rate, target_rate, None, f"{label}, row {i}") for i, row in enumerate(x)]
    raise InvalidAudioError(
        f"{label}: expected a 1-D clip or a 2-D (batch, samples) array, got shape {tuple(x.shape)}"
    )


def as_clips(x: Any, *, sample_rate: Optional[int], target_rate: int) -> tuple[list[Clip], bool]:
    """Turn any accepted input into clips at ``target_rate``.

    Args:
        x: a path, a 1-D array/tensor (one clip), a 2-D array/tensor (a batch), or a list
            mixing paths and 1-D arrays/tensors of any lengths.
        sample_rate: rate of arrays and tensors (files carry their own); ``None`` means
            ``target_rate``.
        target_rate: the model's rate.

    Returns:
        The clips, and whether the input was a single clip (so one result is returned).

    Raises:
        InvalidAudioError: unusable input type, shape, dtype, rate or content.
        AudioDecodeError: a file that cannot be read.
    """
    rate = target_rate if sample_rate is None else _check_rate(sample_rate)
    if isinstance(x, (str, os.PathLike)):
        return [read_audio(x, target_rate)], True
    if isinstance(x, (np.ndarray, torch.Tensor)):
        clips = _array_clips(x, rate, target_rate, "audio array")
        return clips, x.ndim == 1
    if isinstance(x, (list, tuple)):
        clips: list[Clip] = []
        for i, item in enumerate(x):
            if isinstance(item, (str, os.PathLike)):
                clips.append(read_audio(item, target_rate))
            elif isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 1:
                clips.extend(_array_clips(item, rate, target_rate, f"input {i}"))
            elif isinstance(item, (np.ndarray, torch.Tensor)):
                raise InvalidAudioError(f"input {i}: list items must be 1-D clips or paths, "
                                        f"got shape {tuple(item.shape)}")
            else:
                raise InvalidAudioError(f"input {i}: expected a path, numpy array or tensor, "
                                        f"got {type(item).__name__}")
        return clips, False
    raise InvalidAudioError(
        f"expected a path, a numpy array, a torch tensor, or a list of them; got {type(x).__name__}"
    )
