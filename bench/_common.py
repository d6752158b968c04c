"""Shared helpers of the benchmark scripts (not part of the package).

The scripts compare panns_infer with its peer, panns_inference, on the same deterministic
checkpoint (built from ../shared/fixtures, since real weights cannot be downloaded here).
They need, in the same environment:  pip install panns-inference torchlibrosa librosa
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
WORK = Path(os.environ.get("PANNS_BENCH_DIR", Path(tempfile.gettempdir()) / "panns_bench"))


def require_fixtures() -> None:
    if not (FIXTURES / "make_checkpoint.py").is_file():
        sys.exit(f"bench: parity fixtures not found at {FIXTURES}")


def checkpoint(arch: str, layout: str = "plain") -> Path:
    """A fixture checkpoint of ``arch``, built once into the bench folder.

    The plain layout ({'model': state_dict}) is used because panns_inference calls
    torch.load with the default weights_only=True, which refuses the released layout.
    """
    require_fixtures()
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{arch}_mAP=0.000_{layout}.pth"
    if not path.exists():
        sys.path.insert(0, str(FIXTURES))
        import make_checkpoint as mc

        _, state = mc.build_state_dict(arch)
        mc.save(state, path, layout)
    return path


def labels_for_peer() -> Path:
    """panns_inference downloads the label CSV with wget at import unless it is there (and
    a failed wget leaves an empty file behind, which we replace)."""
    target = Path.home() / "panns_data" / "class_labels_indices.csv"
    if not target.exists() or target.stat().st_size < 1000:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "class_labels_indices.csv", target)
    return target


def run_child(code: str, *args: str, timeout: float = 3600) -> dict:
    """Run Python ``code`` in a fresh process; it prints one JSON line last. Adds the
    child's peak RSS (MB) and wall time."""
    import time

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.setdefault("wall_s", wall)
    return result


PEAK_RSS = "import resource; peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024"


def timed(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def peak_rss_self_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
