"""panns_infer.plot: figures of framewise results; matplotlib is optional."""

from __future__ import annotations

import os
import struct
import sys

import numpy as np
import pytest

from panns_infer import Framewise
from panns_infer.errors import InvalidArgumentError, PannsError, UnsupportedOperationError
from panns_infer.plot import plot_framewise

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def framewise() -> Framewise:
    names = [f"class {i}" for i in range(20)]
    p = np.full((300, 20), 0.05, dtype=np.float32)
    p[20:80, 7] = 0.9      # ranks: class 7 > class 3 > class 12 > the rest (all 0.05)
    p[100:200, 3] = 0.7
    p[150:160, 12] = 0.4
    return Framewise(p, 0.01, names, p.max(axis=0), "/clips/street.wav")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_with_and_without_logmel(framewise, tmp_path):
    pytest.importorskip("matplotlib")
    logmel = np.random.default_rng(0).standard_normal((300, 64)) * 10 - 40
    plain = plot_framewise(framewise, tmp_path / "plain.png", top_k=5)
    both = framewise.plot(tmp_path / "both.png", top_k=5, logmel=logmel)
    assert plain == tmp_path / "plain.png" and both == tmp_path / "both.png"
    for path in (plain, both):
        data = path.read_bytes()
        assert data.endswith(b"IEND\xaeB`\x82")
        assert len(data) > 10_000          # a drawn figure, not an empty canvas
    (w1, h1), (w2, h2) = png_size(plain.read_bytes()), png_size(both.read_bytes())
    assert w1 == w2 == 1000 and h2 > h1 > 200   # 10 in at 100 dpi; the log-mel panel adds height
    assert sorted(os.listdir(tmp_path)) == ["both.png", "plain.png"]   # no temporary files left


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF-"), (".svg", b"<?xml")])
def test_format_follows_the_extension(framewise, tmp_path, suffix, magic):
    pytest.importorskip("matplotlib")
    path = plot_framewise(framewise, tmp_path / f"fig{suffix.upper()}", top_k=3)
    assert path.read_bytes().startswith(magic)


def test_top_k_classes_by_framewise_maximum(framewise, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    with matplotlib.rc_context({"svg.fonttype": "none"}):   # keep text as text in the SVG
        plot_framewise(framewise, tmp_path / "fig.svg", top_k=3)
    svg = (tmp_path / "fig.svg").read_text()
    positions = [svg.find(f">class {i}<") for i in (7, 3, 12)]
    assert all(p >= 0 for p in positions), "the top 3 classes are labelled"
    assert positions == sorted(positions), "most probable first (top row)"
    assert ">class 0<" not in svg and ">class 19<" not in svg


def test_does_not_import_pyplot(framewise, tmp_path):
    pytest.importorskip("matplotlib")
    if "matplotlib.pyplot" in sys.modules:
        pytest.skip("pyplot was already imported by something else in this process")
    plot_framewise(framewise, tmp_path / "fig.png", top_k=2)
    assert "matplotlib.pyplot" not in sys.modules


def test_failed_save_keeps_the_existing_file(framewise, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    path = tmp_path / "fig.png"
    path.write_bytes(b"previous figure")

    def fail(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError, match="No space left"):
        plot_framewise(framewise, path)
    assert path.read_bytes() == b"previous figure"
    assert os.listdir(tmp_path) == ["fig.png"]


@pytest.mark.parametrize("options, name", [
    ({"top_k": 0}, "fig.png"),
    ({"top_k": True}, "fig.png"),
    ({"logmel": np.zeros(300)}, "fig.png"),
    ({}, "fig.unknownformat"),
    ({}, "fig"),
])
def test_invalid_arguments(framewise, tmp_path, options, name):
    pytest.importorskip("matplotlib")
    with pytest.raises(InvalidArgumentError):
        plot_framewise(framewise, tmp_path / name, **options)
    assert os.listdir(tmp_path) == []


def test_empty_result_is_refused(tmp_path):
    empty = Framewise(np.zeros((0, 3), dtype=np.float32), 0.01, ["a", "b", "c"], np.zeros(3))
    with pytest.raises(InvalidArgumentError, match="nothing to plot"):
        plot_framewise(empty, tmp_path / "fig.png")


def test_without_matplotlib_the_error_names_the_extra(framewise, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # makes `import matplotlib` fail
    for call in (lambda: plot_framewise(framewise, tmp_path / "fig.png"),
                 lambda: framewise.plot(tmp_path / "fig.png")):
        with pytest.raises(UnsupportedOperationError) as info:
            call()
        assert "pip install 'panns-infer[plot]'" in str(info.value)
        assert isinstance(info.value, PannsError)
        assert isinstance(info.value.__cause__, ImportError)
    assert os.listdir(tmp_path) == []
