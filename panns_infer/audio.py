"""Audio input: decoding files, checking arrays, downmixing and resampling.

Everything becomes a 1-D float32 numpy array at the model's sample rate:

* files and binary file objects are decoded block by block (:mod:`panns_infer.decoders`:
  libsndfile for WAV, FLAC, OGG, MP3, ...; PyAV for MP4/M4A, WebM/MKV, AAC, WMA and video
  soundtracks), so memory follows the audio the file really holds, never the length its
  header claims; several channels are averaged to mono;
* arrays and tensors: float arrays are taken as they are (float64 is cast to float32);
  integer PCM is scaled to [-1, 1) (int8/int16/int32 by their full range, uint8 around 128);
* other sample rates (1 kHz to 1 MHz) are converted with resampy's ``kaiser_best`` filter,
  the resampler the AudioSet training data went through (:mod:`panns_infer.resampling`).

Input that would give meaningless output or exhaust memory is refused with
:class:`~panns_infer.errors.InvalidAudioError`: NaN or infinite samples, samples larger than
2**31 in magnitude (float32 arithmetic in the networks overflows to NaN near 1e17), empty
clips, rates outside 1 kHz..1 MHz, and 2-D arrays shaped like ``(samples, channels)``.

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
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

from .decoders import Decoder, Source, is_file_object, open_decoder, source_size
from .errors import AudioDecodeError, InvalidAudioError
from .resampling import resample

__all__ = ["Clip", "to_float32", "resample", "read_audio", "as_clips", "probe_file", "decode_blocks"]

PathLike = Union[str, os.PathLike]
AudioInput = Union[Source, np.ndarray, torch.Tensor]

_INT_SCALE = {np.dtype(np.int8): 2.0 ** 7, np.dtype(np.int16): 2.0 ** 15, np.dtype(np.int32): 2.0 ** 31}
_MIN_RATE = 1_000  # bounds upsampling to 32x: a lying header cannot turn kilobytes into gigabytes
_MAX_RATE = 1_000_000
_MAX_ABS = 2.0 ** 31  # unscaled int32 PCM still passes; ~1e17 would overflow the networks to NaN
_BLOCK_SAMPLES = 1 << 20  # samples (all channels) decoded per read
_MAX_SAMPLES_PER_BYTE = 16384  # header frame counts beyond this are not believed (probe_file)
_CHANNEL_LIKE = 64  # a 2-D array with more rows than this and at most this many columns


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
    """Convert samples to float32, scaling integer PCM to [-1, 1).

    Raises:
        InvalidAudioError: a dtype that is neither float nor int8/int16/int32/uint8.

    >>> to_float32(np.array([0, 255], dtype=np.uint8))
    array([-1.       ,  0.9921875], dtype=float32)
    """
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


def _check_rate(rate: Any, what: str = "sample_rate") -> int:
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, np.integer, float, np.floating)):
        raise InvalidAudioError(f"{what} must be a positive integer, got {rate!r}")
    if not np.isfinite(rate) or rate != int(rate) or not _MIN_RATE <= rate <= _MAX_RATE:
        raise InvalidAudioError(f"{what} must be a whole number of Hz in {_MIN_RATE}..{_MAX_RATE}, got {rate!r}; "
                                "resample the audio into that range first")
    return int(rate)


def _check_values(x: np.ndarray, what: str) -> None:
    """Refuse empty, non-finite and absurdly large samples (before any float32 cast)."""
    if x.size == 0:
        raise InvalidAudioError(f"{what} has no samples; pass a clip with at least one sample")
    if x.dtype.kind != "f":
        return
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(x.size - np.count_nonzero(finite))
        raise InvalidAudioError(f"{what} contains {bad} NaN or infinite sample(s); replace them "
                                "(e.g. numpy.nan_to_num) or fix the source of the audio")
    peak = float(max(x.max(), -x.min()))
    if peak > _MAX_ABS:
        raise InvalidAudioError(f"{what} has samples as large as {peak:.3g}; float audio is expected in "
                                "[-1, 1]: divide it by its full scale (pass integer PCM with its integer dtype)")


def _finish(samples: np.ndarray, rate: int, target_rate: int, source: Optional[str]) -> Clip:
    out = resample(np.ascontiguousarray(samples, dtype=np.float32), rate, target_rate)
    return Clip(out, source, rate)


def _source_name(source: Source) -> str:
    if is_file_object(source):
        label = getattr(source, "name", None)
        return label if isinstance(label, str) else f"<{type(source).__name__}>"
    name = os.fspath(source)  # type: ignore[arg-type]  # not a file object, so a path
    return os.fsdecode(name) if isinstance(name, bytes) else name


def _open(source: Source, stream: Optional[int] = None) -> tuple[Decoder, str]:
    """Open an existing audio file or file object with the decoder that reads its content,
    or raise a typed error naming it."""
    name = _source_name(source)
    if is_file_object(source):
        return open_decoder(source, name, stream=stream), name
    if not name:
        raise AudioDecodeError("an empty string was given as an audio file path; pass the path of a file")
    p = Path(name)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except (OSError, ValueError) as exc:  # e.g. a name too long for the file system
        raise AudioDecodeError(f"cannot access audio file {name!r} ({exc})") from None
    if not exists:
        raise AudioDecodeError(f"audio file {name!r} does not exist; check the path")
    if is_dir:
        raise AudioDecodeError(f"{name!r} is a directory, not an audio file; pass the files inside it")
    return open_decoder(name, name, stream=stream), name


def probe_file(path: Source, *, stream: Optional[int] = None) -> tuple[int, int]:
    """``(frames, sample_rate)`` of an audio file, from its header, checked.

    The rate must be in 1 kHz..1 MHz. The frame count is capped at what the file's size
    can hold (16384 samples per byte, far beyond any real codec: silence in Vorbis, the
    best case, is ~450), so a header claiming years of audio in a few kilobytes cannot
    make a caller plan for them; the real length is known only once decoded. For
    containers read through PyAV it comes from the container's duration (0 when the
    container gives none).

    Args:
        path: a path, or a binary file object (left where it was).
        stream: the audio stream (0, the first, by default).

    Raises:
        AudioDecodeError: the path is missing, a directory, or not decodable audio.
        InvalidAudioError: a sample rate outside 1 kHz..1 MHz.

    >>> probe_file("missing.wav")
    Traceback (most recent call last):
    ...
    panns_infer.errors.AudioDecodeError: audio file 'missing.wav' does not exist; check the path
    """
    # is_file_object() checked path (it cannot be a TypeGuard on Python 3.9)
    here = path.tell() if is_file_object(path) and _seekable(path) else None  # type: ignore[union-attr]
    try:
        size = source_size(path)
        decoder, name = _open(path, stream)
        with decoder:
            rate = _check_rate(decoder.rate, f"the sample rate of audio file {name!r}")
            frames, channels = decoder.frames, decoder.channels
    finally:
        if here is not None:
            path.seek(here)  # type: ignore[union-attr]  # a file object: here is not None
    if size is None:  # a pipe or device: nothing to compare with
        return frames, rate
    return max(0, min(frames, size * _MAX_SAMPLES_PER_BYTE // max(1, channels))), rate


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, ValueError, OSError):
        return False


def decode_blocks(path: Source, *, block_samples: int = _BLOCK_SAMPLES,
                  stream: Optional[int] = None) -> Iterator[np.ndarray]:
    """Decode a file block by block into mono float32 blocks at the file's own rate.

    Reads about ``block_samples`` samples (all channels together) at a time, so memory
    follows the audio really in the file, whatever its header says. Each block is checked
    as it comes (finite, at most 2**31 in magnitude) and its channels averaged.

    Args:
        path: a path, or a binary file object.
        block_samples: samples (all channels) per block.
        stream: the audio stream of a container with several (0, the first, by default).

    Raises:
        AudioDecodeError: the file cannot be opened or its data cannot be decoded (e.g. a
            FLAC file whose header claims more samples than it holds).
        InvalidAudioError: NaN, infinite or out-of-range samples, or a rate outside
            1 kHz..1 MHz.

    >>> next(decode_blocks("missing.wav"))
    Traceback (most recent call last):
    ...
    panns_infer.errors.AudioDecodeError: audio file 'missing.wav' does not exist; check the path
    """
    decoder, name = _open(path, stream)
    with decoder:
        rate = _check_rate(decoder.rate, f"the sample rate of audio file {name!r}")
        yield from _blocks(decoder, name, rate, block_samples)


def _blocks(decoder: Decoder, name: str, rate: int, block_samples: int) -> Iterator[np.ndarray]:
    what = f"audio file {name!r}"
    done = 0
    for data in decoder.blocks(block_samples):
        finite = np.isfinite(data)
        if not finite.all():
            first = done + int(np.argmin(finite.all(axis=1)))
            raise InvalidAudioError(f"{what} contains NaN or infinite samples (the first at "
                                    f"{first / rate:.3f} s); fix the file, e.g. re-export it as integer PCM")
        peak = float(max(data.max(), -data.min()))
        if peak > _MAX_ABS:
            raise InvalidAudioError(f"{what} has samples as large as {peak:.3g}; float audio is "
                                    "expected in [-1, 1]: normalise the file")
        done += len(data)
        yield data.mean(axis=1) if data.shape[1] > 1 else data[:, 0].copy()


def read_audio(path: Source, target_rate: int, *, stream: Optional[int] = None) -> Clip:
    """Decode an audio file to a mono float32 clip at ``target_rate``.

    The file is read block by block (:func:`decode_blocks`): a header that claims more
    audio than the file holds costs nothing; the audio that is really there is returned
    (WAV, MP3, OGG, MP4, WebM), or :class:`AudioDecodeError` is raised where the decoder
    cannot go on (FLAC). Formats libsndfile does not read (MP4/M4A/MOV, WebM/MKV, AAC, WMA,
    video soundtracks) are decoded with PyAV; ``stream`` picks another audio stream than
    the first.

    Raises:
        AudioDecodeError: the path is missing, a directory, or not decodable audio.
        InvalidAudioError: the file decodes to no samples, to non-finite or out-of-range
            values, or has a sample rate outside 1 kHz..1 MHz.
        InvalidArgumentError: ``stream`` is not one of the file's audio streams.

    >>> read_audio("missing.wav", 32000)
    Traceback (most recent call last):
    ...
    panns_infer.errors.AudioDecodeError: audio file 'missing.wav' does not exist; check the path
    """
    parts: list[np.ndarray] = []
    decoder, name = _open(path, stream)
    with decoder:
        rate = _check_rate(decoder.rate, f"the sample rate of audio file {name!r}")
        try:
            parts.extend(_blocks(decoder, name, rate, _BLOCK_SAMPLES))
            samples = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else None
        except MemoryError:
            decoded = sum(len(p) for p in parts)
            parts.clear()
            raise AudioDecodeError(f"{name!r} does not fit in memory (more than {decoded} samples decoded); "
                                   "split it into shorter files") from None
    if samples is None:
        raise InvalidAudioError(f"audio file {name!r} holds no audio samples (0 frames); "
                                "check that it was written completely")
    return _finish(samples, rate, target_rate, name)


def _to_numpy(x: Any, label: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        try:
            x = x.detach()
            if x.layout != torch.strided:
                x = x.to_dense()
            x = x.cpu()
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            x = x.resolve_conj().resolve_neg().numpy()
        except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
            raise InvalidAudioError(f"{label}: cannot read the tensor's samples ({exc}); pass a dense "
                                    "CPU or CUDA tensor of floats") from None
    x = np.asarray(x)
    if x.dtype.kind in "OUSVMm" or x.dtype == np.bool_ or x.dtype.kind == "c":
        raise InvalidAudioError(f"{label}: expected numeric audio samples, got an array of dtype {x.dtype}")
    return x


def _array_clips(x: Any, rate: int, target_rate: int, label: str) -> list[Clip]:
    x = _to_numpy(x, label)
    if x.ndim == 1:
        _check_values(x, label)
        return [_finish(to_float32(x), rate, target_rate, None)]
    if x.ndim == 2:
        rows, cols = x.shape
        if cols <= _CHANNEL_LIKE < rows:
            raise InvalidAudioError(
                f"{label} has shape {tuple(x.shape)}: {rows} clips of {cols} sample(s) each, which looks like "
                "(samples, channels) audio. A 2-D array is (batch, samples): pass x.mean(axis=1) for one "
                "mono clip, or x.T to tag each channel as a clip"
            )
        clips = []
        for i, row in enumerate(x):
            _check_values(row, f"{label}, row {i}")
            clips.append(_finish(to_float32(row), rate, target_rate, None))
        return clips
    raise InvalidAudioError(
        f"{label}: expected a 1-D clip or a 2-D (batch, samples) array, got shape {tuple(x.shape)}; "
        "average the channels of multichannel audio into one clip first"
    )


def as_clips(x: Any, *, sample_rate: Optional[int], target_rate: int) -> tuple[list[Clip], bool]:
    """Turn any accepted input into clips at ``target_rate``.

    Args:
        x: a path or binary file object, a 1-D array/tensor (one clip), a 2-D array/tensor
            (a batch), or a list mixing paths, file objects and 1-D arrays/tensors.
        sample_rate: rate of arrays and tensors (files carry their own); ``None`` means
            ``target_rate``.
        target_rate: the model's rate.

    Returns:
        The clips, and whether the input was a single clip (so one result is returned).

    Raises:
        InvalidAudioError: unusable input type, shape, dtype, rate or content.
        AudioDecodeError: a file that cannot be read.

    >>> clips, single = as_clips(np.zeros((2, 16000), dtype=np.int16), sample_rate=16000, target_rate=32000)
    >>> [c.samples.shape for c in clips], single
    ([(32000,), (32000,)], False)
    """
    rate = target_rate if sample_rate is None else _check_rate(sample_rate)
    if isinstance(x, (str, os.PathLike)) or is_file_object(x):
        return [read_audio(x, target_rate)], True
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return _array_clips(x, rate, target_rate, "audio array"), x.ndim == 1
    if isinstance(x, (list, tuple)):
        clips: list[Clip] = []
        for i, item in enumerate(x):
            if isinstance(item, (str, os.PathLike)) or is_file_object(item):
                clips.append(read_audio(item, target_rate))
            elif isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 1:
                clips.extend(_array_clips(item, rate, target_rate, f"input {i}"))
            elif isinstance(item, (np.ndarray, torch.Tensor)):
                raise InvalidAudioError(f"input {i}: list items must be 1-D clips or paths, "
                                        f"got shape {tuple(item.shape)}; pass a 2-D batch on its own")
            else:
                hint = " (to pass one clip, use numpy.asarray(x))" if isinstance(item, (int, float)) else ""
                raise InvalidAudioError(f"input {i}: expected a path, numpy array or tensor, "
                                        f"got {type(item).__name__}{hint}")
        return clips, False
    raise InvalidAudioError(
        f"expected a path, a numpy array, a torch tensor, or a list of them; got {type(x).__name__}"
    )
