"""Peak memory on long recordings: panns_infer streams, panns_inference loads everything.

    python bench/long_memory.py                 # 60-minute file through panns_infer, 10-minute through the peer
    python bench/long_memory.py --minutes 5 --peer-minutes 2     # a quicker look

Each measurement runs in a fresh process (peak RSS from getrusage). panns_infer runs
Cnn14_DecisionLevelMax on CPU: tag() + framewise() + events() on a 32 kHz mono WAV.
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
path, ckpt, labels = sys.argv[1:4]
t0 = time.perf_counter()
tagger = AudioTagger(ckpt, arch="Cnn14_DecisionLevelMax", device="cpu", labels=labels, batch_size=2)
tags = tagger.tag(path, top_k=5)
fw = tagger.framewise(path)
events = fw.events(threshold=0.5)
print(json.dumps({"peak_rss_mb": peak_mb(), "seconds": time.perf_counter() - t0, "frames": fw.num_frames,
                  "events": len(events), "top": tags.labels[0]}))
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


def make_wav(minutes: float) -> str:
    path = WORK / f"noise_{minutes:g}min_32k.wav"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        with soundfile.SoundFile(path, "w", 32000, 1, subtype="PCM_16") as f:
            for _ in range(int(minutes * 6)):
                block = rng.standard_normal(320_000) * 0.05
                block[:32000] += 0.4 * np.sin(2 * np.pi * 880 * np.arange(32000) / 32000)
                f.write(block.astype(np.float32))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--peer-minutes", type=float, default=10.0, help="0 skips the peer")
    args = parser.parse_args()
    ckpt = checkpoint("Cnn14_DecisionLevelMax")
    labels = labels_for_peer()
    print(f"machine: {machine()}")
    ours = run_child(OURS, make_wav(args.minutes), str(ckpt), str(labels))
    print(f"panns_infer      {args.minutes:5g} min: peak RSS {ours['peak_rss_mb']:7.0f} MB, "
          f"{ours['seconds']:6.0f} s (tag + framewise + events; {ours['frames']} frames, {ours['events']} events)")
    if args.peer_minutes:
        peer = run_child(PEER, make_wav(args.peer_minutes), str(ckpt))
        print(f"panns_inference  {args.peer_minutes:5g} min: peak RSS {peer['peak_rss_mb']:7.0f} MB, "
              f"{peer['seconds']:6.0f} s (load + framewise)")
        print(json.dumps({"ours": ours, "peer": peer}))


if __name__ == "__main__":
    main()
