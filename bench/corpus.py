"""Corpus throughput: panns-tag against a plain loop of librosa.load + panns_inference.

    python bench/corpus.py                          # 150 files, Cnn14, CPU (several minutes)
    python bench/corpus.py --files 10               # a quick check that everything runs
    python bench/corpus.py --device cuda --files 200
    python bench/corpus.py --mixed                  # a quarter of the files as M4A (AAC) and WebM (Opus)

A corpus of generated files (WAV, FLAC and OGG; 16, 22.05, 32, 44.1 and 48 kHz; mono and
stereo; 1 to 30 s; with ``--mixed`` every fourth file is M4A or WebM instead, encoded with
PyAV) is written to a temporary folder. Each run is a fresh process on the same
files and the same deterministic Cnn14 checkpoint (../shared/fixtures, plain layout):

* ``panns-tag``: the command line, ``DIR --recursive --output tags.jsonl`` (JSONL records,
  fsynced per batch; default decoding threads); its time includes loading the model;
* ``tag_corpus workers=W``: the library call behind it, with W decoding threads (0: decode in
  the network's thread, no overlap);
* ``tagger.tag() loop``: one ``AudioTagger.tag(path)`` per file (no overlap, no batching
  across files);
* ``... whole_up_to=0``: files over 10 s run as 10 s windows with 50% overlap (by default
  files up to 30 s run whole, as the reference and the peer run them; windows are up to ~1.7x
  that network work for a 30 s file);
* ``panns_inference``: ``librosa.load(path, sr=32000)`` then ``AudioTagging.inference`` per
  file, as its README shows (librosa resamples with soxr, not kaiser_best).

files/s and audio-s/s count the time after the model is loaded (for panns-tag: the whole
``main()`` call). Needs: pip install panns-inference torchlibrosa librosa
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from _common import PEAK_RSS, checkpoint, labels_for_peer, machine, run_child

RATES = (16000, 22050, 32000, 44100, 48000)
FORMATS = ("wav", "flac", "ogg")

CLI = PEAK_RSS + """
import sys, json, time
from panns_infer.cli import main
t0 = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "load_s": None, "run_s": time.perf_counter() - t0, "peak_rss_mb": peak_mb()}))
"""

OURS = PEAK_RSS + """
import sys, json, time
from panns_infer import AudioTagger
from panns_infer.corpus import tag_corpus
folder, ckpt, labels, device, mode, value = sys.argv[1:7]
files = sorted(str(p) for p in __import__("pathlib").Path(folder).iterdir())
t0 = time.perf_counter()
tagger = AudioTagger(ckpt, labels=labels, device=device, whole_up_to=0 if mode == "windows" else 30.0)
load = time.perf_counter() - t0
t0 = time.perf_counter()
if mode == "loop":
    done = sum(1 for f in files if tagger.tag(f) is not None)
else:
    done = sum(len(b) for b in tag_corpus(tagger, files, workers=None if value == "default" else int(value)))
print(json.dumps({"files": done, "load_s": load, "run_s": time.perf_counter() - t0, "peak_rss_mb": peak_mb()}))
"""

PEER = PEAK_RSS + """
import sys, json, time
import librosa
from panns_inference import AudioTagging
folder, ckpt, device = sys.argv[1:4]
files = sorted(str(p) for p in __import__("pathlib").Path(folder).iterdir())
t0 = time.perf_counter()
at = AudioTagging(checkpoint_path=ckpt, device=device)
load = time.perf_counter() - t0
t0 = time.perf_counter()
for f in files:
    audio, _ = librosa.load(f, sr=32000, mono=True)
    clipwise, embedding = at.inference(audio[None, :])
print(json.dumps({"files": len(files), "load_s": load, "run_s": time.perf_counter() - t0, "peak_rss_mb": peak_mb()}))
"""


def make_corpus(folder: Path, count: int, seed: int = 0, mixed: bool = False) -> float:
    """Write ``count`` files; return their total duration in seconds. With ``mixed``, every
    fourth file is an M4A or a WebM (alternately)."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(count):
        rate, channels = RATES[i % len(RATES)], 1 + (i // len(RATES)) % 2
        seconds = float(rng.uniform(1.0, 30.0))
        n = int(seconds * rate)
        t = np.arange(n) / rate
        x = 0.05 * rng.standard_normal((n, channels))
        x[:, 0] += 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
        if mixed and i % 4 == 3:
            from _containers import write_container

            write_container(folder / f"clip{i:04d}.{('m4a', 'webm')[(i // 4) % 2]}", x.astype(np.float32), rate)
        else:
            soundfile.write(folder / f"clip{i:04d}.{FORMATS[i % len(FORMATS)]}", x.astype(np.float32), rate)
        total += n / rate
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=150, help="corpus size (default: 150)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--no-peer", action="store_true", help="skip panns_inference")
    parser.add_argument("--mixed", action="store_true", help="a quarter of the files as M4A and WebM")
    args = parser.parse_args()

    ckpt = str(checkpoint("Cnn14"))  # the peer builds Cnn14 only
    labels = str(labels_for_peer())
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="panns_corpus_") as tmp:
        folder = Path(tmp) / "audio"
        folder.mkdir()
        audio_s = make_corpus(folder, args.files, mixed=args.mixed)
        print(f"corpus: {args.files} files, {audio_s:.0f} s of audio, in {folder}")
        runs = [
            ("panns-tag (--output jsonl)", CLI, [str(folder), "--recursive", "-c", ckpt, "--labels", labels,
                                                 "--device", args.device, "-o", str(Path(tmp) / "tags.jsonl"),
                                                 "--no-progress"]),
            ("tag_corpus workers=default", OURS, [str(folder), ckpt, labels, args.device, "corpus", "default"]),
            ("tag_corpus workers=0", OURS, [str(folder), ckpt, labels, args.device, "corpus", "0"]),
            ("tagger.tag() loop", OURS, [str(folder), ckpt, labels, args.device, "loop", "-"]),
            ("tag_corpus workers=1", OURS, [str(folder), ckpt, labels, args.device, "corpus", "1"]),
            ("tag_corpus whole_up_to=0 (10 s windows)", OURS,
             [str(folder), ckpt, labels, args.device, "windows", "default"]),
        ]
        if not args.no_peer:
            runs.append(("panns_inference + librosa.load", PEER, [str(folder), ckpt, args.device]))
        rows = []
        for name, code, argv in runs:
            result = run_child(code, *argv)
            if result.get("code") not in (None, 0):
                raise SystemExit(f"{name} exited with {result['code']}")
            rows.append((name, result))
            print(f"  done: {name}: {json.dumps(result)}", flush=True)
        lines = (Path(tmp) / "tags.jsonl").read_text().splitlines()
        assert len(lines) == args.files and all("error" not in json.loads(line) for line in lines)

    mixed = " (a quarter M4A/WebM)" if args.mixed else ""
    print(f"\n{args.files} files{mixed}, {audio_s:.0f} s of audio, Cnn14, device {args.device}\n")
    print("| run | load s | run s | files/s | audio-s/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        load = "-" if r["load_s"] is None else f"{r['load_s']:.1f}"
        print(f"| {name} | {load} | {r['run_s']:.1f} | {args.files / r['run_s']:.2f} | "
              f"{audio_s / r['run_s']:.0f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
