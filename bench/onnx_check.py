"""onnxruntime on the exported Cnn14 against panns_infer's CPU fast path.

    python bench/onnx_check.py               # Cnn14, batch 1 and 8, 10 s clips, CPU

Exports the fixture Cnn14 with panns_infer.export.to_onnx (checked against PyTorch), then
times onnxruntime (CPUExecutionProvider, default threads) and AudioTagger.infer on the same
clips, each the median of 3 calls after a warm-up, and prints the largest probability
difference. Needs: pip install 'panns-infer[onnx]'.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from _common import checkpoint, machine, timed
from panns_infer import AudioTagger
from panns_infer.export import to_onnx


def main() -> None:
    import onnxruntime as ort

    print(f"machine: {machine()}; onnxruntime {ort.__version__}")
    ckpt = checkpoint("Cnn14")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = to_onnx(ckpt, Path(tmp) / "cnn14.onnx", arch="Cnn14")
        print(f"export + check: {time.perf_counter() - start:.1f} s")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        tagger = AudioTagger(ckpt, arch="Cnn14", device="cpu", labels=[str(i) for i in range(527)], batch_size=8)
        clips = (np.random.default_rng(0).standard_normal((8, 320_000)) * 0.1).astype(np.float32)
        for batch in (1, 8):
            x = clips[:batch]
            # the lambdas are timed at once, within this iteration
            t_ort = timed(lambda: session.run(["clipwise_output"], {"waveform": x}), 3)  # noqa: B023
            t_ours = timed(lambda: tagger.infer(list(x)), 3)  # noqa: B023
            diff = float(np.abs(session.run(["clipwise_output"], {"waveform": x})[0]
                                - np.stack([r["clipwise_output"] for r in tagger.infer(list(x))])).max())
            print(f"batch {batch}: onnxruntime {batch / t_ort:.2f} clips/s, panns_infer {batch / t_ours:.2f} clips/s, "
                  f"max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
