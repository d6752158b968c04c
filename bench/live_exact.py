"""Live streams in exact chunks: network time per second of audio against offline exact chunks
and the windowed live mode, and how late rows are emitted (in seconds of audio).

    python bench/live_exact.py                       # 120 s, Cnn14 and Cnn14_DecisionLevelMax, hop 1 s
    python bench/live_exact.py --seconds 20 --hops 0.32 1 2 --threads 1

The input (the fixtures' 7 s recording looped) is fed in 0.1 s blocks, with no pacing: the
time is the compute a stream needs, not a real-time run (``stream_latency.py`` measures that).
For each row, the emission delay is the samples that had arrived when its update came out
minus the end of its 0.32 s segment; its maximum is the receptive-field margin plus one hop
(the line latency adds the compute time of one update). All three runs are in one process,
one after another, so their ratios hold on a shared machine better than their absolute times.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _common import FIXTURES, checkpoint, machine

RATE = 32000
BLOCK = RATE // 10


def signal(seconds: float) -> np.ndarray:
    import soundfile

    x, rate = soundfile.read(str(FIXTURES / "audio" / "r9_speech_bell_7s.wav"), dtype="float32", always_2d=True)
    assert rate == RATE
    return np.resize(x.mean(axis=1), int(seconds * RATE)).astype(np.float32)


def run_stream(tagger, x: np.ndarray, **options) -> tuple[float, float]:
    """Seconds of compute, and the largest row emission delay in seconds of audio."""
    arrived = [0]

    def blocks():
        for i in range(0, len(x), BLOCK):
            arrived[0] = min(len(x), i + BLOCK)
            yield x[i:i + BLOCK]

    start = time.perf_counter()
    worst = 0.0
    for u in tagger.stream(blocks(), **options):
        if u.final or u.framewise is None or not len(u.framewise):
            continue
        first_segment_end = (u.first_frame // 32 + 1) * 32 * 320  # the earliest row's segment end
        worst = max(worst, (arrived[0] - first_segment_end) / RATE)
    return time.perf_counter() - start, worst


def measure(arch: str, x: np.ndarray, hop: float) -> dict:
    from panns_infer import AudioTagger
    from panns_infer.stream_exact import plan_exact_live

    tagger = AudioTagger(str(checkpoint(arch, "zenodo")), labels=str(FIXTURES / "class_labels_indices.csv"),
                         device="cpu")
    sed = tagger.model.has_framewise
    tagger.tag(x[:RATE * 4])  # warm-up
    start = time.perf_counter()
    tagger.framewise(x) if sed else tagger.tag(x)
    offline = time.perf_counter() - start
    exact, delay = run_stream(tagger, x, hop=hop, window=10.0, events={} if sed else None)
    windows, window_delay = run_stream(tagger, x, hop=hop, window=10.0, mode="windows",
                                       events={} if sed else None)
    plan = plan_exact_live(tagger._engine, window=10.0, hop=hop)
    seconds = len(x) / RATE
    return {"arch": arch, "hop_s": plan.hop / RATE, "margin_s": plan.chunks.margin / RATE,
            "work_planned": round((plan.hop + 2 * plan.chunks.margin) / plan.hop, 2),
            "offline_s_per_s": round(offline / seconds, 4), "exact_live_s_per_s": round(exact / seconds, 4),
            "windows_live_s_per_s": round(windows / seconds, 4),
            "exact_over_offline": round(exact / offline, 2), "exact_over_windows": round(exact / windows, 2),
            "row_delay_max_s": round(delay, 3) if sed else None,
            "row_delay_bound_s": round(plan.delay / RATE, 3),
            "windows_row_delay_max_s": round(window_delay, 3) if sed else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="input length (default: 120)")
    parser.add_argument("--hops", type=float, nargs="+", default=[1.0], help="live hops to try (default: 1)")
    parser.add_argument("--archs", nargs="+", default=["Cnn14", "Cnn14_DecisionLevelMax"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 steadies the ratios on "
                        "a busy machine, where small passes wait for the second thread)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    x = signal(args.seconds)
    print(json.dumps({"machine": machine(), "input_seconds": args.seconds}))
    for arch in args.archs:
        for hop in args.hops:
            print(json.dumps(measure(arch, x, hop)), flush=True)


if __name__ == "__main__":
    main()
