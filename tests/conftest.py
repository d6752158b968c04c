"""Shared pytest fixtures: an isolated cache for every test, and a loopback HTTP server."""

from __future__ import annotations

import pytest

from http_server import LoopbackServer


def pytest_configure(config):
    """With PANNS_INFER_TEST_SESSIONS set (tools/mutation.py), each test session keeps its
    temporary files in that folder under its own process id, so that a sweeper can delete the
    folders of ended sessions (mutmut ends sessions without pytest's own clean-up)."""
    import os

    sessions = os.environ.get("PANNS_INFER_TEST_SESSIONS")
    if sessions and not config.option.basetemp:
        os.makedirs(sessions, exist_ok=True)
        config.option.basetemp = os.path.join(sessions, f"session-{os.getpid()}")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Point PANNS_INFER_CACHE at a fresh folder and clear the offline and mirror variables,
    so that no test reads or writes the user's real cache or depends on their environment."""
    monkeypatch.setenv("PANNS_INFER_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("PANNS_INFER_OFFLINE", raising=False)
    monkeypatch.delenv("PANNS_INFER_MIRROR", raising=False)


@pytest.fixture
def decoded(monkeypatch):
    """The sources ``tag_corpus`` decodes, in order (proof of what a run recomputes)."""
    from panns_infer.corpus import run as corpus_run

    seen: list = []
    real = corpus_run._prepare

    def spy(tagger, source, cap):
        seen.append(source)
        return real(tagger, source, cap)

    monkeypatch.setattr(corpus_run, "_prepare", spy)
    return seen


@pytest.fixture
def loopback_server():
    """A running :class:`http_server.LoopbackServer` on 127.0.0.1; add files with ``serve()``."""
    with LoopbackServer() as server:
        yield server


# --- parity fixtures from ../shared -------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

# PANNS_INFER_FIXTURES names the fixtures folder when the tests run from a copy of the
# checkout that is not beside ../shared (tools/mutation.py runs them from such a copy).
FIXTURES = Path(
    os.environ.get("PANNS_INFER_FIXTURES") or Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
).resolve()
HAVE_FIXTURES = (FIXTURES / "make_checkpoint.py").is_file()
requires_fixtures = pytest.mark.skipif(
    not HAVE_FIXTURES,
    reason=f"parity fixtures not found at {FIXTURES} (the ../shared folder beside the checkout); "
           "they hold the checkpoints' specs and the reference outputs",
)


def make_checkpoint_module():
    """The fixtures' ``make_checkpoint`` module (skips the test when ../shared is absent)."""
    if not HAVE_FIXTURES:
        pytest.skip(f"parity fixtures not found at {FIXTURES}")
    if str(FIXTURES) not in sys.path:
        sys.path.insert(0, str(FIXTURES))
    import make_checkpoint

    return make_checkpoint


def load_goldens(arch: str):
    """(cases json, outputs npz, waveforms npz) of an architecture's reference outputs."""
    info = json.loads((FIXTURES / "goldens" / f"{arch}.json").read_text())
    outputs = dict(np.load(FIXTURES / "goldens" / f"{arch}.npz"))
    waves = dict(np.load(FIXTURES / "goldens" / info["waveforms"]))
    return info, outputs, waves


@pytest.fixture(scope="session")
def labels_csv() -> Path:
    if not HAVE_FIXTURES:
        pytest.skip(f"parity fixtures not found at {FIXTURES}")
    return FIXTURES / "class_labels_indices.csv"


def _save_checkpoint(arch: str, layout: str, path: Path) -> None:
    mc = make_checkpoint_module()
    _, state = mc.build_state_dict(arch)
    mc.save(state, path, layout)


def _checkpoint_store(arch: str, layout: str):
    """The built checkpoint in PANNS_INFER_TEST_CHECKPOINTS, building it there first; ``None``
    when that variable is unset. The checkpoints are deterministic, so runs that start many
    test sessions (tools/mutation.py) build each one once instead of once per session."""
    store = os.environ.get("PANNS_INFER_TEST_CHECKPOINTS")
    if not store:
        return None
    path = Path(store) / f"{arch}_{layout}.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        _save_checkpoint(arch, layout, partial)
        os.replace(partial, path)  # whole files only, also when two sessions build at once
    return path


@pytest.fixture(scope="session")
def fixture_checkpoint(tmp_path_factory):
    """``fixture_checkpoint(arch, layout="zenodo", name=None) -> Path``: a deterministic
    checkpoint in the released format, built once per session and deleted afterwards."""
    folder = tmp_path_factory.mktemp("checkpoints")
    built: dict = {}

    def build(arch: str, layout: str = "zenodo", name: str = None) -> Path:
        key = (arch, layout, name)
        if key not in built:
            path = folder / (name or f"{arch}_{layout}.pth")
            cached = _checkpoint_store(arch, layout)
            if cached is not None:
                shutil.copyfile(cached, path)  # a copy: a test may overwrite its file
            else:
                _save_checkpoint(arch, layout, path)
            built[key] = path
        return built[key]

    yield build
    for path in built.values():
        path.unlink(missing_ok=True)


def last_block_as(method: str):
    """A ``choose_method`` for monkeypatching ``panns_infer.fast``: the default choice, except
    that the two-bin layers (default ``"columns"``) run ``method``."""
    from panns_infer.fast import choose_method

    def choose(kernel: int, cin: int, cout: int, width: int) -> str:
        chosen = choose_method(kernel, cin, cout, width)
        return method if chosen == "columns" else chosen

    return choose
