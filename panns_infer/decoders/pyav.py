"""Decoding with PyAV (FFmpeg's libraries): MP4/M4A/MOV (AAC, ALAC), WebM/MKV (Opus, Vorbis,
FLAC, AAC), raw AAC (ADTS), WMA/ASF, AIFF-C and the soundtrack of video files.

Packets are demuxed and decoded one at a time and gathered into blocks, so memory follows the
block size, never the file's length or what its header claims. Samples are those the
``ffmpeg`` command-line tool gives for the same stream (encoder delay and padding trimmed as
the container says), scaled to float32 as libsndfile scales them. Each decoder owns its own
container and codec context, so threads never share FFmpeg state.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterator, Optional

import numpy as np

from ..errors import AudioDecodeError, InvalidArgumentError
from .base import Decoder, Source, is_file_object, source_size

__all__ = ["AvDecoder", "DEMUXERS"]

log = logging.getLogger("panns_infer")

#: FFmpeg demuxers that may open a file: containers of audio and video. Playlist and
#: concatenation formats (hls, concat, ...) are left out: they open other files or URLs.
DEMUXERS = ("mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,aac,asf,aiff,ogg,mp3,flac,wav,w64,caf,avi,mpegts,mpeg,"
            "flv,amr,ac3,eac3,dts,truehd,ape,wv,tta,au,voc,mpc,mpc8,shn,loas,oma,rm,wsaud,xwma,dsf,iff")
_OPTIONS = {"format_whitelist": DEMUXERS, "protocol_whitelist": "file,pipe"}

# float32 scale of each integer sample format, as libsndfile and FFmpeg's converter scale them
_SCALE = {"s16": 2.0 ** -15, "s32": 2.0 ** -31, "s64": 2.0 ** -63}
_MAX_BAD_PACKETS = 64  # consecutive packets that fail to decode before the stream is given up
_MAX_SAMPLES_PER_BYTE = 16384  # as for libsndfile files: a decoder cannot honestly give more


def _layout_channels(layout: Any) -> int:
    count = getattr(layout, "nb_channels", None)
    return int(count) if count is not None else len(layout.channels)


def _opus_pre_skip(extradata: Optional[bytes]) -> int:
    """The pre-skip (samples at 48 kHz) of an ``OpusHead`` header, or 0."""
    if extradata and len(extradata) >= 12 and extradata[:8] == b"OpusHead":
        return int.from_bytes(extradata[10:12], "little")
    return 0


def _opus_packet_samples(packet: bytes) -> Optional[int]:
    """Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716, 3.1)."""
    if not packet:
        return None
    config, code = packet[0] >> 3, packet[0] & 3
    if config < 12:
        size = (480, 960, 1920, 2880)[config % 4]
    elif config < 16:
        size = (480, 960)[config % 2]
    else:
        size = (120, 240, 480, 960)[config % 4]
    if code == 0:
        return size
    if code in (1, 2):
        return 2 * size
    return size * (packet[1] & 0x3F) if len(packet) > 1 else None


def _frame_array(frame: Any) -> np.ndarray:
    """An FFmpeg audio frame as float32 ``(channels, samples)``, integers scaled to [-1, 1).

    Channel-major, because averaging a few long rows is ~6x faster than averaging the
    columns of an interleaved ``(samples, channels)`` block.
    """
    channels = _layout_channels(frame.layout)
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data[:, :frame.samples]
    else:
        data = data.reshape(-1, channels)[:frame.samples].T
    kind = frame.format.name.rstrip("p")
    if kind == "u8":
        return (data.astype(np.float32) - np.float32(128)) / np.float32(128)
    if kind in _SCALE:
        return data.astype(np.float32) * np.float32(_SCALE[kind])
    return data.astype(np.float32, copy=False)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """``(channels, n)`` pieces as one ``(n, channels)`` block (a channel-major view)."""
    return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)).T


class AvDecoder(Decoder):
    """One audio stream of a file PyAV can open.

    Args:
        source: a path or a binary file object.
        name: how messages name the source.
        stream: which audio stream (0 = the first; streams of other kinds are not counted).

    Raises:
        AudioDecodeError: FFmpeg cannot open the data, or it holds no audio stream.
        InvalidArgumentError: ``stream`` is not one of the file's audio streams.
    """

    def __init__(self, source: Source, name: str, *, stream: int = 0) -> None:
        import av

        self.name = name
        self._source = source
        self._size = source_size(source)
        # is_file_object() checked source (it cannot be a TypeGuard on Python 3.9)
        self._start = source.tell() if is_file_object(source) else 0  # type: ignore[union-attr]
        try:
            self._container = av.open(source, mode="r", options=_OPTIONS, metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, EOFError, ValueError, TypeError) as exc:
            raise AudioDecodeError(self._cannot_open(exc)) from None
        try:
            self._stream, self._position = self._pick(stream), stream
            cc = self._stream.codec_context
            self.rate = int(cc.sample_rate or self._stream.rate or 0)
            self.channels = _layout_channels(cc.layout) or 1
            self._pre_skip = _opus_pre_skip(cc.extradata) if cc.name == "opus" else 0
            self.frames = self._claimed_frames()
        except BaseException:
            self._container.close()
            raise

    def _cannot_open(self, exc: BaseException) -> str:
        reason = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
        return f"FFmpeg: {reason}"

    def _pick(self, index: int) -> Any:
        audio = list(self._container.streams.audio)
        if not audio:
            kinds = sorted({str(s.type) for s in self._container.streams}) or ["none"]
            raise AudioDecodeError(f"{self.name!r} holds no audio stream (its streams: {', '.join(kinds)}); "
                                   "pass a file with a soundtrack")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(audio):
            raise InvalidArgumentError(f"stream={index!r}, but {self.name!r} has {len(audio)} audio stream(s): "
                                       f"pass 0..{len(audio) - 1}")
        return audio[index]

    def _claimed_frames(self) -> int:
        """Frames per channel from the container's durations (rounded up), else 0."""
        seconds = None
        st = self._stream
        if st.duration is not None and st.time_base is not None and st.duration > 0:
            seconds = float(st.duration * st.time_base)
        elif self._container.duration is not None and self._container.duration > 0:
            seconds = self._container.duration / 1_000_000
        if seconds is None and not is_file_object(self._source):
            seconds = self._scanned_seconds()
        if seconds is None or not math.isfinite(seconds) or self.rate <= 0:
            return 0
        frames = math.ceil(seconds * self.rate)
        if self._size is not None:
            frames = min(frames, self._size * _MAX_SAMPLES_PER_BYTE // max(1, self.channels))
        return max(0, frames)

    def _scanned_seconds(self) -> Optional[float]:
        """The end time of the stream's last packet, read without decoding (for containers
        written without a duration, such as WebM recorded live), so that a long recording
        is known to be long before it is decoded."""
        import av

        end = None
        try:
            with av.open(self._source, mode="r", options=_OPTIONS, metadata_errors="ignore") as container:
                stream = container.streams.audio[self._position]
                for packet in container.demux(stream):
                    if packet.pts is not None and packet.time_base is not None:
                        stop = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                        end = stop if end is None else max(end, stop)
        except (av.error.FFmpegError, OSError, EOFError, ValueError, IndexError):
            pass  # decoding will say what is wrong
        return end

    # -- decoding -------------------------------------------------------------------------------

    def blocks(self, block_samples: int) -> Iterator[np.ndarray]:
        target = max(1, int(block_samples))
        pending: list[np.ndarray] = []
        count = 0
        for data in self._arrays():
            if pending and len(data) != len(pending[0]):  # the channel count changed
                yield _joined(pending)
                pending, count = [], 0
            pending.append(data)
            count += data.size
            if count >= target:
                yield _joined(pending)
                pending, count = [], 0
        if pending:
            yield _joined(pending)

    def _arrays(self) -> Iterator[np.ndarray]:
        """Decoded frames as ``(channels, samples)`` arrays, trimmed as the stream's encoder
        delay requires."""
        import av

        ceiling = None if self._size is None else self._size * _MAX_SAMPLES_PER_BYTE
        done = 0  # samples per channel given
        bad = 0
        skip: Optional[int] = None  # samples still to drop at the start (Opus pre-skip)
        first_packet: Optional[bytes] = None
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError, EOFError, ValueError) as exc:
                if done == 0:
                    raise AudioDecodeError(self._stopped(exc, done)) from None
                log.warning("%s: the data stops after %.2f s (%s); using the audio before it",
                            self.name, done / max(1, self.rate), self._reason(exc))
                return
            if first_packet is None and packet.size:
                first_packet = bytes(packet)
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError) as exc:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
                    raise AudioDecodeError(self._stopped(exc, done)) from None
                continue
            for frame in frames:
                if frame.sample_rate != self.rate:
                    raise AudioDecodeError(f"the sample rate of {self.name!r} changes from {self.rate} to "
                                           f"{frame.sample_rate} Hz after {done / self.rate:.2f} s; split "
                                           "the file where it changes")
                data = _frame_array(frame)
                bad = 0
                if skip is None:
                    skip = self._extra_skip(first_packet, data.shape[1])
                if skip:
                    cut = min(skip, data.shape[1])
                    data, skip = data[:, cut:], skip - cut
                if not data.shape[1]:
                    continue
                done += data.shape[1]
                if ceiling is not None and done * len(data) > ceiling:
                    raise AudioDecodeError(f"{self.name!r} decodes to more samples than its size can hold "
                                           f"({done} per channel from {self._size} bytes): the file is "
                                           "malformed; re-encode it from the original")
                yield data

    def _extra_skip(self, first_packet: Optional[bytes], first_frame: int) -> int:
        """Samples of Opus pre-skip the decoder left in (some Matroska files give the
        delay as a negative start time, and FFmpeg then trims only part of it)."""
        if not self._pre_skip or first_packet is None:
            return 0
        total = _opus_packet_samples(first_packet)
        if total is None or self.rate != 48000:
            return 0
        dropped = total - first_frame
        return max(0, self._pre_skip - dropped) if 0 <= dropped <= total else 0

    @staticmethod
    def _reason(exc: BaseException) -> str:
        return getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__

    def _stopped(self, exc: BaseException, done: int) -> str:
        return (f"cannot read the samples of {self.name!r} after {done / max(1, self.rate):.2f} s "
                f"(FFmpeg: {self._reason(exc)}): the file is truncated or corrupt; re-encode it from the original")

    def close(self) -> None:
        self._container.close()
