"""Live latency: ``ffmpeg -re`` paces a recording into ``panns-tag --stream -``; how long after a
hop's last sample enters the pipe does its JSON line appear?

In exact mode (``--stream-mode exact``, the default) a line is due when the receptive-field
margin past its ``end`` has arrived, so its latency is counted from that sample: the compute
time of one update. Its rows were final ``margin`` to ``margin + hop`` after their audio (the
``row_latency_max_s`` figure adds the worst compute time).

    python bench/stream_latency.py                          # 2-minute input, Cnn14 and Cnn14_DecisionLevelMax, hop 1 s
    python bench/stream_latency.py --seconds 20             # a quicker look
    python bench/stream_latency.py --modes exact            # the default mode only

The CLI starts first (with ``--debug``, whose log says when the stream starts reading: the model
is loaded), then ffmpeg. The script sits between ffmpeg and the CLI: it copies ffmpeg's real-time output into the
CLI's standard input, noting when each byte was written, and timestamps each window line the
CLI prints. A window ending at sample ``n`` has latency ``line time - time sample n was
written``. The input is the fixtures' 7 s recording looped to ``--seconds``. Reports the
median, 95th percentile and maximum per checkpoint, and the model time per window the CLI
needs (from a separate offline timing), on this machine's CPU.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from _common import FIXTURES, ROOT, WORK, checkpoint, machine

RATE = 32000


def make_input(seconds: float) -> str:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"stream_input_{int(seconds)}s.wav"
    if not path.exists():
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i",
                        str(FIXTURES / "audio" / "r9_speech_bell_7s.wav"), "-t", str(seconds), "-ac", "1",
                        "-ar", str(RATE), str(path)], check=True)
    return str(path)


def margin_samples(arch: str, mode: str) -> int:
    """Samples past a line's ``end`` that must arrive before it can be printed (the
    receptive-field margin in exact mode, none for windows)."""
    if mode == "windows":
        return 0
    from panns_infer.chunks import ChunkPlan
    from panns_infer.models import build_model

    return ChunkPlan.for_model(build_model(arch), RATE).margin


def measure(arch: str, audio: str, hop: float, events: bool, mode: str = "exact") -> dict:
    ckpt = checkpoint(arch, "zenodo")
    cmd = [sys.executable, "-m", "panns_infer.cli", "--stream", "-", "--raw", f"s16le:{RATE}", "-c", str(ckpt),
           "--labels", str(FIXTURES / "class_labels_indices.csv"), "--format", "jsonl", "--hop", str(hop),
           "--device", "cpu", "--debug", "--stream-mode", mode] + (["--events"] if events else [])
    margin = margin_samples(arch, mode)
    cli = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    ready = threading.Event()

    def watch() -> None:  # the model is loaded when the stream starts reading: start pacing then
        assert cli.stderr is not None
        for line in cli.stderr:
            if b"live stream:" in line:
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    ready.wait()
    ffmpeg = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-i", audio, "-f", "s16le", "-ac", "1",
                               "-ar", str(RATE), "-"], stdout=subprocess.PIPE)
    written: list = []  # (bytes written so far, time)
    lines: list = []    # (time, record)

    def relay() -> None:
        total = 0
        assert ffmpeg.stdout is not None and cli.stdin is not None
        while True:
            data = ffmpeg.stdout.read1(4096)
            if not data:
                break
            cli.stdin.write(data)
            cli.stdin.flush()
            total += len(data)
            written.append((total, time.perf_counter()))
        cli.stdin.close()

    def collect() -> None:
        assert cli.stdout is not None
        for line in cli.stdout:
            lines.append((time.perf_counter(), json.loads(line)))

    threads = [threading.Thread(target=relay), threading.Thread(target=collect)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ffmpeg.wait()
    cli.wait()
    totals = [w[0] for w in written]
    latencies = []
    for when, record in lines:
        if record.get("type") != "window" or record.get("final"):
            continue
        need = (int(round(record["end"] * RATE)) + margin) * 2  # bytes that hold the sample that made it due
        k = bisect.bisect_left(totals, need)
        if k < len(written):
            latencies.append(when - written[k][1])
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    out = {"arch": arch, "mode": mode, "windows": len(latencies), "median_s": round(statistics.median(latencies), 3),
           "p95_s": round(p95, 3), "max_s": round(latencies[-1], 3), "exit": cli.returncode}
    if mode == "exact":  # a row waits for the margin and at most one hop, then the compute
        out["row_latency_max_s"] = round((margin + int(hop * RATE) // 10240 * 10240) / RATE + latencies[-1], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="input length (default: 120)")
    parser.add_argument("--hop", type=float, default=1.0, help="--hop of the CLI (default: 1)")
    parser.add_argument("--archs", nargs="+", default=["Cnn14", "Cnn14_DecisionLevelMax"])
    parser.add_argument("--modes", nargs="+", default=["exact", "windows"], choices=["exact", "windows"],
                        help="--stream-mode values to measure (default: both)")
    args = parser.parse_args()
    audio = make_input(args.seconds)
    print(json.dumps({"machine": machine(), "input_seconds": args.seconds, "hop": args.hop}))
    for arch in args.archs:
        for mode in args.modes:
            result = measure(arch, audio, args.hop, events=arch != "Cnn14", mode=mode)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
