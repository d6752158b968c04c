"""Checkpoint errors word for word, and the checks whose only visible effect is what they say:
how many examples a mismatch lists, which line a warning points at, the front-end tensors a
checkpoint must carry and the exact ones that replace rounded copies."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

from conftest import make_checkpoint_module, requires_fixtures
from panns_infer.checkpoint import _torch_version, load_model, require_torch
from panns_infer.errors import (
    AmbiguousArchitectureWarning,
    ArchitectureError,
    CheckpointError,
    CheckpointNotFoundError,
    DependencyError,
    UnsafeCheckpointError,
)
from panns_infer.frontend import build_frontend_state

WHERE = ("; pass a .pth file, a registry name (see panns_infer.list_models()) or an http(s) URL")
CORRUPT = "; it may be truncated or corrupt: download it again"


@pytest.fixture(scope="module")
def cnn6_state():
    return make_checkpoint_module().build_state_dict("Cnn6")[1]


def test_a_missing_file_and_a_folder_are_named_exactly(tmp_path):
    absent = tmp_path / "absent.pth"
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model(absent)
    assert str(info.value) == f"checkpoint {str(absent)!r} does not exist" + WHERE
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model(tmp_path)
    assert str(info.value) == f"checkpoint {str(tmp_path)!r} is a directory" + WHERE


class _Call:
    """Unpickles to a call of ``print``: a global outside the allowlist."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_an_unsafe_pickle_is_refused_with_the_whole_advice(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"fc1.weight": torch.zeros(1), "x": _Call()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_model(path)
    text = str(info.value)
    assert text.startswith(f"{str(path)!r} was refused: unpickling it needs objects other than tensors and "
                           "numpy arrays, which could run code; nothing from it was executed (")
    assert text.endswith("). Only load checkpoints from sources you trust, saved as plain state dicts.")
    assert "GLOBAL print" in text
    assert capsys.readouterr().out == ""


def test_an_unreadable_file_is_named_with_what_went_wrong(tmp_path):
    odd = tmp_path / "odd.pth"
    odd.write_bytes(b"\x80\x02\x82\x01.")  # a pickle opcode the loader refuses
    with pytest.raises(CheckpointError) as info:
        load_model(odd)
    assert str(info.value) == f"{str(odd)!r} is not a readable PyTorch checkpoint (Unsupported operand 130)" + CORRUPT

    cut = tmp_path / "cut.pth"
    torch.save({"fc1.weight": torch.zeros(1000)}, cut)
    cut.write_bytes(cut.read_bytes()[:-200])
    with pytest.raises(CheckpointError) as info:
        load_model(cut)
    text = str(info.value)
    assert text.startswith(f"{str(cut)!r} is not a readable PyTorch checkpoint (") and text.endswith(")" + CORRUPT)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_compressed_zip_entries_are_refused_naming_the_first_three(tmp_path):
    path = tmp_path / "packed.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in ("a", "b", "c", "d"):
            archive.writestr(f"archive/{name}", b"\0" * 1000)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value) == (
        f"{str(path)!r} has compressed entries (archive/a, archive/b, archive/c), which torch.save never writes, "
        "so it was not saved by torch.save and is not inflated; re-save the weights with "
        "torch.save(state_dict, path)")


def test_require_torch_checks_the_version_it_is_given():
    require_torch()  # the installed one
    require_torch("2.6.0")
    require_torch("2.6.0a0+git1234")
    require_torch("3.0")
    for old in ("2.5.1", "2.5.99", "1.13.1"):
        with pytest.raises(DependencyError) as info:
            require_torch(old)
        assert str(info.value) == (
            f"panns_infer needs torch >= 2.6 to load checkpoints safely, but torch {old} is installed: upgrade it "
            "with pip install 'torch>=2.6'. The checkpoint file itself was not checked and may be fine.")


@pytest.mark.parametrize("text, version", [
    ("2.13.0+cpu", (2, 13)), ("2.6.0a0+git1234", (2, 6)), ("2.x", (2, 0)), ("10.1rc1", (10, 1)), ("2.5rc1", (2, 5)),
])
def test_torch_versions_are_read_as_major_and_minor(text, version):
    assert _torch_version(text) == version


