"""``panns-tag`` writing into a closed pipe (``| head -1``): a quiet stop, records kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import requires_fixtures

REPO = Path(__file__).resolve().parents[1]
BROKEN_PIPE = 141


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def _closed_pipe() -> int:
    """The write end of a pipe whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    return write


def _into_closed_stdout(*args: str) -> subprocess.CompletedProcess:
    write = _closed_pipe()
    try:
        return subprocess.run([sys.executable, "-m", "panns_infer.cli", *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=_env(), timeout=300)
    finally:
        os.close(write)


def _read_one_line_then_close(*args: str) -> tuple[str, int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "panns_infer.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    return first, proc.wait(timeout=300), err


def _wav(path: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    soundfile.write(path, (rng.standard_normal(32000) * 0.1).astype(np.float32), 32000)
    return str(path)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_list_models_into_a_closed_pipe_is_quiet(fmt):
    proc = _into_closed_stdout("--list-models", "--format", fmt)
    assert proc.returncode == BROKEN_PIPE and proc.stderr == ""
    first, code, err = _read_one_line_then_close("--list-models", "--format", fmt)
    assert first.strip() and code in (0, BROKEN_PIPE) and err == ""


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("clips")
    return [_wav(folder / f"clip{i}.wav", seed=i) for i in range(12)]


@requires_fixtures
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_tags_into_a_closed_pipe_are_quiet(fixture_checkpoint, labels_csv, clips, fmt):
    args = [*clips, "-c", str(fixture_checkpoint("Cnn6")), "--labels", str(labels_csv), "--format", fmt]
    proc = _into_closed_stdout(*args)
    assert proc.returncode == BROKEN_PIPE and proc.stderr == ""
    first, code, err = _read_one_line_then_close(*args)
    assert first.strip() and code in (0, BROKEN_PIPE) and err == ""
    if fmt == "json":
        assert json.loads(first)["path"] == clips[0]


@requires_fixtures
@pytest.mark.slow
def test_a_corpus_run_keeps_its_records_when_its_stderr_reader_goes(fixture_checkpoint, labels_csv, clips, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")  # its failure report goes to the closed stderr
    out = tmp_path / "tags.jsonl"
    write = _closed_pipe()
    try:
        proc = subprocess.run([sys.executable, "-m", "panns_infer.cli", clips[0], str(bad), *clips[1:4], "-c",
                               str(fixture_checkpoint("Cnn6")), "--labels", str(labels_csv), "--output",
                               str(out), "--no-progress"],
                              stdout=subprocess.PIPE, stderr=write, text=True, env=_env(), timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == BROKEN_PIPE
    records = [json.loads(line) for line in out.read_text().splitlines()[1:]]  # after the header line
    assert os.path.realpath(clips[0]) in [r["path"] for r in records]  # written before the failure report, and kept
