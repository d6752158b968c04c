"""Per-layer CPU timing of Cnn14's convolutions, each run every way panns_infer.fast knows.

    python bench/profile_layers.py                 # batch 1 and 8, 10 s clips
    python bench/profile_layers.py --batches 1 --reps 5

For each convolution (batch norm folded in, ReLU included) at the input shape it sees on a
10 s clip, prints milliseconds and GFLOP/s (2 x direct multiply-adds over the 'same' output,
padding taps counted as work, so the narrow and Winograd methods, which do less work, can
exceed the matrix-product rate) for: oneDNN in NCHW, oneDNN channels-last, im2col + GEMM,
Winograd F(2x2, 3x3), and, on maps at most two bins wide, GEMM without the padding taps. ``*``
marks the method panns_infer.fast picks. Methods alternate within each repetition, so
background load hits all of them; each figure is a median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import checkpoint, machine
from panns_infer.checkpoint import load_model
from panns_infer.fast import METHODS, FastConv

CLIP = 320_000


def conv_inputs(model: torch.nn.Module, samples: int) -> list[tuple[str, torch.nn.Conv2d, torch.nn.BatchNorm2d, tuple]]:
    """(name, conv, bn, input shape at batch 1) of every conv block convolution."""
    shapes: dict = {}
    hooks = []
    for name, mod in model.named_modules():
        if name.startswith("conv_block") and isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: shapes.__setitem__(name, tuple(i[0].shape))))
    with torch.inference_mode():
        model(torch.zeros(1, samples))
    for h in hooks:
        h.remove()
    rows = []
    for name, shape in shapes.items():
        block, conv = name.split(".")
        parent = getattr(model, block)
        rows.append((name, getattr(parent, conv), getattr(parent, conv.replace("conv", "bn")), shape))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    model = load_model(checkpoint("Cnn14"), arch="Cnn14").eval()
    layers = conv_inputs(model, CLIP)
    methods = METHODS
    for batch in args.batches:
        print(f"\nbatch {batch}: ms (GFLOP/s)")
        print(f"{'layer':20} {'input':>22} " + " ".join(f"{m:>17}" for m in methods))
        totals = {m: 0.0 for m in methods} | {"picked": 0.0}
        for name, conv, bn, shape in layers:
            shape = (batch,) + shape[1:]
            picked = FastConv(conv, bn, width=shape[3]).method
            runs = {m: FastConv(conv, bn, width=shape[3], method=m) for m in methods
                    if m != "narrow" or shape[3] <= conv.kernel_size[0] // 2 + 1}
            x = torch.randn(shape)
            flops = 2 * batch * shape[2] * shape[3] * conv.out_channels * conv.in_channels * conv.kernel_size[0] ** 2
            times: dict = {m: [] for m in runs}
            with torch.inference_mode():
                for layer in runs.values():
                    layer(x)
                for _ in range(args.reps):
                    for m, layer in runs.items():
                        start = time.perf_counter()
                        layer(x)
                        times[m].append(time.perf_counter() - start)
            cells = []
            for m in methods:
                if m not in times:
                    cells.append(f"{'-':>17}")
                    continue
                t = statistics.median(times[m])
                totals[m] += t
                mark = "*" if m == picked else " "
                cells.append(f"{t * 1e3:8.1f} ({flops / t / 1e9:5.0f}){mark}")
            totals["picked"] += statistics.median(times[picked])
            print(f"{name:20} {str(shape):>22} " + " ".join(cells))
        print(f"{'total':20} {'':>22} " + " ".join(f"{totals[m] * 1e3:8.1f}        " for m in methods)
              + f"  picked: {totals['picked'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