@requires_fixtures
def test_a_mismatch_lists_three_examples_of_each_kind(cnn6_state):
    state = dict(cnn6_state)
    gone = ["conv_block1.conv1.weight", "conv_block1.bn1.weight", "conv_block1.bn1.bias",
            "conv_block1.bn1.running_mean", "conv_block1.bn1.running_var"]
    for key in gone:
        del state[key]
    state.update({f"extra{i}.weight": torch.zeros(1) for i in range(4)})
    reshaped = ["conv_block2.bn1.weight", "conv_block2.bn1.bias", "conv_block3.bn1.weight", "conv_block3.bn1.bias"]
    state.update({k: torch.zeros(5) for k in reshaped})
    retyped = ["conv_block4.bn1.weight", "conv_block4.bn1.bias", "fc1.bias", "fc_audioset.bias"]  # model order
    state.update({k: torch.zeros(cnn6_state[k].shape, dtype=torch.int64) for k in retyped})
    with pytest.raises(ArchitectureError) as info:
        load_model(state, arch="Cnn6")
    shapes = {k: tuple(cnn6_state[k].shape) for k in reshaped}
    assert str(info.value) == (
        f"the state dict does not match architecture Cnn6: 5 missing key(s), e.g. {gone[:3]}; "
        "4 unexpected key(s), e.g. ['extra0.weight', 'extra1.weight', 'extra2.weight']; "
        f"4 wrong shape(s), e.g. {[f'{k} (5,) (expected {shapes[k]})' for k in reshaped[:3]]}; "
        f"4 wrong dtype(s), e.g. {[f'{k} torch.int64 (expected torch.float32)' for k in retyped[:3]]}.")


@requires_fixtures
def test_the_ambiguity_warning_points_at_the_users_line(fixture_checkpoint, labels_csv, tmp_path):
    if os.environ.get("MUTANT_UNDER_TEST"):  # set by mutmut, whose trampolines sit between our frames
        pytest.skip("mutation runs call the package through frames of mutmut's own files")
    from panns_infer import AudioTagger

    blob = tmp_path / "weights.pth"  # a name that tells neither twin
    os.link(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"), blob)
    with pytest.warns(AmbiguousArchitectureWarning) as record:
        tagger = AudioTagger(blob, labels=labels_csv, device="cpu")
    assert tagger.arch == "Cnn14"
    warning = record.pop(AmbiguousArchitectureWarning)
    assert warning.filename == __file__
    with pytest.warns(AmbiguousArchitectureWarning) as record:
        load_model(blob)  # called directly: fewer of the package's frames lie between
    assert record.pop(AmbiguousArchitectureWarning).filename == __file__


@requires_fixtures
@pytest.mark.parametrize("key, said", [
    ("logmel_extractor.melW",
     "its mel filter bank (logmel_extractor.melW, shape (513, 64)) does not match the 32000 Hz configuration "
     "FrontEndConfig(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50.0, fmax=14000.0) "
     "(shape (513, 64)). The file was trained with another front end; pass the right arch= or report it."),
    ("spectrogram_extractor.stft.conv_real.weight",
     "its STFT kernels (spectrogram_extractor.stft.conv_real.weight, shape (513, 1, 1024)) are not a "
     "periodic-Hann DFT of size 1024."),
], ids=["mel", "stft"])
def test_front_end_tensors_of_another_configuration_are_refused_naming_the_file(cnn6_state, tmp_path, key, said):
    state = dict(cnn6_state)
    state[key] = state[key] * 1.01
    path = tmp_path / "other_front_end.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(info.value) == f"{str(path)!r}: {said}"


@requires_fixtures
def test_rounded_front_end_tensors_are_replaced_by_exact_ones(cnn6_state, tmp_path):
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in cnn6_state.items()}, path)
    loaded = load_model(path).state_dict()
    exact = build_frontend_state(load_model(cnn6_state).frontend_config)
    for key in ("logmel_extractor.melW", "spectrogram_extractor.stft.conv_real.weight",
                "spectrogram_extractor.stft.conv_imag.weight"):
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], torch.as_tensor(np.asarray(exact[key]))), key
        assert not torch.equal(loaded[key], cnn6_state[key].half().float()), key  # the file's copy was rounded


def test_an_archive_torch_cannot_read_is_named_or_reported_with_torchs_reason(tmp_path):
    """A zip that is no checkpoint fails inside torch's archive reader (not its unpickler): a
    NumPy archive is still named, and another zip gets torch's reason."""
    npz = tmp_path / "weights.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(CheckpointError) as info:
        load_model(npz)
    assert str(info.value) == (
        f"{str(npz)!r} is a NumPy archive, not a PyTorch checkpoint: pass a .pth file saved by torch.save "
        "(a state dict), a registry name (see panns_infer.list_models()) or an http(s) URL")
    other = tmp_path / "weights.pth"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_model(other)
    assert str(info.value).startswith(f"{str(other)!r} is not a readable PyTorch checkpoint (RuntimeError: ")
    assert str(info.value).endswith("); it may be truncated or corrupt: download it again")
