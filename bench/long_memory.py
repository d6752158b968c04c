"""Long recordings: peak memory and time, and the work ratio of exact chunks.

    python bench/long_memory.py                 # 60 min through panns_infer (chunks, windows), 10 min through the peer
    python bench/long_memory.py --minutes 5 60 --peer-minutes 2 --no-windows   # memory flat from 5 to 60 min?
    python bench/long_memory.py --work-minutes 10 --minutes 0 --peer-minutes 0  # the work ratio only
    python bench/long_memory.py --minutes 120 --format m4a --arch Cnn6 --peer-minutes 0 --no-windows  # 2 h podcast
    python bench/long_memory.py --minutes 120 --format flac --arch Cnn6 --peer-minutes 0 --no-windows  # as FLAC

Each measurement runs in a fresh process (peak RSS from getrusage). panns_infer runs
Cnn14_DecisionLevelMax (``--arch``; a clip-level model runs tag() only) on CPU: tag() + framewise()
+ events() on a 32 kHz mono WAV (or FLAC, or M4A: AAC at 64 kb/s through PyAV), by
default (exact chunks: the whole-file result) and with 10 s windows (``window=10.0``, the
behaviour before exact chunks). The peer runs its SoundEventDetection on the same
checkpoint, after librosa.load of the whole file, as its README shows; give it the longest
input it can hold. The work ratio is the network time of one long recording divided by the
network time of the same audio as separate 10 s clips, both measured in one process
(the target is <= 1.25). Needs: pip install panns-inference torchlibrosa librosa
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import soundfile

from _common import PEAK_RSS, WORK, checkpoint, labels_for_peer, machine, run_child

OURS = PEAK_RSS + """
import sys, json, time
from panns_infer import AudioTagger
path, ckpt, labels, arch = sys.argv[1:5]
t0 = time.perf_counter()
options = json.loads(sys.argv[5])
tagger = AudioTagger(ckpt, arch=arch, device="cpu", labels=labels, batch_size=2, **options)
tags = tagger.tag(path, top_k=5)
result = {"top": tags.labels[0]}
if tagger.model.has_framewise:
    fw = tagger.framewise(path)
    result.update(frames=fw.num_frames, events=len(fw.events(threshold=0.5)))
print(json.dumps({"peak_rss_mb": peak_mb(), "seconds": time.perf_counter() - t0, **result}))
"""

WORK_RATIO = PEAK_RSS + """
import sys, json, time
import numpy as np
from panns_infer import AudioTagger
ckpt, labels, minutes = sys.argv[1], sys.argv[2], float(sys.argv[3])
tagger = AudioTagger(ckpt, arch="Cnn14_DecisionLevelMax", device="cpu", labels=labels, batch_size=2)
rng = np.random.default_rng(0)
x = (rng.standard_normal(int(minutes * 60 * 32000)) * 0.05).astype(np.float32)
clips = [x[i:i + 320000] for i in range(0, len(x), 320000)]
tagger.infer(clips[:2])  # warm-up
t0 = time.perf_counter(); tagger.infer(clips); t_clips = time.perf_counter() - t0
t0 = time.perf_counter(); tagger.infer(x); t_long = time.perf_counter() - t0
plan = tagger._engine.plan
print(json.dumps({"long_s": t_long, "clips_s": t_clips, "ratio": t_long / t_clips, "clips": len(clips),
                  "chunk_work": plan.work, "peak_rss_mb": peak_mb()}))
"""

PEER = PEAK_RSS + """
import sys, json, time
import librosa
from panns_inference import SoundEventDetection
path, ckpt = sys.argv[1:3]
t0 = time.perf_counter()
audio, _ = librosa.core.load(path, sr=32000, mono=True)
sed = SoundEventDetection(checkpoint_path=ckpt, device="cpu")
framewise = sed.inference(audio[None, :])
print(json.dumps({"peak_rss_mb": peak_mb(), "seconds": time.perf_counter() - t0, "frames": framewise.shape[1]}))
"""


def _noise_blocks(minutes: float):
    rng = np.random.default_rng(0)
    for _ in range(int(minutes * 6)):
        block = rng.standard_normal(320_000) * 0.05
        block[:32000] += 0.4 * np.sin(2 * np.pi * 880 * np.arange(32000) / 32000)
        yield block.astype(np.float32)


def make_file(minutes: float, fmt: str = "wav") -> str:
    """Noise with a tone every 10 s, 32 kHz mono, ``minutes`` long, written once."""
    path = WORK / f"noise_{minutes:g}min_32k.{fmt}"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        partial = path.with_name("partial_" + path.name)
        if fmt == "m4a":
            from _containers import write_container

            write_container(partial, _noise_blocks(minutes), 32000, bitrate=64_000)
        else:
            with soundfile.SoundFile(partial, "w", 32000, 1, subtype="PCM_16", format=fmt.upper()) as f:
                for block in _noise_blocks(minutes):
                    f.write(block)
        partial.replace(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[60.0], help="0 skips panns_infer")
    parser.add_argument("--peer-minutes", type=float, default=10.0, help="0 skips the peer")
    parser.add_argument("--format", default="wav", choices=("wav", "flac", "m4a"), help="file format of our runs")
    parser.add_argument("--arch", default="Cnn14_DecisionLevelMax", help="checkpoint of our runs")
    parser.add_argument("--no-windows", action="store_true", help="skip the 10 s windows run")
    parser.add_argument("--work-minutes", type=float, default=0.0,
                        help="also measure the work ratio on this many minutes (in memory)")
    args = parser.parse_args()
    ckpt = checkpoint(args.arch)
    labels = labels_for_peer()
    print(f"machine: {machine()}")
    results: dict = {}
    modes = {"chunks": {}} if args.no_windows else {"chunks": {}, "windows": {"window": 10.0}}
    for minutes in [m for m in args.minutes if m > 0]:
        for mode, options in modes.items():
            ours = run_child(OURS, make_file(minutes, args.format), str(ckpt), str(labels), args.arch,
                             json.dumps(options))
            results[f"{mode}_{minutes:g}min"] = ours
            what = (f"tag + framewise + events; {ours['frames']} frames, {ours['events']} events"
                    if "frames" in ours else "tag")
            print(f"panns_infer {mode:8s} {minutes:5g} min {args.format} {args.arch}: peak RSS "
                  f"{ours['peak_rss_mb']:7.0f} MB, {ours['seconds']:6.0f} s ({what})", flush=True)
    if args.work_minutes:
        work = run_child(WORK_RATIO, str(ckpt), str(labels), str(args.work_minutes))
        results["work_ratio"] = work
        print(f"work ratio, {args.work_minutes:g} min: one recording {work['long_s']:.1f} s / "
              f"{work['clips']} separate 10 s clips {work['clips_s']:.1f} s = {work['ratio']:.3f} "
              f"(chunk overlap alone: {work['chunk_work']:.3f})", flush=True)
    if args.peer_minutes:
        peer = run_child(PEER, make_file(args.peer_minutes), str(ckpt))
        results["peer"] = peer
        print(f"panns_inference   {args.peer_minutes:5g} min: peak RSS {peer['peak_rss_mb']:7.0f} MB, "
              f"{peer['seconds']:6.0f} s (load + framewise)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
