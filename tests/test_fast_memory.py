"""The fast path's memory: a loaded CPU tagger holds at most 1.3x its checkpoint's weights.
Cnn14's last block (two-bin maps, 70% of the weights) has three forms: "columns" (the
default) and "padded" hold the layer's own weights, "narrow" a third more; "padded" computes
narrow's numbers bit for bit, "columns" groups the same sums by kernel column (float32
rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import last_block_as, load_goldens, requires_fixtures
from panns_infer import AudioTagger
from panns_infer import fast as fast_module
from panns_infer.checkpoint import load_model, read_state_dict
from panns_infer.fast import FastConv, held_bytes, optimize

CNN14_FAMILY = ["Cnn14", "Cnn14_DecisionLevelMax"]


def _weight_bytes(path) -> int:
    return sum(v.numel() * v.element_size() for v in read_state_dict(path).values())


@requires_fixtures
@pytest.mark.parametrize("arch", CNN14_FAMILY)
def test_a_loaded_fast_tagger_holds_at_most_1_3_times_its_weights(arch, fixture_checkpoint, labels_csv):
    path = fixture_checkpoint(arch)
    weights = _weight_bytes(path)
    fast = AudioTagger(path, device="cpu", labels=labels_csv)
    assert isinstance(fast.model, fast_module.FastCnn)
    held = held_bytes(fast.model)
    assert held <= 1.3 * weights, f"{arch}: holds {held / 2**20:.1f} MiB for {weights / 2**20:.1f} MiB of weights"
    # the count sees the forms: the fast copy holds more than the plain network
    plain = AudioTagger(path, device="cpu", labels=labels_csv, optimize=False)
    assert held_bytes(plain.model) == weights < held


def _layer(cin: int, cout: int, seed: int) -> tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d]:
    gen = torch.Generator().manual_seed(seed)
    conv, bn = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False), torch.nn.BatchNorm2d(cout)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.02)
        bn.running_mean.copy_(torch.randn(cout, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(cout, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(cout, generator=gen) * 0.1)
    return conv, bn.eval()


@pytest.mark.parametrize("cin, cout", [(1024, 2048), (2048, 2048)], ids=["block6-conv1", "block6-conv2"])
def test_padded_computes_narrows_numbers_bit_for_bit(cin, cout):
    """Cnn14's last-block layers on two-bin maps, from a single time step of one clip (the
    single-row product) to batches of 30 s chunks."""
    conv, bn = _layer(cin, cout, seed=cin)
    narrow, padded = FastConv(conv, bn, 2, method="narrow"), FastConv(conv, bn, 2, method="padded")
    # 9 taps against 12 (the centre column once per output bin); narrow repeats the bias per bin
    assert 4 * held_bytes(padded) == 3 * held_bytes(narrow) - 2 * 4 * cout
    gen = torch.Generator().manual_seed(7)
    for batch, steps in [(1, 1), (1, 2), (2, 1), (1, 3), (1, 31), (3, 17), (8, 31), (1, 94), (2, 94)]:
        x = torch.relu(torch.randn(batch, cin, steps, 2, generator=gen))
        with torch.inference_mode():
            want, got = narrow(x), padded(x)
        assert np.array_equal(got.numpy(), want.numpy()), (batch, steps, float((got - want).abs().max()))


@pytest.mark.parametrize("cin, cout", [(1024, 2048), (2048, 2048)], ids=["block6-conv1", "block6-conv2"])
def test_columns_holds_the_layers_weights_and_computes_its_sums(cin, cout):
    conv, bn = _layer(cin, cout, seed=cin + 1)
    narrow, columns = FastConv(conv, bn, 2, method="narrow"), FastConv(conv, bn, 2, method="columns")
    assert held_bytes(columns) == 4 * (conv.weight.numel() + cout)  # each tap once, the bias once
    gen = torch.Generator().manual_seed(8)
    for batch, steps in [(1, 1), (2, 1), (1, 31), (8, 31), (2, 94)]:
        x = torch.relu(torch.randn(batch, cin, steps, 2, generator=gen))
        with torch.inference_mode():
            want, got = narrow(x), columns(x)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= 1e-6 * max(1.0, float(want.abs().max())), (batch, steps)


@requires_fixtures
@pytest.mark.parametrize("arch", CNN14_FAMILY)
def test_the_last_blocks_forms_agree_on_whole_networks(arch, fixture_checkpoint, monkeypatch):
    """The whole fast network, on the goldens' waveforms, a tone between FFT bins, the
    shortest input and a batch: with the last block "padded", the numbers of "narrow" bit
    for bit; by default ("columns"), the same to float32 rounding."""
    path = fixture_checkpoint(arch)
    fast = optimize(load_model(path, arch=arch).eval(), release=True)
    assert [c.method for c in fast.blocks[-1].convs] == ["columns", "columns"]
    forms = {}
    for method in ("narrow", "padded"):
        with monkeypatch.context() as patch:
            patch.setattr(fast_module, "choose_method", last_block_as(method))
            forms[method] = optimize(load_model(path, arch=arch).eval(), release=True)
        assert [c.method for c in forms[method].blocks[-1].convs] == [method, method]
    _, _, waves = load_goldens(arch)
    t = np.arange(12 * 32000) / 32000
    signals = [np.asarray(w, dtype=np.float32).reshape(1, -1) for w in waves.values()]
    signals += [(0.3 * np.sin(2 * np.pi * 1234.5 * t)).astype(np.float32)[None], np.zeros((1, 9920), np.float32),
                np.random.default_rng(0).standard_normal((3, 64000)).astype(np.float32) * 0.1]
    with torch.inference_mode():
        for x in signals:
            want = forms["narrow"](torch.from_numpy(x))
            padded, columns = forms["padded"](torch.from_numpy(x)), fast(torch.from_numpy(x))
            for key in want:
                assert np.array_equal(padded[key].numpy(), want[key].numpy()), (x.shape, key)
                err = float((columns[key] - want[key]).abs().max())
                assert err <= 1e-5, (x.shape, key, err)
