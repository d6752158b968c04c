"""CUDA path check and GPU throughput (run on a machine with a GPU).

    python bench/gpu_check.py [FIXTURES_DIR]

1. Parity on CUDA: every architecture with goldens, every case, batched, against the
   reference outputs (same tolerances as the CPU tests: 1e-4 probabilities, 1e-3 embeddings).
2. Device handling: "cuda", "cuda:0" honoured; a missing "cuda:N" is a DeviceError.
3. Throughput of tag() / framewise() on 10 s clips (clips/s, after warm-up) for Cnn14 and
   Cnn14_DecisionLevelMax, at each precision, with the largest probability change against
   fp32 over 32 clips.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "fixtures"
sys.path.insert(0, str(FIXTURES))

import make_checkpoint as mc  # noqa: E402
from panns_infer import AudioTagger  # noqa: E402
from panns_infer.errors import DeviceError  # noqa: E402
from panns_infer.models import list_architectures  # noqa: E402


def parity(tmp: Path) -> dict:
    worst = {}
    for arch in list_architectures():
        info = json.loads((FIXTURES / "goldens" / f"{arch}.json").read_text())
        gold = np.load(FIXTURES / "goldens" / f"{arch}.npz")
        waves = np.load(FIXTURES / "goldens" / info["waveforms"])
        _, state = mc.build_state_dict(arch)
        path = tmp / f"{arch}.pth"
        mc.save(state, path, "zenodo")
        tagger = AudioTagger(path, device="cuda", labels=[str(i) for i in range(527)], batch_size=4)
        cases = [c for c, v in info["cases"].items() if "reference_error" not in v]
        outs = tagger.infer([waves[c] for c in cases] + [waves[cases[0]]])
        errs = {}
        for case, out in zip(cases + cases[:1], outs):
            for key in info["cases"][case]["outputs"]:
                err = float(np.abs(out[key] - gold[f"{case}/{key}"]).max())
                errs[key] = max(errs.get(key, 0.0), err)
        ok = errs.get("clipwise_output", 0) <= 1e-4 and errs.get("framewise_output", 0) <= 1e-4 \
            and errs.get("embedding", 0) <= 1e-3
        worst[arch] = {"ok": ok, **{k: f"{v:.2e}" for k, v in errs.items()}}
        print(f"parity cuda {arch:24s} {'OK ' if ok else 'BAD'} {worst[arch]}", flush=True)
        path.unlink()
    return worst


def throughput(tmp: Path) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(320_000) * 0.1 * (1 + i / 8)).astype(np.float32) for i in range(32)]
    for arch, method in (("Cnn14", "tag"), ("Cnn14_DecisionLevelMax", "framewise")):
        _, state = mc.build_state_dict(arch)
        path = tmp / f"{arch}.pth"
        mc.save(state, path, "plain")
        reference = None
        for precision in ("fp32", "tf32", "fp16", "bf16"):
            for batch in ((1, 8, 32) if precision == "fp32" else (8, 32)):
                tagger = AudioTagger(path, arch=arch, device="cuda", labels=[str(i) for i in range(527)],
                                     batch_size=batch, precision=precision)
                fn = getattr(tagger, method)
                work = clips[:batch]
                for _ in range(3):
                    fn(work)
                torch.cuda.synchronize()
                reps = max(3, 64 // batch)
                start = time.perf_counter()
                for _ in range(reps):
                    fn(work)
                torch.cuda.synchronize()
                rate = reps * batch / (time.perf_counter() - start)
                probs = np.stack([r.probabilities for r in fn(clips)])
                if reference is None:
                    reference = probs
                diff = float(np.abs(probs - reference).max())
                out[f"{arch} {method} {precision} batch {batch}"] = {"clips_per_s": round(rate, 1),
                                                                     "max_diff_vs_fp32": diff}
                print(f"throughput {arch} {method} {precision} batch {batch}: {rate:.1f} clips/s "
                      f"({rate * 10:.0f}x real time), max |p - p_fp32| {diff:.1e}", flush=True)
        path.unlink()
    return out


def main() -> None:
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, state = mc.build_state_dict("Cnn6")
        mc.save(state, tmp / "c6.pth", "plain")
        assert AudioTagger(tmp / "c6.pth", device="cuda:0").device == torch.device("cuda:0")
        assert next(AudioTagger(tmp / "c6.pth", device="auto").model.parameters()).is_cuda
        try:
            AudioTagger(tmp / "c6.pth", device=f"cuda:{torch.cuda.device_count()}")
            print("device check: BAD (missing cuda:N accepted)")
        except DeviceError as exc:
            print("device check: OK:", exc)
        results = {"parity": parity(tmp), "throughput": throughput(tmp)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
