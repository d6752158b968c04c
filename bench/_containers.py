"""Writing M4A (AAC) and WebM (Opus) files with PyAV's encoders, for the benchmarks.

    write_container("x.m4a", samples, 44100)      # samples: float32 (frames,) or (frames, channels)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import numpy as np

CODECS = {".m4a": ("aac", None), ".mp4": ("aac", None), ".webm": ("libopus", 48000), ".mkv": ("libopus", 48000)}


def write_container(path: Union[str, Path], samples: Union[np.ndarray, Iterable[np.ndarray]], rate: int, *,
                    channels: int = 0, bitrate: int = 96_000) -> Path:
    """Encode float32 samples (one array, or an iterable of blocks for long files) into
    ``path`` (.m4a/.mp4: AAC; .webm/.mkv: Opus at 48 kHz, resampled by FFmpeg)."""
    import av

    path = Path(path)
    codec, codec_rate = CODECS[path.suffix]
    blocks = [samples] if isinstance(samples, np.ndarray) else samples
    with av.open(str(path), "w") as out:
        stream = None
        resampler = None
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            block = block[:, None] if block.ndim == 1 else block
            if stream is None:
                channels = channels or block.shape[1]
                layout = "mono" if channels == 1 else "stereo"
                stream = out.add_stream(codec, rate=codec_rate or rate)
                stream.layout = layout
                stream.bit_rate = bitrate
                resampler = av.AudioResampler(format="fltp", layout=layout, rate=codec_rate or rate)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="fltp", layout=layout)
            frame.sample_rate = rate
            for piece in resampler.resample(frame):
                for packet in stream.encode(piece):
                    out.mux(packet)
        for piece in resampler.resample(None):
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
