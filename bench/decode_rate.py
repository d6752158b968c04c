"""Decoding rate of M4A (AAC) and WebM (Opus): panns_infer against librosa.load on the same files.

    python bench/decode_rate.py                  # 10 minutes of 44.1 kHz stereo, best of 3
    python bench/decode_rate.py --minutes 1      # a quick check that everything runs

A signal (noise and tones) is encoded with PyAV into .m4a (AAC, 96 kb/s) and .webm (Opus at
48 kHz); the same files are decoded by each reader, in one process, best of ``--repeat`` runs.
Rates are audio seconds decoded per second of wall time (higher is better):

* ``decode_blocks``: panns_infer's block decoding at the file's own rate, channels averaged;
* ``read_audio 32k``: the same plus kaiser_best resampling to 32 kHz (what tagging needs);
* ``read_blocks 32k``: the streamed form of it, block by block (what long files go through;
  the same samples, bit for bit);
* ``librosa.load sr=None``: librosa's native-rate load (audioread/FFmpeg fallback for these
  containers, or soundfile when it reads them), ``mono=True``;
* ``librosa.load sr=32000``: the same resampled to 32 kHz (soxr_hq, librosa's default).

Needs: pip install librosa (and av, a panns_infer dependency).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import WORK, machine
from _containers import write_container

RATE = 44100


def make_files(minutes: float) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    files = {}
    for ext in (".m4a", ".webm"):
        path = WORK / f"decode_{minutes:g}min{ext}"
        if not path.exists():
            rng = np.random.default_rng(0)

            def blocks():
                for k in range(int(minutes * 6)):
                    t = (k * 10 * RATE + np.arange(10 * RATE)) / RATE
                    tone = 0.3 * np.sin(2 * np.pi * (440 + 40 * k) * t)
                    noise = rng.standard_normal((10 * RATE, 2))  # noqa: B023 - consumed in this iteration
                    yield np.stack([tone, 0.5 * tone], axis=1) + 0.05 * noise

            write_container(path, blocks(), RATE)
        files[ext[1:]] = path
    return files


def best_rate(fn, seconds: float, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return seconds / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import librosa

    from panns_infer.audio import decode_blocks, read_audio
    from panns_infer.windows import read_blocks

    print(f"machine: {machine()}")
    files = make_files(args.minutes)
    seconds = args.minutes * 60
    readers = {
        "decode_blocks (native rate)": lambda p: sum(len(b) for b in decode_blocks(p)),
        "read_audio 32k (kaiser_best)": lambda p: read_audio(p, 32000),
        "read_blocks 32k (streamed kaiser_best)": lambda p: sum(len(b) for b in read_blocks(p, 32000)),
        "librosa.load sr=None": lambda p: librosa.load(p, sr=None, mono=True),
        "librosa.load sr=32000 (soxr_hq)": lambda p: librosa.load(p, sr=32000, mono=True),
    }
    print(f"\n{args.minutes:g} min of 44.1 kHz stereo, best of {args.repeat}; audio seconds decoded per second\n")
    print("| reader | " + " | ".join(files) + " |")
    print("|---|" + "---:|" * len(files))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's "PySoundFile failed. Trying audioread instead."
        for name, fn in readers.items():
            # each lambda is timed before the loops move on
            rates = [best_rate(lambda: fn(str(path)), seconds, args.repeat)  # noqa: B023
                     for path in files.values()]
            print(f"| {name} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
