"""Audio decoders behind one small interface (:class:`Decoder`), chosen by content.

libsndfile (python-soundfile) reads what it recognises: WAV, FLAC, OGG/Vorbis/Opus, MP3,
AIFF, ... Everything else goes to PyAV (FFmpeg's libraries): MP4/M4A/MOV (AAC, ALAC),
WebM/MKV (Opus, Vorbis, FLAC, AAC), raw AAC (ADTS), WMA/ASF, AIFF-C variants libsndfile
refuses, and the soundtrack of any video file. The file's extension plays no part.

>>> import io
>>> open_decoder(io.BytesIO(b"not audio"), "junk").rate  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
panns_infer.errors.AudioDecodeError: cannot decode 'junk' as audio (libsndfile: Format not recognised; FFmpeg: ...); supported formats are ...
"""  # noqa: E501 - the example shows the whole error message, as users see it

from __future__ import annotations

import io
from typing import Optional

from ..errors import AudioDecodeError
from .base import Decoder, Source, is_file_object, source_size
from .sndfile import SNDFILE_ERRORS, SndfileDecoder

__all__ = ["Decoder", "Source", "open_decoder", "is_file_object", "source_size", "pyav_available"]

_SUPPORTED = ("supported formats are those libsndfile reads (WAV, FLAC, OGG, MP3, ...) and, through PyAV, "
              "MP4/M4A/MOV, WebM/MKV, AAC, WMA and video soundtracks: check the file, or convert it "
              "(e.g. ffmpeg -i IN OUT.wav)")


def pyav_available() -> bool:
    """Whether PyAV (the ``av`` package) can be imported.

    >>> isinstance(pyav_available(), bool)
    True
    """
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def open_decoder(source: Source, name: str, *, stream: Optional[int] = None) -> Decoder:
    """Open ``source`` with the first decoder that recognises its content.

    Args:
        source: a path, or a binary file object (seekable, or read whole into memory first).
        name: how error messages name the source.
        stream: the audio stream to decode (0, the first, by default). Files with one
            stream (all that libsndfile reads) only have stream 0; another index goes
            straight to PyAV.

    Raises:
        AudioDecodeError: no decoder recognises the data, or the file has no audio stream.
        InvalidArgumentError: ``stream`` is not one of the file's audio streams.
    """
    if is_file_object(source) and not _seekable(source):
        # is_file_object() checked source (it cannot be a TypeGuard on Python 3.9)
        source = io.BytesIO(source.read())  # type: ignore[union-attr]
    start = source.tell() if is_file_object(source) else 0  # type: ignore[union-attr]  # checked: a file object
    size = source_size(source)
    if not stream:
        try:
            return SndfileDecoder(source, name)
        except SNDFILE_ERRORS as exc:
            sndfile_reason = str(exc).strip() or type(exc).__name__
            if sndfile_reason.startswith("Error opening"):  # "Error opening <source>: Format not recognised."
                sndfile_reason = sndfile_reason.rsplit(": ", 1)[-1].rstrip(".")
        if is_file_object(source):
            source.seek(start)  # type: ignore[union-attr]  # a file object (checked above)
    else:
        sndfile_reason = "one stream only"
    if not pyav_available():
        raise AudioDecodeError(
            f"cannot decode {name!r} as audio (libsndfile: {sndfile_reason}); {_SUPPORTED.split(' and,')[0]}. "
            "MP4/M4A/MOV, WebM/MKV, AAC, WMA and video soundtracks need PyAV: pip install av") from None
    from .pyav import AvDecoder

    try:
        return AvDecoder(source, name, stream=stream or 0)
    except AudioDecodeError as exc:
        if not str(exc).startswith("FFmpeg: "):
            raise
        if size == 0:
            raise AudioDecodeError(f"cannot decode {name!r} as audio: the file is empty (0 bytes); "
                                   f"{_SUPPORTED}") from None
        raise AudioDecodeError(f"cannot decode {name!r} as audio (libsndfile: {sndfile_reason}; {exc}); "
                               f"{_SUPPORTED}") from None


def _seekable(f: object) -> bool:
    try:
        return bool(f.seekable())  # type: ignore[attr-defined]  # any object: AttributeError is caught
    except (AttributeError, ValueError, OSError):
        return False
