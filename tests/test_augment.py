"""Tests for panns_infer.augment: SpecAugment, mixup and the balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from panns_infer.augment import BalancedSampler, SpecAugment, mixup
from panns_infer.errors import InvalidArgumentError, PannsError


def _runs(flags: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean array."""
    padded = np.concatenate([[False], flags, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    return list(edges[1::2] - edges[::2])


# --- SpecAugment ---------------------------------------------------------------------------------


def test_spec_augment_defaults_are_the_panns_recipe():
    aug = SpecAugment()
    assert (aug.time_mask_width, aug.time_masks, aug.freq_mask_width, aug.freq_masks) == (64, 2, 8, 2)
    assert aug.mask_value == 0.0


def test_spec_augment_masks_are_full_stripes_within_the_limits():
    batch, frames, bins = 64, 300, 64
    aug = SpecAugment(generator=torch.Generator().manual_seed(0))
    x = torch.randn(batch, 1, frames, bins) + 10.0  # never 0 by chance
    masked = (aug(x) == 0)[:, 0].numpy()  # (B, T, F)
    widest_time = widest_freq = 0
    for m in masked:
        time_rows = m.all(axis=1)  # frames masked at every bin: time stripes
        freq_cols = m.all(axis=0)  # bins masked at every frame: frequency stripes
        # every masked cell belongs to a time stripe or a frequency stripe
        assert np.array_equal(m, time_rows[:, None] | freq_cols[None, :])
        time_runs, freq_runs = _runs(time_rows), _runs(freq_cols)
        assert len(time_runs) <= 2 and sum(time_runs) <= 2 * 63
        assert len(freq_runs) <= 2 and sum(freq_runs) <= 2 * 7
        widest_time = max([widest_time, *time_runs])
        widest_freq = max([widest_freq, *freq_runs])
    # widths are drawn up to the limit, not far below it (128 draws of each kind)
    assert widest_time >= 50 and widest_freq >= 6
    assert masked.any(axis=(1, 2)).mean() > 0.9  # almost every example gets some mask


def test_spec_augment_is_seeded_and_differs_per_example():
    x = torch.ones(4, 1, 200, 64)
    a = SpecAugment(generator=torch.Generator().manual_seed(7))(x)
    b = SpecAugment(generator=torch.Generator().manual_seed(7))(x)
    c = SpecAugment(generator=torch.Generator().manual_seed(8))(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # each example gets its own masks


def test_spec_augment_eval_mode_is_identity_and_input_is_not_modified():
    x = torch.randn(2, 1, 100, 64)
    original = x.clone()
    aug = SpecAugment(generator=torch.Generator().manual_seed(0))
    out = aug(x)
    assert torch.equal(x, original)  # not in place
    assert not torch.equal(out, x)
    assert aug.eval()(x) is x


def test_spec_augment_gradient_flows_only_through_unmasked_cells():
    x = torch.randn(2, 1, 100, 64, requires_grad=True)
    out = SpecAugment(generator=torch.Generator().manual_seed(3))(x)
    out.sum().backward()
    assert torch.equal(x.grad == 0, out.detach() == 0)


def test_spec_augment_handles_inputs_shorter_than_a_mask():
    aug = SpecAugment(generator=torch.Generator().manual_seed(0))
    out = aug(torch.ones(16, 1, 3, 64))  # 3 frames, masks up to 63 wide
    assert out.shape == (16, 1, 3, 64)
    assert (out == 0).any()


@pytest.mark.parametrize("kwargs", [{"time_masks": -1}, {"freq_mask_width": 2.5}, {"generator": 3}])
def test_spec_augment_rejects_bad_options(kwargs):
    with pytest.raises(InvalidArgumentError):
        SpecAugment(**kwargs)


def test_spec_augment_rejects_inputs_without_time_and_frequency():
    with pytest.raises(InvalidArgumentError, match="time, freq"):
        SpecAugment()(torch.ones(4, 100))


# --- mixup ---------------------------------------------------------------------------------------


def test_mixup_mixes_inputs_and_targets_with_the_same_weights():
    batch = 32
    x = torch.eye(batch)  # row i of the output reveals lam_i and the partner
    y = torch.nn.functional.one_hot(torch.arange(batch) % 5, 5).float()
    mx, my = mixup(x, y, generator=0)
    assert mx.shape == x.shape and my.shape == y.shape
    # each row is lam * x_i + (1 - lam) * x_j: weights on the diagonal and one partner
    assert torch.allclose(mx.sum(1), torch.ones(batch))
    assert int((mx > 0).sum(1).max()) <= 2
    assert torch.allclose(my, mx @ y)  # the targets are mixed exactly like the inputs
    assert torch.allclose(my.sum(1), torch.ones(batch))


def test_mixup_is_seeded():
    x, y = torch.randn(8, 100), torch.rand(8, 3)
    a, b, c = mixup(x, y, generator=1), mixup(x, y, generator=1), mixup(x, y, generator=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    rng = np.random.default_rng(5)
    assert not torch.equal(mixup(x, y, generator=rng)[0], mixup(x, y, generator=rng)[0])  # stream continues


def test_mixup_lambda_follows_beta_alpha():
    batch = 2000
    eye = torch.eye(batch)  # the diagonal of the mixed identity is each row's own weight lam_i
    own = torch.diagonal(mixup(eye, torch.zeros(batch, 1), alpha=1.0, generator=0)[0])
    # Beta(1, 1) is uniform: mean 1/2, a quarter of the draws below 1/4 (a row that the
    # permutation maps to itself keeps weight 1: a negligible few)
    assert abs(float(own.mean()) - 0.5) < 0.03
    assert abs(float((own < 0.25).float().mean()) - 0.25) < 0.03
    extreme = torch.diagonal(mixup(eye, torch.zeros(batch, 1), alpha=0.1, generator=0)[0])
    assert float(((extreme < 0.05) | (extreme > 0.95)).float().mean()) > 0.6  # Beta(0.1, 0.1): U-shaped


def test_mixup_rejects_bad_arguments():
    x = torch.randn(4, 10)
    with pytest.raises(InvalidArgumentError, match="one_hot"):
        mixup(x, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(InvalidArgumentError, match="alpha"):
        mixup(x, torch.rand(4, 2), alpha=0)
    with pytest.raises(InvalidArgumentError, match="batch size"):
        mixup(x, torch.rand(3, 2))
    with pytest.raises(PannsError):
        mixup(x, torch.rand(4, 2), generator="seed")


# --- BalancedSampler -----------------------------------------------------------------------------


def test_balanced_sampler_visits_every_class_once_per_round():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    sampler = BalancedSampler(labels, num_samples=300, generator=0)
    drawn = np.array(list(sampler))
    assert len(drawn) == len(sampler) == 300
    classes = labels[drawn]
    for start in range(0, 300, 3):  # each round holds each class exactly once
        assert sorted(classes[start:start + 3]) == [0, 1, 2]
    rare = drawn[classes == 1]
    assert len(set(rare[:9])) == 9  # a class's clips are all used before any repeats
    assert set(drawn[classes == 2]) == {99}


def test_balanced_sampler_multilabel_targets():
    targets = np.zeros((50, 4), dtype=np.float32)
    targets[:40, 0] = 1
    targets[40:48, 1] = 1
    targets[45:50, 2] = 1  # clips 45..47 carry classes 1 and 2
    # class 3 has no clip and is skipped
    sampler = BalancedSampler(targets, num_samples=90, generator=1)
    drawn = np.array(list(sampler))
    for start in range(0, 90, 3):
        block = drawn[start:start + 3]
        # one draw on behalf of each of classes 0, 1, 2: a clip of each class is in the block
        assert targets[block, 0].any() and targets[block, 1].any() and targets[block, 2].any()
    assert sampler.classes == [0, 1, 2]


def test_balanced_sampler_is_seeded_and_epochs_differ():
    labels = np.arange(20) % 4
    a = list(BalancedSampler(labels, generator=3))
    b = list(BalancedSampler(labels, generator=3))
    assert a == b
    sampler = BalancedSampler(labels, generator=3)
    assert list(sampler) != list(sampler)


def test_balanced_sampler_feeds_a_dataloader():
    labels = torch.tensor([0] * 30 + [1] * 2)
    data = TensorDataset(torch.arange(32).float(), labels)
    loader = DataLoader(data, batch_size=8, sampler=BalancedSampler(labels, num_samples=32, generator=0))
    batches = [y for _, y in loader]
    assert len(batches) == 4
    assert int(torch.cat(batches).sum()) == 16  # half the draws from the 2-clip class


@pytest.mark.parametrize("targets", [[], [[]], [0.5, 1.5], [-1, 0], np.zeros((3, 2))])
def test_balanced_sampler_rejects_unusable_targets(targets):
    with pytest.raises(InvalidArgumentError):
        BalancedSampler(targets)
