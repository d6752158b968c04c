"""panns-tag's exit status in every output mode: 1 whenever a file failed, 0 when none did, so
that scripts can tell a failed run."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import soundfile

import panns_infer.cli as cli
from conftest import requires_fixtures
from panns_infer.cli import main

# (extra arguments, output file name or None, whether the mode needs a decision-level checkpoint)
MODES = {
    "text": ([], None, False),
    "json": (["--format", "json"], None, False),
    "jsonl file": ([], "out.jsonl", False),
    "csv file": ([], "out.csv", False),
    "embeddings": (["--embeddings", "{tmp}/emb.npz"], "out.jsonl", False),
    "embeddings only": (["--embeddings", "{tmp}/emb.npz"], None, False),
    "events text": (["--events"], None, True),
    "events json": (["--events", "--format", "json"], None, True),
    "events tsv": (["--events", "--format", "tsv"], None, True),
    "events jsonl file": (["--events"], "events.jsonl", True),
    "events tsv file": (["--events"], "events.tsv", True),
}


@pytest.fixture(scope="module")
def checkpoints(fixture_checkpoint):
    return {False: str(fixture_checkpoint("Cnn6")),
            True: str(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"))}


def _run(mode, files, checkpoints, labels_csv, tmp_path):
    extra, output, sed = MODES[mode]
    args = [*files, "-c", checkpoints[sed], "--labels", str(labels_csv), "--no-progress"]
    args += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    if output:
        args += ["--output", str(tmp_path / output)]
    return main(args)


@requires_fixtures
@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_failed_file_makes_the_exit_status_1_in_every_mode(mode, checkpoints, labels_csv, tmp_path, capsys):
    good = tmp_path / "good.wav"
    soundfile.write(good, (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32), 32000)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    (tmp_path / "a").mkdir()
    assert _run(mode, [str(bad), str(good)], checkpoints, labels_csv, tmp_path / "a") == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "Traceback" not in err
    assert [line for line in lines if line.startswith(f"panns-tag: {bad}: ") and "cannot" in line], err  # file, why
    assert "panns-tag: 1 of 2 file(s) failed" in lines, err
    (tmp_path / "b").mkdir()
    assert _run(mode, [str(good)], checkpoints, labels_csv, tmp_path / "b") == 0


def test_a_reader_that_went_away_ends_quietly_with_141(monkeypatch, tmp_path):
    """The broken pipe of ``panns-tag ... | head -1`` (in a real pipe in tests/test_pipes.py):
    status 141, and stdout and stderr now point at the null device, so what is left in their
    buffers cannot fail again."""
    out, err = open(tmp_path / "out", "w"), open(tmp_path / "err", "w")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)

    def gone(args, parser):
        raise BrokenPipeError

    monkeypatch.setattr(cli, "_run", gone)
    assert main(["x.wav"]) == 141
    for stream in (out, err):
        stream.write("left in the buffer\n")
        stream.flush()
        stream.close()
    assert (tmp_path / "out").read_text() == "" and (tmp_path / "err").read_text() == ""


def test_streams_without_a_file_descriptor_do_not_stop_the_quiet_exit(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert cli._reader_gone() == 141


@pytest.mark.parametrize("error, status, message", [
    (KeyboardInterrupt(), 130, "panns-tag: interrupted"),
    (PermissionError(13, "Permission denied", "out.jsonl"), 2,
     "panns-tag: error: [Errno 13] Permission denied: 'out.jsonl'"),
])
def test_interrupts_and_refused_files_end_with_one_line(monkeypatch, capsys, error, status, message):
    def fail(args, parser):
        raise error

    monkeypatch.setattr(cli, "_run", fail)
    assert main(["x.wav"]) == status
    assert capsys.readouterr().err.splitlines() == [message]
