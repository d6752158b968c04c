"""torch.compile against panns_infer's CPU fast path (issue #7's optional opt-in).

    python bench/compile_check.py            # Cnn14, batch 8, 10 s clips, CPU

Compiles the plain network with torch.compile (inductor), reports the compile time, the
largest probability difference against the plain network, and clips/s for the compiled,
plain and fast (panns_infer.fast.optimize) networks, each timed over two calls after a
warm-up. No peer needed.
"""

from __future__ import annotations

import time

import torch

from _common import checkpoint, machine
from panns_infer.checkpoint import load_model
from panns_infer.fast import optimize


def rate(fn, x: torch.Tensor) -> float:
    with torch.inference_mode():
        fn(x)
        start = time.perf_counter()
        fn(x)
        fn(x)
    return 2 * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    print(f"machine: {machine()}")
    model = load_model(checkpoint("Cnn14"), arch="Cnn14").eval()
    x = torch.randn(8, 320_000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.inference_mode():
        ref = model(x)["clipwise_output"]
    compiled = torch.compile(model)
    start = time.perf_counter()
    with torch.inference_mode():
        out = compiled(x)["clipwise_output"]
    print(f"torch.compile + first call: {time.perf_counter() - start:.1f} s; "
          f"max |p - p_plain| {float((out - ref).abs().max()):.1e}")
    print(f"clips/s at batch 8: compiled {rate(compiled, x):.2f}, plain {rate(model, x):.2f}, "
          f"fast path {rate(optimize(model), x):.2f}")


if __name__ == "__main__":
    main()
