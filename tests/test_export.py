"""ONNX export (panns_infer.export, ``panns-tag --export-onnx``): the exported graph, run by
onnxruntime, reproduces the reference's goldens; fixed-length fallback; atomic writes; typed
errors without the optional extra."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import load_goldens, requires_fixtures
from panns_infer.cli import main
from panns_infer.errors import UnsupportedOperationError

NEEDS = "ONNX export needs the optional extra: pip install 'panns-infer[onnx]'"


def _session(path):
    ort = pytest.importorskip("onnxruntime", reason=NEEDS)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def onnx_deps():
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name, reason=NEEDS)


@requires_fixtures
def test_exported_cnn6_reproduces_the_goldens_at_every_length(onnx_deps, fixture_checkpoint, tmp_path):
    from panns_infer.export import input_length, to_onnx
    from panns_infer.models import build_model

    path = to_onnx(fixture_checkpoint("Cnn6"), tmp_path / "cnn6.onnx")
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    assert [o.name for o in session.get_outputs()] == ["clipwise_output", "embedding"]
    model = build_model("Cnn6")
    info, gold, waves = load_goldens("Cnn6")
    cases = [c for c, v in info["cases"].items() if "reference_error" not in v]
    assert len({len(waves[c]) for c in cases}) > 1  # several lengths through one graph
    for case in cases:
        wave = np.asarray(waves[case], dtype=np.float32)
        x = np.zeros((1, input_length(model, len(wave))), dtype=np.float32)
        x[0, : len(wave)] = wave  # the padding AudioTagger applies to short clips
        clipwise, embedding = session.run(None, {"waveform": x})
        assert np.abs(clipwise[0] - gold[f"{case}/clipwise_output"]).max() <= 1e-4, case
        assert np.abs(embedding[0] - gold[f"{case}/embedding"]).max() <= 1e-3, case


@requires_fixtures
def test_a_network_without_a_dynamic_graph_gets_a_fixed_length(onnx_deps, fixture_checkpoint, tmp_path, caplog):
    from panns_infer.checkpoint import load_model
    from panns_infer.export import to_onnx

    ckpt = fixture_checkpoint("LeeNet11")
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        path = to_onnx(ckpt, tmp_path / "leenet.onnx")
    assert "fixed input of 320000 samples" in caplog.text
    session = _session(path)
    assert session.get_inputs()[0].shape[1] == 320000
    x = (np.random.default_rng(0).standard_normal((3, 320000)) * 0.1).astype(np.float32)
    (clipwise, *_) = session.run(None, {"waveform": x})
    with torch.no_grad():
        want = load_model(ckpt, arch="LeeNet11").eval()(torch.from_numpy(x))["clipwise_output"].numpy()
    assert np.abs(clipwise - want).max() <= 1e-4


@requires_fixtures
def test_a_failed_export_leaves_the_existing_file_and_no_temporary(onnx_deps, fixture_checkpoint, tmp_path,
                                                                   monkeypatch):
    from panns_infer import export

    target = tmp_path / "model.onnx"
    target.write_bytes(b"the user's previous export")

    def broken(model, dest, samples):
        dest.write_bytes(b"half a graph")
        raise export.ExportError("exporter crashed")

    monkeypatch.setattr(export, "_export", broken)
    with pytest.raises(export.ExportError, match="crashed"):
        export.to_onnx(fixture_checkpoint("Cnn6"), target, samples=32000)
    assert target.read_bytes() == b"the user's previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


@requires_fixtures
def test_the_check_catches_a_graph_that_computes_something_else(onnx_deps, fixture_checkpoint, tmp_path,
                                                                monkeypatch):
    from panns_infer import export

    real = export._export

    def tampered(model, dest, samples):
        names = real(model, dest, samples)
        with torch.no_grad():
            model.fc_audioset.bias.add_(1.0)  # PyTorch now differs from what was exported
        return names

    monkeypatch.setattr(export, "_export", tampered)
    with pytest.raises(export.ExportError, match="differs from PyTorch on clipwise_output"):
        export.to_onnx(fixture_checkpoint("Cnn6"), tmp_path / "x.onnx", samples=32000)
    assert not (tmp_path / "x.onnx").exists()


def test_without_the_extra_the_error_names_it(monkeypatch, tmp_path):
    from panns_infer.export import to_onnx

    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: None if name == "onnxscript" else object())
    with pytest.raises(UnsupportedOperationError, match=r"panns-infer\[onnx\]"):
        to_onnx("Cnn14", tmp_path / "x.onnx", offline=True)
    assert not list(tmp_path.iterdir())


@requires_fixtures
def test_cli_exports(onnx_deps, fixture_checkpoint, tmp_path, capsys):
    out = tmp_path / "cnn6.onnx"
    assert main(["--export-onnx", str(out), "-c", str(fixture_checkpoint("Cnn6"))]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert _session(out).get_outputs()[0].name == "clipwise_output"
