"""What exactness costs the CPU fast path, measured in one process so that machine noise cancels.

    cd bench && python exactness_cost.py --rounds 15

Cnn14 (fixture weights), 10 s clips, batch 1 and 8. Three configurations of the same network
run one after the other in every round, and each figure is the median over the rounds:

* ``default``: the exact path (the reference's DFT-as-convolution; the two-bin last block as
  one product per kernel column, holding the layer's weights);
* ``fft + narrow``: what the path was before exactness was enforced (FFT spectrogram, last
  block as "narrow" matrices, a third more weight memory);
* ``fft + columns``: the FFT opt-in as it is today.

panns_inference runs the same clips in each round too, so the printed ratios are comparable
with ``throughput.py``'s; the change in our own clips/s between configurations is the cost,
free of the peer's noise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import checkpoint, labels_for_peer, machine
from panns_infer import fast as fast_module
from panns_infer.checkpoint import load_model

CLIP = 320_000


def build(path, spectrogram: str, last_block: str) -> torch.nn.Module:
    choose = fast_module.choose_method

    def chosen(kernel, cin, cout, width):
        method = choose(kernel, cin, cout, width)
        return last_block if method == "columns" else method

    fast_module.choose_method = chosen
    try:
        return fast_module.optimize(load_model(path, arch="Cnn14").eval(), release=True, spectrogram=spectrogram)
    finally:
        fast_module.choose_method = choose


def once(fn, x) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    path = checkpoint("Cnn14")
    nets = {"default": build(path, "reference", "columns"), "fft + narrow": build(path, "fft", "narrow"),
            "fft + columns": build(path, "fft", "columns")}
    labels_for_peer()  # before its import, which would fetch them
    from panns_inference import AudioTagging  # the peer, on the same weights

    peer = AudioTagging(checkpoint_path=str(path), device="cpu")
    runs = dict(nets, peer=lambda x: peer.inference(x.numpy()))
    print(f"machine: {machine()}")
    for batch in (1, 8):
        x = torch.randn(batch, CLIP, generator=torch.Generator().manual_seed(batch)) * 0.1
        for fn in runs.values():
            once(fn, x)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, fn in runs.items():
                times[name].append(once(fn, x))
        rate = {name: batch / statistics.median(t) for name, t in times.items()}
        base = rate["fft + narrow"]
        for name in nets:
            print(f"batch {batch}  {name:14} {rate[name]:6.2f} clips/s  ratio to panns_inference "
                  f"{rate[name] / rate['peer']:.2f}  against fft + narrow {100 * (rate[name] / base - 1):+.1f}%")
        print(f"batch {batch}  {'panns_inference':14} {rate['peer']:6.2f} clips/s")


if __name__ == "__main__":
    main()
