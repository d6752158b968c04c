"""Peak memory of ``panns-tag --events`` on long files, and a loaded tagger's resident memory.

    python bench/memory.py                          # 5- and 20-minute files, Cnn14_DecisionLevelMax
    python bench/memory.py --minutes 1 --quick      # a quick look
    python bench/memory.py --compare-to /work/main  # also assert the events equal that checkout's, byte for byte

Peak RSS comes from ``/usr/bin/time -v`` (``apt-get install time``) around
``python -m panns_infer.cli long.flac --checkpoint CKPT --events`` with default settings, on
fixture checkpoints in the released layout (../shared/fixtures). The loaded tagger's resident
memory is the RSS a fresh process gains from ``AudioTagger(...)`` after ``import panns_infer``,
compared with the bytes of the checkpoint's weights; ``held_mib`` is the bytes of the tensors it
holds (``panns_infer.fast.held_bytes``: parameters, buffers and fast forms).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

from _common import ROOT, WORK, checkpoint

RESIDENT = r"""
import gc, json, sys
import torch
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * __import__("os").sysconf("SC_PAGE_SIZE")
from panns_infer import AudioTagger
from panns_infer.checkpoint import read_state_dict
weights = sum(v.numel() * v.element_size() for v in read_state_dict(sys.argv[1]).values())
gc.collect()
before = rss()
tagger = AudioTagger(sys.argv[1], device="cpu", optimize=sys.argv[2] == "fast")
gc.collect()
from panns_infer.fast import held_bytes
print(json.dumps({"weights_mib": weights / 2**20, "resident_mib": (rss() - before) / 2**20,
                  "held_mib": held_bytes(tagger.model) / 2**20}))
"""


def long_flac(minutes: float) -> Path:
    path = WORK / f"noise_{minutes:g}min_32k.flac"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        with soundfile.SoundFile(path, "w", 32000, 1, subtype="PCM_16") as f:
            for k in range(int(minutes * 6)):
                block = rng.standard_normal(320_000) * 0.05
                block[: 32000 * (k % 5)] += 0.4 * np.sin(2 * np.pi * 880 * np.arange(32000 * (k % 5)) / 32000)
                f.write(block.astype(np.float32))
    return path


def peak_of_cli(code_root: Path, audio: Path, ckpt: Path) -> tuple[float, bytes]:
    """Peak RSS (MiB) and stdout of ``panns-tag AUDIO --checkpoint CKPT --events`` run from ``code_root``."""
    env = dict(os.environ, PYTHONPATH=str(code_root))
    labels = ROOT / "panns_infer" / "data" / "class_labels_indices.csv"  # older checkouts would download it
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "panns_infer.cli", str(audio), "--checkpoint", str(ckpt),
           "--events", "--no-progress", "--labels", str(labels)]
    proc = subprocess.run(cmd, capture_output=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode()[-3000:])
    kb = int(re.search(rb"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return kb / 1024, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 20])
    parser.add_argument("--arch", default="Cnn14_DecisionLevelMax")
    parser.add_argument("--resident-archs", nargs="+", default=["Cnn14", "Cnn14_DecisionLevelMax", "Cnn14_16k"])
    parser.add_argument("--compare-to", type=Path, help="another checkout whose events must be byte-identical")
    parser.add_argument("--quick", action="store_true", help="skip the resident-memory table")
    args = parser.parse_args()
    if shutil.which("/usr/bin/time") is None:
        sys.exit("bench: /usr/bin/time is missing (apt-get install time)")
    ckpt = checkpoint(args.arch, "zenodo")
    for minutes in args.minutes:
        audio = long_flac(minutes)
        peak, out = peak_of_cli(ROOT, audio, ckpt)
        row = {"arch": args.arch, "minutes": minutes, "peak_rss_mib": round(peak, 1),
               "events_sha256": hashlib.sha256(out).hexdigest()[:16]}
        if args.compare_to:
            other_peak, other = peak_of_cli(args.compare_to, audio, ckpt)
            assert other == out, f"events differ from {args.compare_to}'s"
            row.update(other_peak_rss_mib=round(other_peak, 1), identical=True)
        print(json.dumps(row), flush=True)
    if args.quick:
        return
    for arch in args.resident_archs:
        for mode in ("fast", "plain"):
            proc = subprocess.run([sys.executable, "-c", RESIDENT, str(checkpoint(arch, "zenodo")), mode],
                                  capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps({"arch": arch, "optimize": mode == "fast", "weights_mib": round(res["weights_mib"], 1),
                              "resident_mib": round(res["resident_mib"], 1), "held_mib": round(res["held_mib"], 1),
                              "ratio": round(res["resident_mib"] / res["weights_mib"], 2)}), flush=True)


if __name__ == "__main__":
    main()
