"""CPU throughput of panns_infer against panns_inference on the same checkpoint and clips.

    python bench/throughput.py                     # full table (a few minutes on 2 cores)
    python bench/throughput.py --reps 3 --quick    # batch 1 and 8 for tag only

Needs: pip install panns-inference torchlibrosa librosa (and ../shared/fixtures for the
deterministic checkpoints). Both tools run in this process, alternating, on identical
inputs; each figure is the median of --reps timed calls after a warm-up. The script also
measures this machine's float32 matrix-multiply peak and reports the fraction of the
direct-convolution limit reached: multiply-adds are counted over the convolution and linear
layers with forward hooks (output elements x input channels per group x kernel taps), the
STFT excluded, so the limit is peak / (2 x multiply-adds) clips per second. The peak is
oneDNN's packed-weight GEMM (torch.mm's MKL rate, ~half of it on AMD processors, is printed
too). Above 100% means fewer multiply-adds than direct convolution (Winograd, the narrow
last block, the FFT spectrogram).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from _common import WORK, checkpoint, labels_for_peer, machine, timed
from panns_infer.models import build_model

CLIP = 320_000  # 10 s at 32 kHz


def matmul_peak(seconds: float = 2.0) -> tuple[float, float]:
    """float32 GFLOP/s of a 2048^3 matrix product: (oneDNN with packed weights, the fastest
    GEMM on this machine, which panns_infer.fast uses; torch.mm, which is MKL in the CPU wheels
    and takes its AVX2 path on AMD processors)."""
    from panns_infer.fast import Linear

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    packed = Linear(b, None)
    rates = []
    for fn in (lambda: packed(a), lambda: torch.mm(a, b)):
        fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            n += 1
        rates.append(2 * 2048 ** 3 * n / (time.perf_counter() - start) / 1e9)
    return rates[0], rates[1]


def multiply_adds(model: torch.nn.Module, samples: int = CLIP) -> float:
    total = 0

    def hook(mod, inputs, output):
        nonlocal total
        if isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d)):
            if "spectrogram_extractor" in names[mod]:
                return
            total += output.numel() * mod.in_channels // mod.groups * int(np.prod(mod.kernel_size))
        elif isinstance(mod, torch.nn.Linear):
            total += output.numel() * mod.in_features

    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.inference_mode():
        model(torch.zeros(1, samples))
    for h in handles:
        h.remove()
    return total


_PEAK = ("import atexit, resource, sys; atexit.register(lambda: print('PEAK_RSS_KB', "
         "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); ")


def cold_start(ckpt, labels) -> tuple[float, float, float, float]:
    """A new process tagging one 6 s 44.1 kHz file, panns-tag vs the peer's script:
    (our wall s, peer wall s, our peak RSS MB, peer peak RSS MB), medians of 3."""
    import soundfile

    path = WORK / "cold_44k.wav"
    soundfile.write(path, (np.random.default_rng(1).standard_normal(6 * 44100) * 0.1).astype(np.float32), 44100)
    argv = [str(path), "-c", str(ckpt), "--labels", str(labels), "--device", "cpu", "-k", "5"]
    ours = [sys.executable, "-c", _PEAK + f"sys.argv = ['panns-tag'] + {argv!r}; import runpy; "
            "runpy.run_module('panns_infer.cli', run_name='__main__')"]
    peer = [sys.executable, "-c", _PEAK + (
        "import librosa, sys; from panns_inference import AudioTagging;"
        f"a, _ = librosa.core.load({str(path)!r}, sr=32000, mono=True);"
        f"t = AudioTagging(checkpoint_path={str(ckpt)!r}, device='cpu');"
        "print(t.inference(a[None, :])[0].argmax())")]
    walls: dict = {"ours": [], "peer": []}
    peaks: dict = {"ours": [], "peer": []}
    for _ in range(3):
        for name, cmd in (("ours", ours), ("peer", peer)):
            start = time.perf_counter()
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            walls[name].append(time.perf_counter() - start)
            peaks[name].append(int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0]) / 1024)
    return (statistics.median(walls["ours"]), statistics.median(walls["peer"]),
            statistics.median(peaks["ours"]), statistics.median(peaks["peer"]))


def resampling_cost(reps: int, rate: int = 44100) -> tuple[float, float]:
    """(seconds per 10 s of ``rate`` audio resampled to 32 kHz, first-call overhead)."""
    from panns_infer.audio import resample

    x = (np.random.default_rng(2).standard_normal(10 * rate) * 0.1).astype(np.float32)
    start = time.perf_counter()
    resample(x[:4410], rate, 32000)
    first = time.perf_counter() - start
    return timed(lambda: resample(x, rate, 32000), reps), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tag only, no cold start")
    args = parser.parse_args()
    labels = labels_for_peer()
    from panns_inference import AudioTagging, SoundEventDetection

    from panns_infer import AudioTagger

    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(CLIP) * 0.1).astype(np.float32) for _ in range(8)]
    peak, mkl = matmul_peak()
    print(f"machine: {machine()}; float32 matmul peak {peak:.0f} GFLOP/s (oneDNN packed; torch.mm {mkl:.0f})")
    rows = []
    jobs = [("Cnn14", "tag"), ("Cnn14", "embed"), ("Cnn14_DecisionLevelMax", "framewise")]
    for arch, job in jobs[:1] if args.quick else jobs:
        ckpt = checkpoint(arch)
        ours = AudioTagger(ckpt, arch=arch, device="cpu", labels=labels, batch_size=8)
        if job == "framewise":
            peer = SoundEventDetection(checkpoint_path=str(ckpt), device="cpu")
        else:
            peer = AudioTagging(checkpoint_path=str(ckpt), device="cpu")
        macs = multiply_adds(build_model(arch).eval())  # the plain network: ours.model is the fast copy
        limit = peak * 1e9 / (2 * macs)
        for batch in (1, 8):
            work = clips[:batch]
            stacked = np.stack(work)
            # the closures below are called within this iteration only
            if job == "tag":
                ours_fn = lambda: [t.probabilities for t in ours.tag(work)]  # noqa: E731, B023
                peer_fn = lambda: peer.inference(stacked)[0]  # noqa: E731, B023
            elif job == "embed":
                ours_fn = lambda: ours.embed(work)  # noqa: E731, B023
                peer_fn = lambda: peer.inference(stacked)[1]  # noqa: E731, B023
            else:
                ours_fn = lambda: [f.probabilities for f in ours.framewise(work)]  # noqa: E731, B023
                peer_fn = lambda: peer.inference(stacked)  # noqa: E731, B023
            diff = float(np.abs(np.stack(ours_fn()) - np.asarray(peer_fn())).max())
            t_ours, t_peer = [], []
            for _ in range(args.reps):  # alternate so drift hits both
                t_ours.append(timed(ours_fn, 1))
                t_peer.append(timed(peer_fn, 1))
            ours_rate = batch / statistics.median(t_ours)
            peer_rate = batch / statistics.median(t_peer)
            rows.append((f"{arch} {job}", batch, ours_rate, peer_rate, diff, ours_rate / limit))
    print(f"\n{'job':34} {'batch':>5} {'ours clips/s':>12} {'peer clips/s':>12} {'ratio':>6} "
          f"{'x real time':>11} {'max |diff|':>10} {'of limit':>8}")
    for job, batch, ours_rate, peer_rate, diff, frac in rows:
        print(f"{job:34} {batch:>5} {ours_rate:>12.2f} {peer_rate:>12.2f} {ours_rate / peer_rate:>6.2f} "
              f"{ours_rate * 10:>11.1f} {diff:>10.1e} {frac:>8.0%}")
    print(f"(direct-convolution limit for Cnn14: {limit:.2f} clips/s = {peak:.0f} GFLOP/s / "
          f"(2 x {macs / 1e9:.2f} G multiply-adds))")
    per10s, first = resampling_cost(args.reps)
    print(f"\nresampling 10 s of 44.1 kHz to 32 kHz (resampy kaiser_best): {per10s * 1000:.0f} ms; "
          f"first call in a process: {first * 1000:.0f} ms")
    others = {rate: resampling_cost(args.reps, rate)[0] for rate in (16000, 22050, 48000)}
    print("  other rates, per 10 s: " + ", ".join(f"{r / 1000:g} kHz {t * 1000:.0f} ms" for r, t in others.items()))
    if not args.quick:
        ours_wall, peer_wall, ours_rss, peer_rss = cold_start(checkpoint("Cnn14"), labels)
        print(f"cold start, one 6 s 44.1 kHz file: panns-tag {ours_wall:.2f} s, panns_inference script "
              f"{peer_wall:.2f} s, ratio {ours_wall / peer_wall:.2f}; peak RSS {ours_rss:.0f} MB vs {peer_rss:.0f} MB")


if __name__ == "__main__":
    main()
