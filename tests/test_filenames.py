"""Checkpoints by URL keep their real, safe file name; Cnn14 and Cnn14_DecisionLevelMax are told
apart by arch=, checksum or name, and a warning says so when nothing tells them apart."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import unicodedata
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_fixtures
from panns_infer import hub, registry
from panns_infer.checkpoint import load_model, read_state_dict
from panns_infer.errors import AmbiguousArchitectureWarning, PannsWarning
from panns_infer.filenames import MAX_NAME_LENGTH, disposition_file_name, safe_file_name, url_file_name


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _is_safe(name: str) -> bool:
    return (bool(name) and "/" not in name and "\\" not in name and ".." not in name
            and not name.startswith(".") and len(name) <= MAX_NAME_LENGTH + 1
            and not any(unicodedata.category(ch).startswith("C") for ch in name))


# --------------------------------------------------------------------------- names


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(raw=st.text(alphabet=st.characters(codec="utf-8"), max_size=400)
       | st.lists(st.sampled_from(["..", "/", "\\", "%2e", "%2f", "%5c", "\x00", ".", "a", "\n", "C:"]),
                  max_size=12).map("".join))
def test_a_safe_name_stays_in_its_folder(raw):
    name = safe_file_name(raw)
    if name is None:
        return
    assert _is_safe(name), name
    folder = Path("/cache/urls/0123456789abcdef")
    assert os.path.dirname(os.path.normpath(folder / name)) == str(folder)


@pytest.mark.parametrize("url, name", [
    ("https://zenodo.org/api/records/3987831/files/Cnn14_DecisionLevelMax_mAP%3D0.385.pth/content",
     "Cnn14_DecisionLevelMax_mAP=0.385.pth"),
    ("https://zenodo.org/record/3987831/files/Cnn6_mAP%3D0.343.pth?download=1", "Cnn6_mAP=0.343.pth"),
    ("https://example.org/files/model.pth/download", "model.pth"),
    ("https://example.org/api/content", "content"),
    ("https://example.org/a/%2e%2e%2f%2e%2e%2fx.pth", "x.pth"),
    ("https://example.org/", None),
])
def test_url_file_name(url, name):
    assert url_file_name(url) == name


# --------------------------------------------------------------------------- downloads


def test_zenodo_api_links_keep_the_file_name(loopback_server):
    data = b"weights" * 100
    url = loopback_server.serve("/api/records/1/files/Cnn14_DecisionLevelMax_mAP%3D0.385.pth/content", data)
    path = hub.download_url(url, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert path.name == "Cnn14_DecisionLevelMax_mAP=0.385.pth" and path.read_bytes() == data


def test_content_disposition_names_the_cached_file(loopback_server):
    data = b"w" * 5000
    url = loopback_server.serve("/get", data, headers={
        "Content-Disposition": 'attachment; filename="Cnn14_DecisionLevelMax_mAP=0.385.pth"'}) + "?id=7"
    path = hub.download_url(url, progress=False)
    assert path.name == "Cnn14_DecisionLevelMax_mAP=0.385.pth" and path.read_bytes() == data
    assert hub.download_url(url, progress=False) == path                    # from the cache
    assert hub.download_url(url, offline=True) == path
    assert loopback_server.count("/get") == 1
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")] == [path.name]


HOSTILE = ['attachment; filename="../../x"', 'attachment; filename="/etc/passwd"',
           'attachment; filename=%2e%2e%2f', 'attachment; filename="%2e%2e%2f%2e%2e%2fescape.pth"',
           'attachment; filename="a\x00b.pth"', 'attachment; filename="..\\\\..\\\\win.pth"',
           'attachment; filename=".bashrc"', 'attachment; filename="' + "A" * 5000 + '.pth"',
           "attachment; filename*=UTF-8''..%2F..%2F..%2Fevil.pth", 'attachment; filename="x.pth.lock"',
           'attachment; filename=".."', 'attachment; filename="C:\\\\Windows\\\\x.pth"']


@pytest.mark.parametrize("header", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_content_disposition_never_writes_outside_the_cache(loopback_server, header, tmp_path):
    cache = Path(os.environ["PANNS_INFER_CACHE"])
    data = os.urandom(3000)
    url = loopback_server.serve("/blob", data, headers={"Content-Disposition": header})
    before = set(_files_under(tmp_path.parent))
    path = hub.download_url(url, progress=False)
    assert path.read_bytes() == data and _is_safe(path.name)
    assert path.parent.parent == cache / "urls"
    new = set(_files_under(tmp_path.parent)) - before
    assert all(cache in p.parents for p in new), new
    assert hub.download_url(url, progress=False) == path and loopback_server.count("/blob") == 1


def test_disposition_names():
    assert disposition_file_name('attachment; filename="a\x00b.pth"') == "ab.pth"
    assert disposition_file_name("inline") is None and disposition_file_name(None) is None
    assert len(disposition_file_name('attachment; filename="' + "A" * 5000 + '.pth"')) == MAX_NAME_LENGTH
    assert disposition_file_name('attachment; filename="' + "A" * 5000 + '.pth"').endswith(".pth")


# --------------------------------------------------------------------------- Cnn14 or DecisionLevelMax


@pytest.fixture(scope="module")
def dlmax(fixture_checkpoint) -> Path:
    return fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth")


def _renamed(source: Path, folder: Path, name: str) -> Path:
    target = folder / name
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())
    return target


@pytest.fixture(scope="module")
def dlmax_sha256(dlmax) -> str:
    return hashlib.sha256(dlmax.read_bytes()).hexdigest()


@pytest.fixture
def released(dlmax, dlmax_sha256, monkeypatch):
    """The registry, pinned to the fixture: the fixture 'is' the released DecisionLevelMax file."""
    entry = dataclasses.replace(registry.CHECKPOINTS["Cnn14_DecisionLevelMax"],
                                checksum="sha256:" + dlmax_sha256, size=dlmax.stat().st_size)
    monkeypatch.setitem(registry.CHECKPOINTS, "Cnn14_DecisionLevelMax", entry)
    return entry


def _quiet_load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PannsWarning)
        return load_model(path, **kw)


@requires_fixtures
@pytest.mark.parametrize("name", ["weights.pth", "content", "Cnn14_mAP=0.431.pth"])
def test_a_released_file_is_recognised_by_checksum_whatever_its_name(released, dlmax, tmp_path, name):
    assert _quiet_load(_renamed(dlmax, tmp_path, name)).arch == "Cnn14_DecisionLevelMax"


@requires_fixtures
def test_two_fitting_architectures_and_nothing_to_choose_warns(dlmax, tmp_path, caplog):
    blob = _renamed(dlmax, tmp_path, "weights.pth")
    with pytest.warns(AmbiguousArchitectureWarning, match=r"arch='Cnn14_DecisionLevelMax'") as record:
        model = load_model(blob)
    # the warning is looked up by class: an old six in urllib3 1.2x adds ImportWarnings to the record
    assert model.arch == "Cnn14" and issubclass(record.pop(AmbiguousArchitectureWarning).category, UserWarning)
    assert "fits both Cnn14 and Cnn14_DecisionLevelMax" in caplog.text
    assert _quiet_load(blob, arch="Cnn14_DecisionLevelMax").arch == "Cnn14_DecisionLevelMax"
    assert _quiet_load(dlmax).arch == "Cnn14_DecisionLevelMax"                 # the name tells
    assert _quiet_load(_renamed(dlmax, tmp_path, "my_cnn14_finetune.pth")).arch == "Cnn14"


@requires_fixtures
@pytest.mark.slow
def test_a_decision_level_checkpoint_by_zenodo_url_loads_as_itself(loopback_server, dlmax, labels_csv):
    from panns_infer import AudioTagger

    data = dlmax.read_bytes()
    url = loopback_server.serve("/api/records/3987831/files/Cnn14_DecisionLevelMax_mAP%3D0.385.pth/content", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PannsWarning)
        tagger = AudioTagger(url, sha256=hashlib.sha256(data).hexdigest(), labels=labels_csv, device="cpu",
                             progress=False)
    assert tagger.arch == "Cnn14_DecisionLevelMax"
    assert tagger.checkpoint_path.name == "Cnn14_DecisionLevelMax_mAP=0.385.pth"


@requires_fixtures
def test_a_released_file_named_like_its_twin_loads_as_released_and_says_so(released, dlmax, tmp_path, caplog):
    path = _renamed(dlmax, tmp_path, "Cnn14_mAP=0.431.pth")
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        assert _quiet_load(path).arch == "Cnn14_DecisionLevelMax"
    assert caplog.messages == [f"{str(path)!r} is named like Cnn14 but is the released Cnn14_DecisionLevelMax "
                               "checkpoint (by its checksum); loading it as Cnn14_DecisionLevelMax"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        assert _quiet_load(dlmax).arch == "Cnn14_DecisionLevelMax"
    assert "named like" not in caplog.text


@requires_fixtures
def test_a_twin_state_dict_in_memory_is_settled_by_the_name_given(dlmax, caplog):
    state = read_state_dict(dlmax)
    assert _quiet_load(state, filename="Cnn14_DecisionLevelMax.pth").arch == "Cnn14_DecisionLevelMax"
    with pytest.warns(AmbiguousArchitectureWarning) as record, caplog.at_level(logging.WARNING, logger="panns_infer"):
        assert load_model(state).arch == "Cnn14"
    said = ("the state dict fits both Cnn14 and Cnn14_DecisionLevelMax (identical keys and shapes), and nothing "
            "names one: not arch=, not a registry name, not the file's name or checksum. Loading it as Cnn14 "
            "(clip-level tags; no framewise output). Pass arch='Cnn14' or arch='Cnn14_DecisionLevelMax' (--arch "
            "on the command line) to choose and silence this warning, or keep the architecture's name in the "
            "file name.")
    assert [str(w.message) for w in record] == [said] and caplog.messages == [said]


@requires_fixtures
def test_a_released_file_without_a_published_size_is_hashed_only_when_its_name_does_not_tell(
        released, dlmax, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.CHECKPOINTS, "Cnn14_DecisionLevelMax", dataclasses.replace(released, size=None))
    assert _quiet_load(_renamed(dlmax, tmp_path, "weights.pth")).arch == "Cnn14_DecisionLevelMax"
    # the name tells, so the file is not hashed: the name decides
    assert _quiet_load(_renamed(dlmax, tmp_path, "my_cnn14_finetune.pth")).arch == "Cnn14"


@requires_fixtures
def test_only_released_twins_settle_a_twin(dlmax, dlmax_sha256, tmp_path, monkeypatch):
    """A checksum listed for another architecture does not make a twin file that architecture."""
    monkeypatch.setitem(registry.CHECKPOINTS, "Cnn10", dataclasses.replace(
        registry.CHECKPOINTS["Cnn10"], checksum="sha256:" + dlmax_sha256, size=dlmax.stat().st_size))
    with pytest.warns(AmbiguousArchitectureWarning):
        assert load_model(_renamed(dlmax, tmp_path, "weights.pth")).arch == "Cnn14"
