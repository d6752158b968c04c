"""What the exact spectrogram costs: the CPU fast path with the reference's DFT-as-convolution
(the default) against the opt-in FFT, in one process, alternating, on the same clips.

    python bench/spectrogram_check.py              # Cnn14, batch 1 and 8, 10 s clips
    python bench/spectrogram_check.py --reps 3

Prints the log-mel front end's own cost (ms per 10 s clip) for each way of computing it,
Cnn14 tag throughput (clips/s) with each, and each one's deviation from the reference's
spectrogram on a tone between FFT bins (the case that tells them apart).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from _common import checkpoint, labels_for_peer, machine, timed

CLIP = 320_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    from panns_infer import AudioTagger
    from panns_infer.frontend import fft_power

    labels = labels_for_peer()
    ckpt = checkpoint("Cnn14")
    exact = AudioTagger(ckpt, arch="Cnn14", device="cpu", labels=labels, batch_size=8)
    fft = AudioTagger(ckpt, arch="Cnn14", device="cpu", labels=labels, batch_size=8, spectrogram="fft")
    print(f"machine: {machine()}")
    spec = exact._engine.runner.spectrogram_extractor  # the reference's two convolutions
    window = torch.hann_window(1024, periodic=True)
    t = np.arange(CLIP) / 32000
    tone = torch.from_numpy((0.5 * np.sin(2 * np.pi * 31.5 * 31.25 * t)).astype(np.float32))[None]
    with torch.inference_mode():
        ref = spec(tone)
        dev = float((fft_power(tone, window, 320) - ref).abs().max() / ref.max())
    print(f"tone between bins, spectrogram vs the reference's (relative to its peak): conv 0, fft {dev:.2e}")
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(CLIP) * 0.1).astype(np.float32) for _ in range(8)]
    for batch in (1, 8):
        x = torch.from_numpy(np.stack(clips[:batch]))
        with torch.inference_mode():
            conv_ms = timed(lambda: exact._engine.runner.logmel(x), args.reps) * 1000 / batch  # noqa: B023 - timed at once
            fft_ms = timed(lambda: fft._engine.runner.logmel(x), args.reps) * 1000 / batch  # noqa: B023 - timed at once
        t_exact, t_fft = [], []
        for _ in range(args.reps):  # alternate so drift hits both
            t_exact.append(timed(lambda: exact.tag(clips[:batch]), 1))  # noqa: B023 - timed at once
            t_fft.append(timed(lambda: fft.tag(clips[:batch]), 1))  # noqa: B023 - timed at once
        r_exact, r_fft = batch / statistics.median(t_exact), batch / statistics.median(t_fft)
        print(f"batch {batch}: log-mel {conv_ms:.1f} ms/clip (default) vs {fft_ms:.1f} (fft); Cnn14 tag "
              f"{r_exact:.2f} clips/s (default, exact) vs {r_fft:.2f} (fft): {r_exact / r_fft:.1%}")


if __name__ == "__main__":
    main()
