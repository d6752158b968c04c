"""panns_infer.fast: the optimised CPU module computes the plain model's outputs (to float32
rounding, 1e-5), for every CNN-family architecture, batch sizes and lengths; AudioTagger uses
it by default. Also the vectorised resampler against resampy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import last_block_as, load_goldens, requires_fixtures
from panns_infer import AudioTagger, conv_methods
from panns_infer import fast as fast_module
from panns_infer.checkpoint import load_model
from panns_infer.errors import InvalidArgumentError
from panns_infer.fast import METHODS, FastCnn, FastConv, choose_method, optimize, supports
from panns_infer.models import build_model, list_architectures
from panns_infer.models.cnn import CNN_CONFIGS

TOL = 1e-5
CNN_ARCHS = list(CNN_CONFIGS)


def _max_diff(a: dict, b: dict) -> dict[str, float]:
    """Largest |difference| per output; embeddings (which reach ~25) relative to their largest
    |value|, as tests/test_parity.py's batch check does."""
    assert a.keys() == b.keys()
    return {k: float((a[k] - b[k]).abs().max()) / (max(1.0, float(a[k].abs().max())) if k == "embedding" else 1.0)
            for k in a}


def _random_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial batch-norm statistics, so that folding is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


@requires_fixtures
@pytest.mark.parametrize("arch", CNN_ARCHS)
def test_optimized_equals_model_on_fixture_weights(arch, fixture_checkpoint):
    model = load_model(fixture_checkpoint(arch), arch=arch).eval()
    fast = optimize(model)
    assert isinstance(fast, FastCnn) and fast is not model
    gen = torch.Generator().manual_seed(1)
    # batch 1 and 8; lengths: shorter than the minimum, odd, 2.3 s and (Cnn14 only) 10 s
    cases = [(1, 1), (8, 9920), (1, 75040)] + ([(1, 320000), (8, 320000)] if arch == "Cnn14" else [])
    with torch.inference_mode():
        for batch, n in cases:
            x = torch.randn(batch, n, generator=gen) * 0.1
            for key, err in _max_diff(model(x), fast(x)).items():
                assert err <= TOL, f"{arch} batch {batch} length {n} {key}: {err:.3g}"


