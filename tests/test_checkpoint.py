"""Checkpoint loading: layouts, detection, strict matching, and refusing unsafe files."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import zipfile

import numpy as np
import pytest
import torch

from conftest import FIXTURES, HAVE_FIXTURES, make_checkpoint_module, requires_fixtures
from panns_infer.checkpoint import detect_architecture, load_model, read_state_dict
from panns_infer.errors import (
    ArchitectureError,
    CheckpointError,
    CheckpointNotFoundError,
    PannsError,
    UnknownModelError,
    UnsafeCheckpointError,
)
from panns_infer.models import build_model, list_architectures
from panns_infer.registry import CHECKPOINTS


def _spec_archs() -> list[str]:
    if not HAVE_FIXTURES:
        return ["(fixtures absent)"]
    return sorted(p.stem for p in (FIXTURES / "specs").glob("*.json"))


def _meta_state(arch: str) -> dict:
    spec = json.loads((FIXTURES / "specs" / f"{arch}.json").read_text())
    return {k["name"]: torch.empty(k["shape"], device="meta") for k in spec["keys"]}


@requires_fixtures
@pytest.mark.parametrize("arch", _spec_archs())
def test_every_fixture_spec_is_detected_and_matches_our_network(arch):
    state = _meta_state(arch)
    assert detect_architecture(state, filename=CHECKPOINTS[arch].filename) == arch
    with torch.device("meta"):
        ours = build_model(arch).state_dict()
    assert list(ours) == list(state) or set(ours) == set(state)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}


@requires_fixtures
def test_every_supported_architecture_has_a_spec():
    assert set(list_architectures()) == set(_spec_archs())


@requires_fixtures
def test_decision_level_max_needs_its_name():
    state = _meta_state("Cnn14_DecisionLevelMax")
    assert detect_architecture(state) == "Cnn14"
    assert detect_architecture(state, filename="/x/Cnn14_DecisionLevelMax_mAP=0.385.pth") == "Cnn14_DecisionLevelMax"


@pytest.fixture(scope="module")
def cnn6_state():
    _, state = make_checkpoint_module().build_state_dict("Cnn6")
    return state


@requires_fixtures
@pytest.mark.parametrize("layout", ["zenodo", "plain", "bare"])
def test_layouts_load(layout, cnn6_state, tmp_path):
    path = tmp_path / "c.pth"
    make_checkpoint_module().save(cnn6_state, path, layout)
    state = read_state_dict(path)
    assert set(state) == set(cnn6_state)
    assert all(torch.equal(state[k], cnn6_state[k]) for k in state)
    assert load_model(path).arch == "Cnn6"


@requires_fixtures
def test_module_prefix_is_stripped(cnn6_state, tmp_path):
    path = tmp_path / "dp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in cnn6_state.items()}}, path)
    assert load_model(path).arch == "Cnn6"


@requires_fixtures
def test_half_precision_weights_are_converted(cnn6_state, tmp_path):
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in cnn6_state.items()}, path)
    model = load_model(path)
    assert model.conv_block1.conv1.weight.dtype == torch.float32
    ref = cnn6_state["conv_block1.conv1.weight"]
    assert torch.allclose(model.conv_block1.conv1.weight, ref, atol=1e-3) and not torch.equal(
        model.conv_block1.conv1.weight, ref)


@requires_fixtures
def test_arch_override_and_mismatch(cnn6_state, tmp_path):
    path = tmp_path / "c.pth"
    torch.save(cnn6_state, path)
    with pytest.raises(ArchitectureError, match=r"does not match architecture Cnn10.*looks like Cnn6"):
        load_model(path, arch="Cnn10")
    missing = dict(cnn6_state)
    del missing["fc1.bias"]
    torch.save(missing, path)
    with pytest.raises(ArchitectureError, match="missing key"):
        load_model(path, arch="Cnn6")
    extra = dict(cnn6_state, **{"extra.weight": torch.zeros(3)})
    torch.save(extra, path)
    with pytest.raises(ArchitectureError, match="unexpected key"):
        load_model(path, arch="Cnn6")
    wrong = dict(cnn6_state, **{"fc1.bias": torch.zeros(7)})
    torch.save(wrong, path)
    with pytest.raises(ArchitectureError, match="wrong shape"):
        load_model(path, arch="Cnn6")


def test_unknown_state_dict_names_the_supported_architectures(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ArchitectureError, match="Supported: .*Cnn14"):
        load_model(path)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PANNS_TEST_MARKER']}",))


def test_code_in_a_pickle_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "payload_ran"
    monkeypatch.setenv("PANNS_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    torch.save({"model": {"fc1.weight": torch.zeros(1)}, "x": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="nothing from it was executed"):
        load_model(path)
    assert not marker.exists()
    # A plain pickle file (not torch's zip format) with the same payload is refused too.
    with open(tmp_path / "evil2.pth", "wb") as f:
        pickle.dump({"model": _Payload()}, f)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil2.pth")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 10, random.Random(7).randbytes(4096), b"PK\x03\x04 not really a zip"],
    ids=["empty", "zeros", "random-bytes", "zip-magic-only"],  # stable ids: test selection by node id
)
def test_garbage_files_are_checkpoint_errors(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert isinstance(info.value, PannsError) and isinstance(info.value, ValueError)


@requires_fixtures
def test_truncated_checkpoint(cnn6_state, tmp_path):
    path = tmp_path / "full.pth"
    make_checkpoint_module().save(cnn6_state, path, "zenodo")
    data = path.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.pth"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_model(bad)


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.pth")
    with pytest.raises(CheckpointNotFoundError, match="is a directory") as info:
        load_model(tmp_path)
    assert isinstance(info.value, FileNotFoundError)


def test_non_state_dict_contents(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_model(path)


# --- files that are not checkpoints, and architecture names in any case ------------------


@pytest.mark.parametrize("name, write, what", [
    ("clip.wav", lambda p: __import__("soundfile").write(p, [0.0] * 800, 16000), "WAV audio"),
    ("model.onnx", lambda p: p.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x052.0.0"), "ONNX model"),
    ("weights.pth", lambda p: p.write_bytes(b"fLaC\x00\x00\x00\x22" + b"\x00" * 64), "FLAC audio"),
    ("weights.pth", lambda p: p.write_bytes(b'<!DOCTYPE html><html>Not Found</html>'), "error page"),
    ("embeddings.npy", lambda p: __import__("numpy").save(p, [1.0, 2.0]), "NumPy"),
])
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path, name, write, what):
    path = tmp_path / name
    write(path)
    with pytest.raises(CheckpointError, match=what) as info:
        load_model(path)
    assert "download it again" not in str(info.value) and "torch.save" in str(info.value)


@requires_fixtures
def test_architecture_names_in_any_case(cnn6_state, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(cnn6_state, path)
    assert build_model("cnn6").arch == "Cnn6" and load_model(path, arch="CNN6").arch == "Cnn6"
    assert build_model("cnn14_decisionlevelmax").arch == "Cnn14_DecisionLevelMax"
    with pytest.raises(UnknownModelError):
        build_model("cnn7")


@pytest.mark.parametrize("version", ["2.1.2", "2.5.1+cpu"])
def test_an_old_torch_is_named_not_blamed_on_the_file(tmp_path, monkeypatch, version):
    import panns_infer.checkpoint as ckpt
    from panns_infer.errors import DependencyError

    path = tmp_path / "Cnn6.pth"
    torch.save({"model": build_model("Cnn6").state_dict()}, path)
    monkeypatch.setattr(ckpt.torch, "__version__", version)
    with pytest.raises(DependencyError, match=r"torch >= 2\.6.*torch " + version.replace("+", r"\+")) as info:
        load_model(path)
    assert "corrupt" not in str(info.value) and isinstance(info.value, RuntimeError)


def _torch_zip_with_pickle(path, pickled: bytes) -> None:
    """A torch zip checkpoint whose ``data.pkl`` is ``pickled`` (everything else as torch wrote it)."""
    buf = io.BytesIO()
    torch.save({"model": {}}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, pickled if info.filename.endswith("/data.pkl") else src.read(info))


def _payloads(marker: str) -> dict[str, bytes]:
    """Pickles (protocol 0 opcodes) that create ``marker`` when unpickled, each through another
    dangerous global."""
    shell = f"touch {marker}"
    code = f"__import__('pathlib').Path({marker!r}).touch()"
    return {
        "os.system": f"cos\nsystem\n(V{shell}\ntR.".encode(),
        "posix.system": f"cposix\nsystem\n(V{shell}\ntR.".encode(),
        "builtins.eval": f"cbuiltins\neval\n(V{code}\ntR.".encode(),
        "builtins.exec": f"cbuiltins\nexec\n(V{code}\ntR.".encode(),
        "builtins.getattr": (f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR"
                             f"(V{shell}\ntR.").encode(),
        "subprocess.Popen": f"csubprocess\nPopen\n((Vtouch\nV{marker}\nltR.".encode(),
        "builtins.__import__": b"cbuiltins\n__import__\n(Vos\ntR.",
    }


@pytest.mark.parametrize("name", sorted(_payloads("x")))
def test_dangerous_globals_are_refused_and_never_run(tmp_path, name):
    marker = tmp_path / "payload_ran"
    payload = _payloads(str(marker))[name]
    path = tmp_path / "evil.pth"
    _torch_zip_with_pickle(path, payload)
    with pytest.raises(UnsafeCheckpointError, match="nothing from it was executed"):
        load_model(path)
    assert not marker.exists()
    if name != "builtins.__import__":  # prove the payload is live: plain pickle runs it
        result = pickle.loads(payload)
        if hasattr(result, "wait"):
            result.wait()
        assert marker.exists()


def test_unpickling_allowlist_is_exactly_numpys_array_reconstruction():
    """Any addition to the allowlist is a decision to review, so the set is pinned here."""
    from panns_infer.checkpoint import _numpy_globals

    names = set()
    for entry in _numpy_globals():
        obj, alias = entry if isinstance(entry, tuple) else (entry, None)
        names.add(alias or f"{obj.__module__}.{obj.__qualname__}")
    expected_dtypes = {f"numpy.dtypes.{type(np.dtype(c)).__name__}" for c in "?bhilqBHILQefdgFDG"}
    if not hasattr(np, "dtypes"):  # numpy < 1.25 has the same classes, as numpy.dtype[int64], ...
        expected_dtypes = {f"numpy.dtype[{np.dtype(c).type.__name__}]" for c in "?bhilqBHILQefdgFDG"}
    # numpy 2 renamed numpy.core to numpy._core; pickles name either, so both are allowed where they exist
    spellings = ("numpy._core", "numpy.core") if int(np.__version__.split(".")[0]) >= 2 else ("numpy.core",)
    assert names == {f"{module}.multiarray.{name}" for module in spellings for name in ("_reconstruct", "scalar")} \
        | {"numpy.ndarray", "numpy.dtype"} | expected_dtypes


# --- what the errors say: the part of a message a user acts on ---------------------------

_SAY_WHAT_TO_PASS = ("not a PyTorch checkpoint: pass a .pth file saved by torch.save (a state dict), a "
                     "registry name (see panns_infer.list_models()) or an http(s) URL")
_TEXT = "a text file (JSON, HTML or XML), e.g. an error page saved instead of the file"


@pytest.mark.parametrize("head, what", [
    (len(b'{"w":{}}').to_bytes(8, "little") + b'{"w":{}}', "a safetensors file"),
    (b'  \n{"error": "Not Found"}', _TEXT),
    (b'\t[1, 2, 3]', _TEXT),
    (b'<?xml version="1.0"?><Error/>', _TEXT),
    (b'\r\n<!doctype html><title>404</title>', _TEXT),
], ids=["safetensors-header", "json-after-whitespace", "json-array", "xml", "lowercase-doctype"])
def test_other_formats_are_named_whatever_the_file_is_called(tmp_path, head, what):
    path = tmp_path / "weights.pth"
    path.write_bytes(head)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value) == f"{str(path)!r} is {what}, {_SAY_WHAT_TO_PASS}"


def test_a_file_of_other_bytes_is_reported_as_unreadable_not_as_another_format(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"\x01" * 8 + b"{x" + b"\x00" * 30)  # no magic, no JSON after 8 bytes
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as info:
        load_model(path)
    assert "download it again" in str(info.value)


@pytest.mark.parametrize("data, opcode", [(b"\x80\x02\x82\x01.", 130), (b"\x80\x02P1\n.", 80)],
                         ids=["EXT1", "PERSID"])
def test_an_unsupported_pickle_opcode_is_named(tmp_path, data, opcode):
    path = tmp_path / "odd.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert f"not a readable PyTorch checkpoint (Unsupported operand {opcode}); it may be truncated" in str(info.value)


def test_unpickling_detail_picks_the_informative_line():
    from panns_infer.checkpoint import _unpickling_detail

    text = "Weights only load failed.\n\n  Please file an issue\nUnsupported operand 130\nmore"
    assert _unpickling_detail(text) == "Unsupported operand 130"
    torch26 = "Weights only load failed.\nPlease file an issue: WeightsUnpickler error: Unsupported operand 130\n"
    assert _unpickling_detail(torch26) == "Unsupported operand 130"
    assert _unpickling_detail("first\nTrying to load unsupported GLOBAL os.system") == \
        "Trying to load unsupported GLOBAL os.system"
    assert _unpickling_detail("\n  " + "x" * 300 + "\nsecond") == "x" * 200
    assert _unpickling_detail("  \n ") == "unpickling failed"


def test_first_line_of_an_error_names_its_type():
    from panns_infer.checkpoint import _first_line

    assert _first_line(RuntimeError("  storage too small\ndetails")) == "RuntimeError: storage too small"
    assert _first_line(EOFError()) == "EOFError"
    assert _first_line(ValueError("y" * 300)) == "ValueError: " + "y" * 200


@requires_fixtures
def test_verify_checkpoint_file_accepts_its_architecture_only(cnn6_state, tmp_path):
    from panns_infer.checkpoint import verify_checkpoint_file

    path = tmp_path / "download.part"
    torch.save(cnn6_state, path)
    verify_checkpoint_file(path, arch="Cnn6")
    with pytest.raises(ArchitectureError, match="does not match architecture Cnn10"):
        verify_checkpoint_file(path, arch="Cnn10")
    with pytest.raises(CheckpointNotFoundError):
        verify_checkpoint_file(tmp_path / "absent.pth", arch="Cnn6")


@requires_fixtures
def test_a_mismatched_state_dict_is_described_key_by_key(cnn6_state):
    state = dict(cnn6_state)
    for key in ["conv_block1.conv1.weight", "conv_block1.bn1.weight", "conv_block1.bn1.bias",
                "conv_block1.bn1.running_mean"]:
        del state[key]
    state.update({"extra.weight": torch.zeros(3), "fc1.bias": torch.zeros(7),
                  "fc_audioset.bias": torch.zeros(527, dtype=torch.int64)})
    with pytest.raises(ArchitectureError) as info:
        load_model(state, arch="Cnn6")
    assert str(info.value) == (
        "the state dict does not match architecture Cnn6: 4 missing key(s), e.g. ['conv_block1.conv1.weight', "
        "'conv_block1.bn1.weight', 'conv_block1.bn1.bias']; 1 unexpected key(s), e.g. ['extra.weight']; "
        "1 wrong shape(s), e.g. ['fc1.bias (7,) (expected (512,))']; 1 wrong dtype(s), e.g. "
        "['fc_audioset.bias torch.int64 (expected torch.float32)'].")
    with pytest.raises(ArchitectureError) as info:
        load_model(cnn6_state, arch="Cnn10")
    assert str(info.value).startswith("the state dict does not match architecture Cnn10: ")
    assert str(info.value).endswith(". The file looks like Cnn6.")


@pytest.mark.parametrize("tensor, what", [
    (lambda: torch.zeros(3, dtype=torch.bool), "bool"),
    (lambda: torch.zeros(3, dtype=torch.complex64), "complex64"),
    (lambda: torch.zeros(3).to_sparse(), "sparse_coo"),
    (lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]), "nested"),
], ids=["bool", "complex", "sparse", "nested"])
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_tensors_that_cannot_be_weights_are_named_with_their_kind(tmp_path, tensor, what):
    path = tmp_path / "odd.pth"
    torch.save({"fc1.weight": torch.zeros(2), "fc1.bias": tensor()}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value) == (f"{str(path)!r}: tensors that cannot be weights: fc1.bias ({what}); a checkpoint "
                               "holds dense real-valued tensors, as model.state_dict() gives them")


@requires_fixtures
@pytest.mark.parametrize("change", ["no block 6", "fc1 narrower input", "fc1 of another width"])
def test_a_cnn14_like_state_that_is_no_released_shape_is_not_guessed(change):
    state = dict(_meta_state("Cnn14"))
    if change == "no block 6":
        state = {k: v for k, v in state.items() if not k.startswith("conv_block6.")}
    elif change == "fc1 narrower input":
        state["fc1.weight"] = torch.empty(2048, 1024, device="meta")
    else:
        state["fc1.weight"] = torch.empty(1024, 2048, device="meta")
    with pytest.raises(ArchitectureError, match="matches no supported architecture"):
        detect_architecture(state)


def test_an_unknown_state_dict_is_described_by_its_first_keys():
    state = {f"layer{i}.weight": torch.zeros(1) for i in range(8)}
    with pytest.raises(ArchitectureError) as info:
        detect_architecture(state)
    assert str(info.value) == (
        "the state dict (8 keys, starting layer0.weight, layer1.weight, layer2.weight, layer3.weight, "
        "layer4.weight, layer5.weight) matches no supported architecture. "
        f"Supported: {', '.join(list_architectures())}. If it is one of them, pass arch=.")


def test_what_a_file_holds_instead_of_a_state_dict_is_said(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value) == (f"{str(path)!r} holds list, not a state dict: expected {{'model': state_dict}} "
                               "or a bare state dict of tensors")


def test_entries_that_are_not_tensors_are_listed_up_to_five():
    state = {f"w{i}": i for i in range(7)}
    with pytest.raises(CheckpointError) as info:
        load_model(state)
    assert str(info.value) == "state dict: entries that are not named tensors: ['w0', 'w1', 'w2', 'w3', 'w4']"


def test_tensors_that_cannot_be_weights_are_listed_up_to_five():
    state = {f"w{i}": torch.zeros(2, dtype=torch.bool) for i in range(7)}
    with pytest.raises(CheckpointError) as info:
        load_model(state)
    assert str(info.value).startswith("state dict: tensors that cannot be weights: w0 (bool), w1 (bool), "
                                      "w2 (bool), w3 (bool), w4 (bool); a checkpoint")


def test_non_finite_weights_are_listed_up_to_three():
    state = {f"w{i}": torch.tensor([1.0, float("nan") if i % 2 else float("inf")]) for i in range(5)}
    with pytest.raises(CheckpointError) as info:
        load_model(state)
    assert str(info.value) == ("state dict holds NaN or infinite values in 5 tensor(s), e.g. w0, w1, w2; the file "
                               "is corrupt: download it again, or re-export it from a model whose weights are finite")


@requires_fixtures
def test_reduced_precision_weights_are_converted_and_named(cnn6_state, caplog):
    import logging

    state = {k: (v.half() if k.startswith("fc") else v.bfloat16()) if v.is_floating_point() else v
             for k, v in cnn6_state.items()}
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        model = load_model(state)
    assert model.arch == "Cnn6" and all(p.dtype == torch.float32 for p in model.parameters())
    assert caplog.messages == ["state dict holds torch.bfloat16/torch.float16 weights; converting them to float32 "
                               "(outputs will differ from the float32 original by the rounding already in the file)"]
