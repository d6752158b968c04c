"""Where live audio comes from: chunk iterables, raw PCM or encoded bytes, growing files, a microphone.

Every source becomes an iterator of ``(rate, samples)`` blocks, mono float32 at the
source's own rate. Live sources (file objects, paths, the microphone) are read by a
:class:`Pump` thread into a bounded buffer, so a stalled source, a slow model and Ctrl-C are
handled where the samples are consumed.

>>> parse_raw("s16le:32000")
RawFormat(dtype='<i2', rate=32000, channels=1)
>>> parse_raw("f32le:48000:2").frame_bytes
8
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from .audio import _check_rate, _check_values, _to_numpy, to_float32
from .errors import AudioDecodeError, InvalidArgumentError, InvalidAudioError

__all__ = ["RawFormat", "parse_raw", "chunk_blocks", "raw_blocks", "encoded_blocks", "TailFile",
           "microphone_blocks", "Pump", "RAW_FORMATS"]

log = logging.getLogger("panns_infer")

RAW_FORMATS = {"u8": "u1", "s8": "i1", "s16le": "<i2", "s16be": ">i2", "s32le": "<i4", "s32be": ">i4",
               "f32le": "<f4", "f32be": ">f4", "f64le": "<f8", "f64be": ">f8"}
"""Raw PCM sample formats (ffmpeg's names) and their numpy dtypes."""

_READ_BYTES = 1 << 14  # bytes asked for per read of a live byte stream


@dataclass(frozen=True)
class RawFormat:
    """Headerless PCM: sample dtype (numpy), rate and interleaved channel count."""

    dtype: str
    rate: int
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return np.dtype(self.dtype).itemsize * self.channels


def parse_raw(spec: str) -> RawFormat:
    """Parse ``FORMAT:RATE[:CHANNELS]`` (``s16le:32000``, ``f32le:48000:2``; formats as ffmpeg's
    ``-f``: u8, s8, s16le, s16be, s32le, s32be, f32le, f32be, f64le, f64be).

    >>> parse_raw("wav:32000")
    Traceback (most recent call last):
    ...
    panns_infer.errors.InvalidArgumentError: raw format 'wav' is not one of u8, s8, s16le, s16be, s32le, s32be, f32le, f32be, f64le, f64be (spec 'wav:32000'; write FORMAT:RATE[:CHANNELS], e.g. s16le:32000)
    """  # noqa: E501 - the example shows the whole error message, as users see it
    parts = str(spec).split(":")
    hint = f"(spec {spec!r}; write FORMAT:RATE[:CHANNELS], e.g. s16le:32000)"
    if len(parts) not in (2, 3):
        raise InvalidArgumentError(f"a raw format needs a sample format and a rate {hint}")
    name = parts[0].lower()
    if name not in RAW_FORMATS:
        raise InvalidArgumentError(f"raw format {name!r} is not one of {', '.join(RAW_FORMATS)} {hint}")
    try:
        rate = int(parts[1])
        channels = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise InvalidArgumentError(f"the rate and channel count of a raw format are whole numbers {hint}") from None
    if not 1 <= channels <= 64:
        raise InvalidArgumentError(f"a raw stream has 1 to 64 channels, got {channels} {hint}")
    try:
        rate = _check_rate(rate, "the raw stream's rate")
    except InvalidAudioError as exc:
        raise InvalidArgumentError(str(exc)) from None
    return RawFormat(RAW_FORMATS[name], rate, channels)


def _mono(frames: np.ndarray, what: str) -> np.ndarray:
    """``(samples, channels)`` of any PCM dtype to mono float32, checked."""
    if frames.dtype.byteorder not in ("=", "|") and frames.dtype.itemsize > 1:
        frames = frames.astype(frames.dtype.newbyteorder("="))
    if frames.size:
        _check_values(frames, what)
    x = to_float32(frames)
    return x.mean(axis=1) if x.shape[1] > 1 else x[:, 0].copy()


def chunk_blocks(chunks: Iterable[Any], rate: int) -> Iterator[tuple[int, np.ndarray]]:
    """Numpy arrays or tensors (1-D, any length, float or integer PCM) as checked blocks.

    >>> [b.shape for _, b in chunk_blocks([np.zeros(3, dtype=np.int16), np.ones(2)], 32000)]
    [(3,), (2,)]
    """
    for i, chunk in enumerate(chunks):
        x = _to_numpy(chunk, f"stream chunk {i}")
        if x.ndim != 1:
            raise InvalidAudioError(f"stream chunk {i} has shape {tuple(x.shape)}; stream chunks are 1-D "
                                    "(mix channels down first, e.g. chunk.mean(axis=1))")
        if x.size:
            yield rate, _mono(x[:, None], f"stream chunk {i}")


def raw_blocks(read: Callable[[int], bytes], fmt: RawFormat) -> Iterator[tuple[int, np.ndarray]]:
    """Headerless PCM from ``read(n)`` (returning ``b""`` at the end) as blocks.

    A stream that ends inside a frame (a sample cut in two, or fewer bytes than one frame of
    every channel) ends cleanly: the complete frames are used and the rest is reported in the
    log, since a live pipe cut by its writer often ends so.
    """
    left = b""
    size = fmt.frame_bytes
    done = 0
    while True:
        data = read(_READ_BYTES)
        if not data:
            break
        data = left + data
        whole = len(data) // size * size
        left = data[whole:]
        if whole:
            frames = np.frombuffer(data[:whole], dtype=fmt.dtype).reshape(-1, fmt.channels)
            yield fmt.rate, _mono(frames, f"the raw stream after {done / fmt.rate:.2f} s")
            done += len(frames)
    if left:
        log.warning("the raw stream ended inside a frame: %d trailing byte(s) of a %d-byte frame (%s, %d "
                    "channel(s)) were dropped; check the declared format if this was not a cut", len(left), size,
                    fmt.dtype, fmt.channels)


def encoded_blocks(stream: IO[bytes]) -> Iterator[tuple[int, np.ndarray]]:
    """Encoded audio (WAV, FLAC, OGG, MP3, ...) from a binary file object, decoded as it arrives.

    Non-seekable streams (pipes) are decoded with PyAV (``pip install av``) when it is
    installed; seekable ones with soundfile otherwise.

    Raises:
        AudioDecodeError: the bytes are not audio, or a pipe without PyAV installed.
    """
    try:
        import av  # noqa: F401
    except ImportError:
        have_av = False
    else:
        have_av = True
    if have_av:
        yield from _av_blocks(stream)
        return
    seekable = getattr(stream, "seekable", lambda: False)()
    if not seekable:
        raise AudioDecodeError("decoding encoded audio from a pipe needs PyAV (pip install av); or send raw PCM "
                               "and declare it: ffmpeg ... -f s16le -ac 1 -ar 32000 - | panns-tag --stream - "
                               "--raw s16le:32000")
    import soundfile

    from .audio import _blocks

    try:
        f = soundfile.SoundFile(stream)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:
        raise AudioDecodeError(f"cannot decode the stream as audio ({exc})") from None
    with f:
        rate = _check_rate(f.samplerate, "the stream's sample rate")
        for block in _blocks(f, "<stream>", rate, 1 << 14):
            yield rate, block


def _av_blocks(stream: IO[bytes]) -> Iterator[tuple[int, np.ndarray]]:
    import av

    try:
        container = av.open(stream, mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise AudioDecodeError(f"cannot decode the stream as audio ({exc}); if it is headerless PCM, declare "
                               "its format (--raw s16le:32000)") from None
    with container:
        if not container.streams.audio:
            raise AudioDecodeError("the stream holds no audio track")
        done = 0
        try:
            for frame in container.decode(audio=0):
                rate = _check_rate(frame.sample_rate, "the stream's sample rate")
                a = frame.to_ndarray()
                channels = len(frame.layout.channels)
                frames = a.T if frame.format.is_planar else a.reshape(-1, channels)
                if not len(frames):
                    continue
                yield rate, _mono(np.ascontiguousarray(frames), f"the stream after {done / rate:.2f} s")
                done += len(frames)
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(f"cannot decode the stream after {done} samples ({exc})") from None


class TailFile(io.RawIOBase):
    """A file that may still be growing, read as a stream: a read that finds no new bytes waits
    (polling every ``poll`` seconds) until some arrive, and ends the stream (returns ``b""``)
    after ``idle_timeout`` seconds without any (``None``: wait forever). Once ended, a read at
    the end returns ``b""`` at once (bytes that arrive later are still read).

    >>> TailFile("missing.raw")
    Traceback (most recent call last):
    ...
    panns_infer.errors.AudioDecodeError: cannot open 'missing.raw' to follow it: No such file or directory
    """

    def __init__(self, path: Union[str, os.PathLike], *, poll: float = 0.1,
                 idle_timeout: Optional[float] = 10.0) -> None:
        super().__init__()
        self.path = os.fspath(path)
        try:
            self._f = open(self.path, "rb", buffering=0)
        except OSError as exc:
            raise AudioDecodeError(f"cannot open {self.path!r} to follow it: {exc.strerror}") from None
        self.poll, self.idle_timeout = poll, idle_timeout
        self.stop = threading.Event()
        self.ended = False  # a read found no new bytes for idle_timeout (or stop was set)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        waited = 0.0
        while True:
            n = self._f.readinto(buffer)
            if n:
                return n
            # decoders read past the end more than once: each waiting idle_timeout again
            # would multiply the stall
            if self.ended or self.stop.is_set() or (self.idle_timeout is not None and waited >= self.idle_timeout):
                self.ended = True
                return 0
            time.sleep(self.poll)
            waited += self.poll

    def close(self) -> None:
        self._f.close()
        super().close()


def microphone_blocks(*, rate: int, device: Any = None, block_seconds: float = 0.1,
                      stop: Optional[threading.Event] = None) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks from an input device through ``sounddevice`` (``pip install 'panns-infer[mic]'``).

    Raises:
        AudioDecodeError: sounddevice or PortAudio missing, or no such input device.
    """
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise AudioDecodeError(f"the microphone needs sounddevice and PortAudio ({exc}); install them with "
                               "pip install 'panns-infer[mic]' (and e.g. apt-get install libportaudio2)") from None
    blocks: deque = deque()
    ready = threading.Condition()

    def callback(indata: np.ndarray, frames: int, when: Any, status: Any) -> None:
        if status:
            log.warning("microphone: %s", status)
        with ready:
            blocks.append(np.array(indata, dtype=np.float32, copy=True))
            ready.notify()

    try:
        stream = sounddevice.InputStream(samplerate=rate, channels=1, dtype="float32", device=device,
                                         blocksize=max(1, int(block_seconds * rate)), callback=callback)
    except Exception as exc:  # PortAudioError, ValueError for an unknown device, ...
        raise AudioDecodeError(f"cannot open the microphone ({exc})") from None
    with stream:
        while stop is None or not stop.is_set():
            with ready:
                if not blocks:
                    ready.wait(timeout=0.5)
                items = list(blocks)
                blocks.clear()
            for data in items:
                yield rate, _mono(data.reshape(len(data), -1), "the microphone's input")


class Pump:
    """Reads a live source in a thread into a bounded buffer.

    Args:
        blocks: the source, as ``(rate, samples)`` blocks.
        max_lag: when set, seconds of audio the buffer holds at most: older audio is dropped
            (and counted) so the consumer always gets the newest. ``None``: the reader waits
            when ``hold`` seconds are buffered (the writer is slowed down; nothing is lost).
        hold: seconds buffered at most without ``max_lag``.
    """

    def __init__(self, blocks: Iterator[tuple[int, np.ndarray]], *, max_lag: Optional[float] = None,
                 hold: float = 30.0) -> None:
        self._blocks = blocks
        self.max_lag, self.hold = max_lag, hold
        self._queue: deque = deque()
        self._samples = 0
        self._dropped = 0
        self.rate: Optional[int] = None
        self._done = False
        self._error: Optional[BaseException] = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="panns-stream-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for rate, block in self._blocks:
                with self._cond:
                    if self.rate is None:
                        self.rate = rate
                    while self.max_lag is None and self._samples > self.hold * rate and not self._closed:
                        self._cond.wait(timeout=0.5)
                    if self._closed:
                        return
                    self._queue.append((rate, block))
                    self._samples += len(block)
                    if self.max_lag is not None:
                        limit = self.max_lag * rate
                        while self._samples > limit and len(self._queue) > 1:
                            _, old = self._queue.popleft()
                            self._samples -= len(old)
                            self._dropped += len(old)
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer, raised there
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def take(self, timeout: Optional[float]) -> tuple[int, list, bool, Optional[BaseException]]:
        """``(dropped samples, (rate, block) pairs, ended, error)``: everything buffered, waiting up to
        ``timeout`` seconds (``None``: forever) for something to arrive. ``ended`` with no
        blocks and no error after a timeout means the source stalled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self._done and not self._dropped:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return 0, [], True, None
                self._cond.wait(timeout=0.5 if remaining is None else min(0.5, remaining))
            blocks, dropped = list(self._queue), self._dropped
            self._queue.clear()
            self._samples = self._dropped = 0
            self._cond.notify_all()
            ended = self._done and not blocks
            return dropped, blocks, ended, self._error if ended else None

    @property
    def finished(self) -> bool:
        """Whether the source has ended (or failed)."""
        return self._done

    def close(self) -> None:
        """Stop reading (the thread ends at its next block)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