@pytest.mark.parametrize("packed", [True, False], ids=["onednn-packed", "addmm"])
@pytest.mark.parametrize("method", METHODS)
def test_every_conv_method_equals_conv_bn_relu(method, packed, monkeypatch):
    """Each way FastConv can run a layer, on odd and even map sizes, batch 1 and 3, against
    the layer it replaces; with and without oneDNN's packed weights."""
    if not packed:
        monkeypatch.setattr(conv_methods, "PACKED_LINEAR", False)
    elif not conv_methods.PACKED_LINEAR:
        pytest.skip("this torch build has no oneDNN packed linear")
    gen = torch.Generator().manual_seed(3)
    shapes = [(1, 8, 9, 6), (6, 16, 7, 5), (16, 24, 10, 8), (8, 8, 5, 2), (8, 8, 6, 1), (8, 8, 6, 3)]
    for kernel in (3, 5):  # the 3x3 blocks of most CNNs, the 5x5 blocks of Cnn6
        for cin, cout, height, width in shapes:
            if (method == "narrow" and width > kernel // 2 + 1) or (method == "winograd" and kernel != 3):
                continue
            _check_conv_method(method, kernel, cin, cout, height, width, gen)


def _check_conv_method(method: str, kernel: int, cin: int, cout: int, height: int, width: int,
                       gen: torch.Generator) -> None:
    conv = torch.nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
    bn = _random_bn(torch.nn.Sequential(torch.nn.BatchNorm2d(cout)))[0]
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
    layer = FastConv(conv, bn, width, method=method)
    assert layer.method == method
    if method.startswith("onednn"):  # the weights in the layout the method is named for
        layout = torch.channels_last if method == "onednn_cl" else torch.contiguous_format
        assert layer.weight.is_contiguous(memory_format=layout)
    for batch in (1, 3):
        x = torch.randn(batch, cin, height, width, generator=gen)
        with torch.inference_mode():
            want = torch.relu(bn(conv(x)))
            got = layer(x)
        assert got.shape == want.shape
        tolerance = 1e-5 * max(1.0, float(want.abs().max()))
        assert float((got - want).abs().max()) <= tolerance, (kernel, cin, cout, height, width)


def test_spectrogram_is_the_reference_convolution_unless_fft_is_asked_for():
    model = build_model("Cnn6").eval()
    assert not optimize(model).fft
    assert optimize(model, spectrogram="fft").fft
    with pytest.raises(InvalidArgumentError, match="spectrogram must be one of"):
        optimize(model, spectrogram="FFT")


@pytest.mark.parametrize("kernel", ["conv_real", "conv_imag"])
def test_fft_only_for_the_standard_kernels(kernel):
    """A front end that is not a Hann-windowed DFT (either kernel changed) keeps its
    convolution, even when the FFT is asked for."""
    model = build_model("Cnn6").eval()
    x = torch.randn(2, 40000) * 0.1
    with torch.no_grad():
        getattr(model.spectrogram_extractor.stft, kernel).weight.mul_(0.5)
    fast = optimize(model, spectrogram="fft")
    assert not fast.fft
    with torch.inference_mode():
        for key, err in _max_diff(model(x), fast(x)).items():
            assert err <= TOL, key


def test_a_filter_bank_of_zeros_keeps_one_dft_bin():
    """The reference convolution computes only the STFT bins the mel filter bank uses; a bank
    that uses none (all zeros) still runs, on one bin, and gives the plain model's output."""
    model = build_model("Cnn6").eval()
    with torch.no_grad():
        model.logmel_extractor.melW.zero_()
    fast = optimize(model)
    assert fast.dft.shape[0] == 2 and fast.mel_used.shape[0] == 1  # one real and one imaginary kernel
    x = torch.randn(2, 40000) * 0.1
    with torch.inference_mode():
        for key, err in _max_diff(model(x), fast(x)).items():
            assert err <= TOL, key


def test_methods_refuse_shapes_they_cannot_run():
    conv, bn = torch.nn.Conv2d(4, 4, 5, padding=2, bias=False), torch.nn.BatchNorm2d(4).eval()
    with pytest.raises(InvalidArgumentError) as refused:
        FastConv(conv, bn, 16, method="winograd")
    assert str(refused.value) == "winograd needs a 3x3 kernel, not 5x5"
    with pytest.raises(InvalidArgumentError) as refused:
        FastConv(conv, bn, 16, method="narrow")
    assert str(refused.value) == "narrow needs a map at most 3 bins wide, not 16"
    with pytest.raises(InvalidArgumentError) as refused:
        FastConv(conv, bn, 16, method="fft")
    assert str(refused.value) == f"unknown method 'fft'; one of {METHODS}"
    # the widest map narrow takes, and one bin more
    small = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
    assert FastConv(small, bn, 2, method="narrow").method == "narrow"
    with pytest.raises(InvalidArgumentError) as refused:
        FastConv(small, bn, 3, method="narrow")
    assert str(refused.value) == "narrow needs a map at most 2 bins wide, not 3"


@pytest.mark.parametrize("arch", ["Cnn6", "Cnn14_DecisionLevelMax"])
def test_optimized_folds_real_batch_norm_statistics(arch):
    model = _random_bn(build_model(arch))
    fast = optimize(model)
    x = torch.randn(2, 40000) * 0.1
    with torch.inference_mode():
        for key, err in _max_diff(model(x), fast(x)).items():
            assert err <= TOL, f"{arch} {key}: {err:.3g}"


def test_optimize_leaves_other_architectures_and_the_model_alone():
    assert [a for a in list_architectures() if supports(build_model(a))] == CNN_ARCHS
    other = build_model("MobileNetV1")
    assert optimize(other) is other
    model = build_model("Cnn10").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@requires_fixtures
@pytest.mark.parametrize("arch", ["Cnn14", "Cnn14_DecisionLevelMax"])
def test_tagger_optimizes_by_default_and_matches_goldens(arch, fixture_checkpoint, labels_csv):
    path = fixture_checkpoint(arch, name=f"{arch}.pth")
    fast = AudioTagger(path, device="cpu", labels=labels_csv, batch_size=3)
    plain = AudioTagger(path, device="cpu", labels=labels_csv, batch_size=3, optimize=False)
    assert isinstance(fast._engine.runner, FastCnn) and fast.model is fast._engine.runner
    assert plain._engine.runner is plain.model
    info, gold, waves = load_goldens(arch)
    cases = {c: v for c, v in info["cases"].items() if "reference_error" not in v}
    ours = fast.infer([waves[c] for c in cases])
    base = plain.infer([waves[c] for c in cases])
    for (case, spec), got, ref in zip(cases.items(), ours, base):
        for output in spec["outputs"]:
            scale = max(1.0, float(np.abs(ref[output]).max())) if output == "embedding" else 1.0
            assert float(np.abs(got[output] - ref[output]).max()) <= TOL * scale, f"{case}/{output} vs plain"
            tol = 1e-3 if output == "embedding" else 1e-4
            assert float(np.abs(got[output] - gold[f"{case}/{output}"]).max()) <= tol, f"{case}/{output} vs golden"


# --- resampler: resampy itself, short clips padded to one output sample ----------------------

@pytest.mark.parametrize("rate", [44100, 48000, 22050, 16000, 8000])
def test_resample_equals_resampy(rate):
    resampy = pytest.importorskip("resampy")
    from panns_infer.audio import resample

    rng = np.random.default_rng(rate)
    for target in (32000, 16000):
        if target == rate:
            continue
        for n in (1, 7, 100, 4410, 44101, 3 * rate + 13):
            x = (rng.standard_normal(n) * 0.3).astype(np.float32)
            ours = resample(x, rate, target)
            assert ours.dtype == np.float32
            if int(n * target / rate) < 1:  # resampy refuses it; we pad to one sample
                assert ours.shape == (1,)
                continue
            ref = resampy.resample(x, rate, target, filter="kaiser_best")
            assert ours.shape == ref.shape, f"{rate}->{target} n={n}"
            err = float(np.abs(ours - ref).max())
            assert err <= 1e-5, f"{rate}->{target} n={n}: {err:.3g}"


@pytest.mark.parametrize("arch, expected", [
    # Cnn14: block 1 (64 bins) ... block 6 (2 bins), two convolutions each.
    ("Cnn14", ["gemm", "onednn_cl", "onednn_cl", "onednn_cl", "winograd", "winograd",
               "winograd", "winograd", "winograd", "winograd", "columns", "columns"]),
    ("Cnn10", ["gemm", "onednn_cl", "onednn_cl", "onednn_cl", "winograd", "winograd", "winograd", "winograd"]),
    ("Cnn6", ["gemm", "onednn_cl", "onednn_cl", "onednn_cl"]),  # 5x5 kernels: no Winograd
])
def test_conv_methods_per_layer_are_the_measured_choice(arch, expected):
    """The method of every layer is a measured speed decision: a change is a regression to
    catch here, since the outputs would not show it."""
    fast = optimize(build_model(arch).eval())
    assert [conv.method for block in fast.blocks for conv in block.convs] == expected


@pytest.mark.parametrize("kernel, cin, cout, width, method", [
    (3, 1024, 2048, 2, "columns"), (3, 1024, 2048, 3, "winograd"),  # 3x3: two bins at most
    (5, 64, 128, 3, "columns"), (5, 64, 128, 4, "onednn_cl"),  # 5x5: three bins at most
    (3, 64, 128, 8, "onednn_cl"), (3, 1, 64, 64, "gemm"),
])
def test_the_narrow_map_rule_follows_the_kernel_size(kernel, cin, cout, width, method):
    """On a map at most ``kernel // 2 + 1`` bins wide every output bin sees every input bin."""
    assert choose_method(kernel, cin, cout, width) == method


def test_release_frees_the_original_blocks_and_the_default_keeps_them():
    kept, freed = build_model("Cnn6").eval(), build_model("Cnn6").eval()
    x = torch.randn(1, 32000)
    with torch.inference_mode():
        want = kept(x)["clipwise_output"]
        optimize(kept)
        optimize(freed, release=True)
        assert torch.equal(kept(x)["clipwise_output"], want)  # still runs, unchanged
    for block in ("conv_block1", "conv_block3"):
        for layer in ("conv1", "bn1"):  # Cnn6: one 5x5 convolution per block
            assert getattr(getattr(kept, block), layer).weight.device.type == "cpu"
            assert getattr(getattr(freed, block), layer).weight.device.type == "meta"
    assert freed.conv_block1.bn1.running_var.device.type == "meta"  # buffers too


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_networks_not_in_float32_are_returned_as_they_are(dtype):
    model = build_model("Cnn6").eval().to(dtype)
    assert optimize(model) is model


def test_optimize_logs_what_it_did(caplog):
    with caplog.at_level("DEBUG", logger="panns_infer"):
        optimize(build_model("Cnn6").eval())
    assert [r.getMessage() for r in caplog.records if r.name == "panns_infer"] == [
        "optimize: Cnn6 runs with folded batch norm and GEMM convolutions"]


@pytest.mark.parametrize("arch, lead, tail", [
    ("Cnn14", 2, 5),  # blocks 1-2 direct convolutions in cache-sized slices; block 6 (two bins) on the whole batch
    ("Cnn10", 2, 4),  # no two-bin block
    ("Cnn6", 4, 4),  # every block a direct convolution
])
def test_how_the_batch_is_sliced_is_the_measured_plan(arch, lead, tail):
    """Which blocks run on slices of the batch and which on the whole batch is a measured
    speed decision that the outputs would not show."""
    fast = optimize(build_model(arch).eval())
    assert (fast.lead, fast.tail) == (lead, tail)


def test_fast_cnn_by_default_keeps_the_model_and_the_reference_spectrogram():
    model = build_model("Cnn6").eval()
    fast = FastCnn(model)
    assert not fast.fft
    assert model.conv_block1.conv1.weight.device.type == "cpu"


def test_the_fft_opt_in_runs_on_a_hann_window():
    model = build_model("Cnn6").eval()
    fast = optimize(model, spectrogram="fft")
    assert torch.equal(fast.window, torch.hann_window(1024, periodic=True))
    x = torch.randn(2, 40000, generator=torch.Generator().manual_seed(5)) * 0.1
    with torch.inference_mode():
        for key, err in _max_diff(model(x), fast(x)).items():
            assert err <= 1e-4, key  # noise: the FFT's rounding is far below the tolerance here


@pytest.mark.parametrize("method", ["narrow", "padded"])
def test_the_two_bin_block_takes_the_whole_batch_in_every_form(method, monkeypatch):
    monkeypatch.setattr(fast_module, "choose_method", last_block_as(method))
    fast = optimize(build_model("Cnn14").eval())
    assert [c.method for c in fast.blocks[-1].convs] == [method, method]
    assert (fast.lead, fast.tail) == (2, 5)


def test_the_dft_computes_only_the_bins_the_mel_bank_uses():
    """At 32 kHz the 64 mel bands (50 Hz - 14 kHz) read STFT bins 2..447 of 513: the real and
    imaginary kernels of those 446 bins, as one convolution."""
    model = build_model("Cnn14").eval()
    fast = optimize(model)
    assert tuple(fast.dft.shape) == (2 * 446, 1, 1024)
    stft = model.spectrogram_extractor.stft
    assert torch.equal(fast.dft[:446], stft.conv_real.weight[2:448])
    assert torch.equal(fast.dft[446:], stft.conv_imag.weight[2:448])
