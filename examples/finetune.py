"""Fine-tune a PANNs network on a small synthetic dataset: first a linear head on a frozen
backbone, then the whole network. Prints the loss and the test accuracy of both.

    python examples/finetune.py                              # Cnn14 (downloaded once), ~10 min on CPU
    python examples/finetune.py --checkpoint Cnn6            # a smaller network
    python examples/finetune.py --checkpoint my.pth --quick  # 0.5 s clips, a few steps: a smoke test

The dataset is made here: 1 s clips at 32 kHz of four classes (steady tones, noise bursts,
frequency sweeps, click trains) over a little background noise, with random frequencies,
levels and positions. The training loop is ordinary PyTorch; SpecAugment runs inside the
backbone in training mode, batches come from the class-balanced sampler, and ``--mixup``
mixes clips and their targets.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Optional

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from panns_infer.augment import BalancedSampler, SpecAugment, mixup
from panns_infer.transfer import AudioClassifier, PannsBackbone

CLASSES = ("tone", "noise burst", "sweep", "clicks")
SAMPLE_RATE = 32000


def make_clip(label: int, rng: np.random.Generator, *, seconds: float = 1.0) -> np.ndarray:
    """One synthetic clip of class ``label`` (index into :data:`CLASSES`), float32 in [-1, 1]."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    x = 0.01 * rng.standard_normal(n)  # background noise
    level = rng.uniform(0.1, 0.5)
    if label == 0:  # a steady tone, possibly with one harmonic
        f = rng.uniform(200, 3000)
        x += level * (np.sin(2 * np.pi * f * t) + rng.uniform(0, 0.5) * np.sin(4 * np.pi * f * t)) / 1.5
    elif label == 1:  # one or two bursts of white noise, 100-300 ms each
        for _ in range(rng.integers(1, 3)):
            length = int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)
            start = rng.integers(0, n - length)
            x[start:start + length] += level * rng.standard_normal(length) / 2
    elif label == 2:  # an exponential sweep up or down between 200 Hz and 8 kHz
        f0, f1 = rng.uniform(200, 1000), rng.uniform(2000, 8000)
        if rng.random() < 0.5:
            f0, f1 = f1, f0
        k = np.log(f1 / f0) / seconds
        x += level * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    else:  # a train of clicks, 5-20 per second
        period = int(SAMPLE_RATE / rng.uniform(5, 20))
        for start in range(rng.integers(0, period), n - 32, period):
            x[start:start + 32] += level * np.hanning(32) * rng.choice([-1, 1])
    return np.clip(x, -1, 1).astype(np.float32)


def make_dataset(per_class: int, rng: np.random.Generator, *,
                 seconds: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` clips of each class: waveforms ``(N, seconds * 32000)`` and labels ``(N,)``."""
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    waves = np.stack([make_clip(int(k), rng, seconds=seconds) for k in labels])
    return torch.from_numpy(waves), torch.from_numpy(labels)


@torch.no_grad()
def evaluate(model: AudioClassifier, waves: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 16) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode."""
    model.eval()
    logits = torch.cat([model(waves[i:i + batch_size]) for i in range(0, len(waves), batch_size)])
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def train(model: AudioClassifier, waves: torch.Tensor, labels: torch.Tensor, *, steps: int,
          batch_size: int, lr: float, backbone_lr: float, use_mixup: bool, seed: int) -> list[float]:
    """An ordinary training loop over ``steps`` batches; returns the loss of each step."""
    groups = [{"params": model.head.parameters(), "lr": lr}]
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
    sampler = BalancedSampler(labels.numpy(), num_samples=steps * batch_size, generator=seed)
    loader = DataLoader(TensorDataset(waves, labels), batch_size=batch_size, sampler=sampler)
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    for x, y in loader:
        target = F.one_hot(y, len(CLASSES)).float()
        if use_mixup:
            x, target = mixup(x, target, alpha=1.0, generator=rng)
        loss = F.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def run(checkpoint: str = "Cnn14", *, steps: Optional[int] = None, quick: bool = False, seed: int = 0,
        use_mixup: bool = False, report: Callable[[str], None] = print) -> dict:
    """Run both fine-tuning phases; returns losses, accuracies and seconds per phase."""
    rng = np.random.default_rng(seed)
    per_class, test_per_class = (4, 2) if quick else (24, 12)
    steps_frozen = steps if steps is not None else (6 if quick else 30)
    steps_full = steps if steps is not None else (3 if quick else 15)
    batch_size = 8 if quick else 16
    seconds = 0.5 if quick else 1.0
    train_x, train_y = make_dataset(per_class, rng, seconds=seconds)
    test_x, test_y = make_dataset(test_per_class, rng, seconds=seconds)

    # PANNs masked up to 63 of 1001 frames (10 s clips); these clips have 101 (or 51) frames
    spec = SpecAugment(time_mask_width=20, freq_mask_width=8, generator=torch.Generator().manual_seed(seed))
    backbone = PannsBackbone(checkpoint, trainable=False, spec_augment=spec)
    torch.manual_seed(seed)  # the new head's initial weights
    model = AudioClassifier(backbone, num_classes=len(CLASSES))
    report(f"{backbone.arch}: {len(train_x)} training and {len(test_x)} test clips of {seconds} s, "
           f"classes {CLASSES}")
    results: dict = {"arch": backbone.arch}
    phases = [("frozen", steps_frozen, 1e-2, 0.0), ("full", steps_full, 1e-3, 1e-4)]
    for name, n_steps, lr, backbone_lr in phases:
        if name == "full":
            model.unfreeze()
        start = time.perf_counter()
        before = results["frozen"]["train_loss_after"] if name == "full" else evaluate(model, train_x, train_y)[0]
        losses = train(model, train_x, train_y, steps=n_steps, batch_size=batch_size, lr=lr,
                       backbone_lr=backbone_lr, use_mixup=use_mixup, seed=seed)
        after, train_acc = evaluate(model, train_x, train_y)
        _, test_acc = evaluate(model, test_x, test_y)
        seconds = time.perf_counter() - start
        results[name] = {"losses": losses, "train_loss_before": before, "train_loss_after": after,
                         "train_accuracy": train_acc, "test_accuracy": test_acc, "seconds": seconds}
        report(f"{name:>6}: {n_steps} steps, train loss {before:.3f} -> {after:.3f}, "
               f"train accuracy {train_acc:.1%}, test accuracy {test_acc:.1%} ({seconds:.1f} s)")
    return results


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="Cnn14", help="registry name, .pth path or URL (default Cnn14)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per phase")
    parser.add_argument("--quick", action="store_true", help="a tiny dataset and a few steps")
    parser.add_argument("--mixup", action="store_true", help="train with mixup (alpha=1.0)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run(args.checkpoint, steps=args.steps, quick=args.quick, seed=args.seed, use_mixup=args.mixup)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
