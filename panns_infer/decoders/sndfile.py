"""Decoding with libsndfile (python-soundfile): WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ..."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import soundfile

from ..errors import AudioDecodeError
from .base import Decoder, Source

__all__ = ["SndfileDecoder", "SNDFILE_ERRORS"]

#: What python-soundfile raises for files it cannot open or read.
SNDFILE_ERRORS = (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError)


class SndfileDecoder(Decoder):
    """A source libsndfile can open.

    Raises:
        Any of :data:`SNDFILE_ERRORS`: libsndfile does not recognise the data (the caller
            then tries another decoder).
    """

    def __init__(self, source: Source, name: str) -> None:
        self.name = name
        self._file = soundfile.SoundFile(source)
        self.rate, self.channels, self.frames = self._file.samplerate, self._file.channels, self._file.frames

    def blocks(self, block_samples: int) -> Iterator[np.ndarray]:
        block = max(1, int(block_samples) // self.channels)
        done = 0
        while True:
            try:
                data = self._file.read(block, dtype="float32", always_2d=True)
            except SNDFILE_ERRORS as exc:
                raise AudioDecodeError(
                    f"cannot read the samples of {self.name!r} after {done / self.rate:.2f} s "
                    f"({str(exc).strip() or type(exc).__name__}): the file is truncated or corrupt, or its "
                    "header does not match its data; re-encode it from the original"
                ) from None
            if len(data):
                done += len(data)
                yield data
            if len(data) < block:
                return

    def close(self) -> None:
        self._file.close()
