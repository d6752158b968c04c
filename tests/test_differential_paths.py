"""Every path that departs from the plain network's arithmetic for speed, against the plain
network on the differential signal set (tests/signals.py: tones, chords, sweeps, clicks,
near-silence, clipping...), at the parity tolerance (1e-4 on probabilities, 1e-3 on
embeddings): the CPU fast path of each CNN architecture, each of its convolution methods, ONNX
export, and CUDA ``fp32``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import requires_fixtures
from panns_infer import fast as fast_module
from panns_infer.checkpoint import load_model
from panns_infer.fast import FastCnn, optimize
from panns_infer.models.cnn import CNN_CONFIGS
from signals import named_signals

pytestmark = requires_fixtures

PROB_TOL = 1e-4
EMB_TOL = 1e-3
SECONDS = 2


def outputs(net: torch.nn.Module, signals: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    with torch.inference_mode():
        return {name: {k: v[0].float().cpu().numpy() for k, v in net(torch.from_numpy(x)[None]).items()}
                for name, x in signals.items()}


def assert_close(got: dict, want: dict, what: str) -> None:
    for name in want:
        for key, ref in want[name].items():
            tol = EMB_TOL if key == "embedding" else PROB_TOL
            err = float(np.abs(got[name][key] - ref).max())
            assert err <= tol, f"{what}, {name}: {key} differs from the plain network by {err:.3g}"


@pytest.fixture(scope="module")
def plain(fixture_checkpoint):
    """``plain(arch)``: (plain network with the fixture weights, its outputs on the signals)."""
    built: dict = {}

    def get(arch: str):
        if arch not in built:
            model = load_model(fixture_checkpoint(arch), arch=arch).eval()
            signals = named_signals(model.sample_rate, SECONDS * model.sample_rate)
            built[arch] = (model, signals, outputs(model, signals))
        return built[arch]

    return get


FAST_DEFAULT = ["Cnn14_16k", "Cnn6"]  # the others (same code, other sizes) run in the slow set


@pytest.mark.parametrize("arch", [pytest.param(a, marks=() if a in FAST_DEFAULT else pytest.mark.slow)
                                  for a in CNN_CONFIGS])
def test_fast_path_of_every_cnn_architecture(arch, plain):
    model, signals, want = plain(arch)
    fast = optimize(model)
    assert isinstance(fast, FastCnn) and not fast.fft
    assert_close(outputs(fast, signals), want, f"fast path of {arch}")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["onednn", "onednn_cl", "gemm", "winograd", "columns", "padded"])
def test_each_conv_method_on_the_signal_set(method, plain, monkeypatch):
    """Cnn10 (3x3 convolutions throughout) with every layer forced to one method ("narrow"
    runs only on maps two bins wide: see tests/test_fast_memory.py)."""
    model, signals, want = plain("Cnn10")
    monkeypatch.setattr(fast_module, "choose_method", lambda kernel, cin, cout, width: method)
    fast = optimize(model)
    assert {c.method for b in fast.blocks for c in b.convs} == {method}
    assert_close(outputs(fast, signals), want, f"Cnn10, every conv by {method}")


def test_onnx_export_on_the_signal_set(plain, fixture_checkpoint, tmp_path):
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason="ONNX export needs the optional extra: pip install 'panns-infer[onnx]'")
    import onnxruntime as ort

    from panns_infer.export import to_onnx

    model, signals, want = plain("Cnn6")
    path = to_onnx(fixture_checkpoint("Cnn6"), tmp_path / "cnn6.onnx", check=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = {}
    for name, x in signals.items():
        padded = np.zeros((1, model.target_length(len(x))), dtype=np.float32)
        padded[0, :len(x)] = x
        got[name] = {k: v[0] for k, v in zip(names, session.run(names, {"waveform": padded}))}
    assert_close(got, {n: {k: v for k, v in o.items() if k in names} for n, o in want.items()}, "ONNX Cnn6")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["Cnn14", "Cnn14_DecisionLevelMax"])
def test_cuda_fp32_on_the_signal_set(arch, plain):
    model, signals, want = plain(arch)
    import copy

    from panns_infer.numerics import precision_scope

    cuda = copy.deepcopy(model).cuda()

    got = {}
    with torch.inference_mode(), precision_scope(torch.device("cuda"), "fp32") as scope:
        for name, x in signals.items():
            out = scope.run(cuda, torch.from_numpy(x)[None].cuda())
            got[name] = {k: v[0].float().cpu().numpy() for k, v in out.items()}
    assert_close(got, want, f"CUDA fp32 {arch}")
