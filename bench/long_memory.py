"""Peak memory on long recordings: panns_infer streams, panns_inference loads everything.

    python bench/long_memory.py                 # 60-minute file through panns_infer, 10-minute through the peer
    python bench/long_memory.py --minutes 5 --peer-minutes 2     # a quicker look
    python bench/long_memory.py --minutes 120 --format m4a --arch Cnn6 --peer-minutes 0   # 2 h podcast, tags
    python bench/long_memory.py --minutes 120 --format flac --arch Cnn6 --peer-minutes 0  # the same as FLAC

Each measurement runs in a fresh process (peak RSS from getrusage). panns_infer runs
Cnn14_DecisionLevelMax on CPU: tag() + framewise() + events() on a 32 kHz mono WAV (or FLAC,
or M4A: AAC at 64 kb/s through PyAV; ``--arch`` of a clip-level model runs tag() only).
The peer runs its SoundEventDetection on the same checkpoint, after librosa.load of the
whole file, as its README shows. Needs: pip install panns-inference torchlibrosa librosa
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
tagger = AudioTagger(ckpt, arch=arch, device="cpu", labels=labels, batch_size=2)
tags = tagger.tag(path, top_k=5)
result = {"top": tags.labels[0]}
if tagger._net.has_framewise:
    fw = tagger.framewise(path)
    result.update(frames=fw.num_frames, events=len(fw.events(threshold=0.5)))
print(json.dumps({"peak_rss_mb": peak_mb(), "seconds": time.perf_counter() - t0, **result}))
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
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--peer-minutes", type=float, default=10.0, help="0 skips the peer")
    parser.add_argument("--format", default="wav", choices=("wav", "flac", "m4a"), help="file format of our run")
    parser.add_argument("--arch", default="Cnn14_DecisionLevelMax", help="checkpoint of our run")
    args = parser.parse_args()
    ckpt = checkpoint(args.arch)
    labels = labels_for_peer()
    print(f"machine: {machine()}")
    ours = run_child(OURS, make_file(args.minutes, args.format), str(ckpt), str(labels), args.arch)
    what = (f"tag + framewise + events; {ours['frames']} frames, {ours['events']} events" if "frames" in ours
            else "tag")
    print(f"panns_infer      {args.minutes:5g} min {args.format} {args.arch}: peak RSS "
          f"{ours['peak_rss_mb']:7.0f} MB, {ours['seconds']:6.0f} s ({what})")
    if args.peer_minutes:
        peer = run_child(PEER, make_file(args.peer_minutes), str(ckpt))
        print(f"panns_inference  {args.peer_minutes:5g} min: peak RSS {peer['peak_rss_mb']:7.0f} MB, "
              f"{peer['seconds']:6.0f} s (load + framewise)")
        print(json.dumps({"ours": ours, "peer": peer}))


if __name__ == "__main__":
    main()
