"""The one interface every decoder offers: an open source with a rate, a channel count, a
frame count from its header, and samples in blocks."""

from __future__ import annotations

import os
from typing import IO, Any, Iterator, Optional, Union

import numpy as np

__all__ = ["Decoder", "Source", "is_file_object", "source_size"]

#: A path, or a binary file object open for reading (``io.BytesIO``, ``open(p, "rb")``).
Source = Union[str, "os.PathLike[str]", IO[bytes]]


def is_file_object(source: Any) -> bool:
    """Whether ``source`` is a readable binary file object rather than a path.

    >>> import io
    >>> is_file_object(io.BytesIO(b"")), is_file_object("a.wav")
    (True, False)
    """
    return not isinstance(source, (str, bytes, os.PathLike)) and callable(getattr(source, "read", None))


def source_size(source: Source) -> Optional[int]:
    """Bytes in a file or a seekable file object (from where it stands), or ``None``."""
    try:
        if is_file_object(source):
            f: Any = source
            here = f.tell()
            end = f.seek(0, os.SEEK_END)
            f.seek(here)
            return int(end - here)
        return os.path.getsize(source)  # type: ignore[arg-type]  # not a file object, so a path
    except (OSError, ValueError, AttributeError, TypeError):  # a pipe, a device, an unseekable stream
        return None


class Decoder:
    """An open audio source.

    Attributes:
        name: how messages name the source (its path, or a description of a file object).
        rate: samples per second per channel, as the file says (not yet checked).
        channels: channels in the first block (a stream may change later; each block is
            2-D ``(frames, channels)``, so averaging per block stays right).
        frames: frames per channel that the header claims, or an estimate; ``0`` when
            nothing is known. Never trusted for allocation.
    """

    name: str
    rate: int
    channels: int
    frames: int

    def blocks(self, block_samples: int) -> Iterator[np.ndarray]:
        """float32 blocks ``(frames, channels)`` of about ``block_samples`` samples (all
        channels together), scaled like libsndfile's float reads (int PCM by its full range).

        Raises:
            AudioDecodeError: the data cannot be decoded (the message names the time).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the file and the decoder."""

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
