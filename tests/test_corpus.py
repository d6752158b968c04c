"""Tagging a corpus: discovery, outputs, batching across files, errors, resume after a kill."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import requires_fixtures
from panns_infer import AudioTagger
from panns_infer.cli import main
from panns_infer.corpus import (
    EmbeddingStore,
    FileResult,
    RecordFile,
    RunHeader,
    discover,
    file_stat,
    read_manifest,
    record_key,
    tag_corpus,
)
from panns_infer.corpus import run as corpus_run
from panns_infer.engine import Engine
from panns_infer.errors import AudioDecodeError, InvalidArgumentError, OutputFileError

HEADER = RunHeader(model="test", sha256="0" * 64, arch="Cnn6", options={})

# name, seconds, rate, channels: formats, rates, stereo, a file longer than the 10 s window
# (run as windows: the taggers here use window=10.0, whole_up_to=0), one shorter than Cnn6's minimum
# (padded), and two of equal length
CORPUS = [
    ("a.wav", 1.0, 32000, 1),
    ("b.wav", 1.0, 32000, 2),
    ("c.flac", 2.5, 44100, 1),
    ("sub/d.ogg", 1.7, 16000, 2),
    ("sub/e.flac", 10.5, 22050, 1),
    ("sub/deep/f.wav", 0.1, 22050, 1),
]


def _emb_tol(embedding: np.ndarray) -> float:
    """Batch invariance of embeddings: 1e-5 of the vector's largest |value| (test_parity.py)."""
    return 1e-5 * max(1.0, float(np.abs(embedding).max()))


def _write(path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((max(1, int(seconds * rate)), channels)) * 0.1
    x[:, 0] += 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * np.arange(len(x)) / rate)
    soundfile.write(path, x.astype(np.float32), rate)
    return str(path)


def make_corpus(root: Path) -> list[str]:
    """The CORPUS files under ``root``, in the order discover() gives them."""
    paths = {name: _write(root / name, s, r, c, seed=i) for i, (name, s, r, c) in enumerate(CORPUS)}
    return [paths[n] for n in ("a.wav", "b.wav", "c.flac", "sub/d.ogg", "sub/e.flac", "sub/deep/f.wav")]


@pytest.fixture(scope="module")
def cnn6(fixture_checkpoint):
    return str(fixture_checkpoint("Cnn6"))


@pytest.fixture(scope="module")
def tagger(cnn6, labels_csv):
    return AudioTagger(cnn6, labels=labels_csv, device="cpu", window=10.0, whole_up_to=0)


@pytest.fixture
def run(cnn6, labels_csv):
    """``run(*args) -> exit status`` of panns-tag with the Cnn6 fixture checkpoint and labels."""
    def go(*args: str) -> int:
        return main([*args, "-c", cnn6, "--labels", str(labels_csv), "--no-progress",
                     "--window", "10", "--whole-up-to", "0"])
    return go



def _jsonl(path) -> list[dict]:
    """The records of a JSONL output (after its header line, which is checked)."""
    lines = Path(path).read_bytes().split(b"\n")
    assert json.loads(lines[0])["format"] == "panns-infer/records" and lines[-1] == b""
    return [json.loads(line) for line in lines[1:-1]]


# -- discovery ---------------------------------------------------------------------------------


def test_discover_directories_globs_and_manifests(tmp_path, monkeypatch, caplog):
    files = make_corpus(tmp_path / "c")
    (tmp_path / "c" / "notes.txt").write_text("not audio")
    (tmp_path / "c" / "._a.wav").write_bytes(b"\0" * 10)  # macOS resource fork: skipped
    (tmp_path / "c" / ".hidden").mkdir()
    _write(tmp_path / "c" / ".hidden" / "x.wav", 0.1, 32000)
    root = str(tmp_path / "c")
    assert discover([root]) == files[:3]
    assert discover([root], recursive=True) == files
    assert discover([root + "/**/*.wav"]) == [f for f in files if f.endswith(".wav")]
    assert discover([root + "/sub/*"]) == [files[3], files[5], files[4]]  # a folder matched by a glob: its files
    assert discover([root], extensions=["FLAC"], recursive=True) == [files[2], files[4]]
    assert discover([files[1], root, files[0]]) == [files[1], files[0], files[2]]  # each once, first place

    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "list.txt"
    manifest.write_text("# a comment\n\nc/sub/d.ogg\n  c/a.wav  \nc/missing.wav\nc/sub/deep\n")
    assert read_manifest(manifest) == ["c/sub/d.ogg", "c/a.wav", "c/missing.wav", "c/sub/deep"]
    found = discover(["@list.txt"])
    assert found == ["c/sub/d.ogg", "c/a.wav", "c/missing.wav", os.path.join("c/sub/deep", "f.wav")]
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        assert discover(["c/*.mp3", "c/sub/deep/.."]) == [os.path.join("c/sub/deep/..", n) for n in ("d.ogg", "e.flac")]
    assert "no audio files match 'c/*.mp3'" in caplog.text
    with pytest.raises(InvalidArgumentError, match="cannot read manifest"):
        discover(["@nope.txt"])


@requires_fixtures
def test_cli_usage_errors_exit_2(run, tmp_path, capsys):
    wav = _write(tmp_path / "a.wav", 0.5, 32000)
    (tmp_path / "empty").mkdir()
    assert run(str(tmp_path / "empty")) == 2
    assert "no audio files found" in capsys.readouterr().err
    assert run("@" + str(tmp_path / "missing.txt")) == 2
    assert "cannot read manifest" in capsys.readouterr().err
    for args in (["--format", "csv"], ["-o", str(tmp_path / "tags.txt")], ["-o", str(tmp_path / "t.csv"), "--events"],
                 ["-o", str(tmp_path / "t.tsv")], ["-o", str(tmp_path / "t.csv"), "--format", "jsonl"],
                 ["--full"]):
        with pytest.raises(SystemExit) as info:
            run(wav, *args)
        assert info.value.code == 2, args
    with pytest.raises(SystemExit) as info:
        run(wav, "--embeddings", str(tmp_path / "emb.txt"))
    assert info.value.code == 2
    assert ".npz or .npy" in capsys.readouterr().err


# -- results -----------------------------------------------------------------------------------


@requires_fixtures
@pytest.mark.parametrize("workers", [0, 2])
def test_results_equal_tagging_each_file_alone(tagger, tmp_path, monkeypatch, workers):
    files = make_corpus(tmp_path)
    calls: list[list] = []
    real = Engine.forward

    def spy(self, jobs, outputs):
        calls.append([key for key, _ in jobs])
        return real(self, jobs, outputs)

    monkeypatch.setattr(Engine, "forward", spy)
    results = [r for batch in tag_corpus(tagger, files, top_k=5, embeddings=True, workers=workers) for r in batch]
    # files shared forward passes: the two 1 s clips, and windows of different files
    assert any(len({key[0] for key in keys}) > 1 for keys in calls)
    monkeypatch.setattr(Engine, "forward", real)
    assert [r.path for r in results] == files and all(r.ok for r in results)
    for r, path, (_, seconds, rate, _) in zip(results, files, CORPUS):
        alone = tagger.tag(path, top_k=5)
        emb = tagger.embed(path)
        assert r.tags.labels == alone.labels
        np.testing.assert_allclose(r.tags.probabilities, alone.probabilities, rtol=0, atol=1e-5)
        np.testing.assert_allclose(r.embedding, emb, rtol=0, atol=1e-5 * np.abs(emb).max())
        assert r.sample_rate == rate and r.duration == pytest.approx(seconds, abs=1e-3)
        assert (r.size, r.mtime) == file_stat(path)


@requires_fixtures
def test_a_file_past_the_decode_whole_limit_can_still_run_whole(cnn6, labels_csv, tmp_path):
    """whole_up_to above the 60 s a corpus decodes at once: the file is streamed into one span."""
    path = _write(tmp_path / "long.wav", 61.0, 16000)
    tagger = AudioTagger(cnn6, labels=labels_csv, device="cpu", whole_up_to=90)
    (result,), = list(tag_corpus(tagger, [path], top_k=3, workers=0))
    assert result.ok and result.duration == pytest.approx(61.0, abs=1e-3)
    np.testing.assert_allclose(result.tags.probabilities, tagger.tag(path).probabilities, rtol=0, atol=1e-5)
    whole = AudioTagger(cnn6, labels=labels_csv, device="cpu", window=None)
    np.testing.assert_allclose(result.tags.probabilities, whole.tag(path).probabilities, rtol=0, atol=1e-5)


def test_default_decoding_threads_leave_the_network_its_cores(monkeypatch):
    import torch

    monkeypatch.setattr(corpus_run.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert corpus_run._default_workers(torch.device("cpu")) == 0
    assert corpus_run._default_workers(torch.device("cuda")) == 2
    monkeypatch.setattr(corpus_run.os, "cpu_count", lambda: 32)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert corpus_run._default_workers(torch.device("cpu")) == 8
    assert corpus_run._default_workers(torch.device("cuda")) == 8


@requires_fixtures
def test_encoded_bytes_give_the_results_of_their_files(tagger, tmp_path):
    files = make_corpus(tmp_path)
    blobs = [Path(p).read_bytes() for p in files] + [b"not audio"]
    results = [r for batch in tag_corpus(tagger, blobs, top_k=3, embeddings=True, workers=2) for r in batch]
    assert [r.path for r in results] == [None] * len(blobs) and [r.size for r in results] == [len(b) for b in blobs]
    assert "cannot decode '9 bytes' as audio" in results[-1].error
    for r, path in zip(results, files):
        alone = tagger.tag(path, top_k=3)
        assert r.tags.labels == alone.labels  # e.flac, longer than the window, is resampled whole: 1e-6
        np.testing.assert_allclose(r.tags.probabilities, alone.probabilities, rtol=0, atol=1e-5)


@requires_fixtures
def test_jsonl_and_csv_records(run, tagger, tmp_path, capsys):
    files = make_corpus(tmp_path / "c")
    out = tmp_path / "tags.jsonl"
    assert run(str(tmp_path / "c"), "-r", "-k", "3", "-o", str(out), "--full") == 0
    records = _jsonl(out)
    assert [r["path"] for r in records] == files
    for r, path in zip(records, files):
        assert set(r) == {"path", "duration", "sample_rate", "model", "size", "mtime", "labels", "scores",
                          "probabilities"}
        assert (r["size"], r["mtime"]) == file_stat(path)
        assert len(r["labels"]) == 3 and len(r["probabilities"]) == 527
        alone = tagger.tag(path, top_k=3)
        assert r["labels"] == alone.labels
        np.testing.assert_allclose(r["scores"], alone.scores, rtol=0, atol=1e-5)
    assert capsys.readouterr().out == ""  # records go to the file, not stdout

    table = tmp_path / "tags.csv"
    assert run(str(tmp_path / "c"), "-r", "-k", "2", "-o", str(table)) == 0
    with open(table, newline="") as f:
        assert json.loads(f.readline()[1:])["options"]["top_k"] == 2  # the header line
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "duration", "sample_rate", "model", "size", "mtime", "label_1", "score_1",
                             "label_2", "score_2", "error"]
    assert [r["path"] for r in rows] == files
    for row, rec in zip(rows, records):
        assert row["label_1"] == rec["labels"][0] and float(row["score_1"]) == rec["scores"][0]
        assert int(row["size"]) == rec["size"] and float(row["mtime"]) == rec["mtime"] and row["error"] == ""
        assert float(row["duration"]) == pytest.approx(rec["duration"])
        assert int(row["sample_rate"]) == rec["sample_rate"]


@requires_fixtures
def test_bad_files_become_error_records_and_the_rest_finish(run, tmp_path, capsys):
    files = make_corpus(tmp_path / "c")
    (tmp_path / "c" / "text.wav").write_text("this is not audio")
    (tmp_path / "c" / "empty.flac").write_bytes(b"")
    out = tmp_path / "tags.jsonl"
    assert run(str(tmp_path / "c"), "-r", "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "2 of 8 file(s) failed" in err and "text.wav" in err and "Traceback" not in err
    records = {r["path"]: r for r in _jsonl(out)}
    assert set(records) == set(files) | {str(tmp_path / "c" / "text.wav"), str(tmp_path / "c" / "empty.flac")}
    assert all("labels" in records[f] and "error" not in records[f] for f in files)
    bad = records[str(tmp_path / "c" / "text.wav")]
    assert set(bad) == {"path", "duration", "sample_rate", "model", "size", "mtime", "error"}
    assert "cannot" in bad["error"]


@requires_fixtures
def test_debug_logs_each_failed_files_traceback(run, tmp_path, capsys, caplog):
    bad = tmp_path / "text.wav"
    bad.write_text("not audio")
    good = _write(tmp_path / "good.wav", 0.5, 32000)
    with caplog.at_level(logging.ERROR, logger="panns_infer"):
        assert run(str(bad), good, "--debug") == 1
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and str(bad) in logged[0].getMessage()
    assert logged[0].exc_info[0] is AudioDecodeError and logged[0].exc_info[2] is not None
    caplog.clear()
    assert run(str(bad), good) == 1  # without --debug: the one line, no traceback
    assert not [r for r in caplog.records if r.exc_info] and "Traceback" not in capsys.readouterr().err


# -- resume ------------------------------------------------------------------------------------


@requires_fixtures
def test_resume_skips_done_files_retries_errors_and_redoes_changed_ones(run, tagger, tmp_path, decoded, capsys):
    files = make_corpus(tmp_path / "c")
    bad = tmp_path / "c" / "bad.wav"
    bad.write_text("not audio yet")
    out, emb = tmp_path / "tags.jsonl", tmp_path / "emb.npz"
    assert run(str(tmp_path / "c"), "-r", "-o", str(out), "--embeddings", str(emb)) == 1
    assert len(decoded) == 7
    decoded.clear()
    assert run(str(tmp_path / "c"), "-r", "-o", str(out), "--embeddings", str(emb)) == 1
    assert decoded == [str(bad)]  # only the error is retried
    assert "6 of 7 file(s) already done" in capsys.readouterr().err

    decoded.clear()
    _write(bad, 0.7, 32000, seed=9)  # the bad file is fixed
    _write(Path(files[2]), 3.0, 44100, seed=5)  # new content and size
    st = os.stat(files[0])
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, newer mtime
    assert run(str(tmp_path / "c"), "-r", "-o", str(out), "--embeddings", str(emb)) == 0
    assert sorted(decoded) == sorted([files[0], files[2], str(bad)])
    records = _jsonl(out)
    assert sorted(r["path"] for r in records) == sorted(files + [str(bad)])  # each exactly once
    for r in records:
        assert "error" not in r and (r["size"], r["mtime"]) == file_stat(r["path"])
        np.testing.assert_allclose(r["scores"], tagger.tag(r["path"]).scores, rtol=0, atol=1e-5)
    z = np.load(emb)
    assert sorted(z["paths"].tolist()) == sorted(files + [str(bad)]) and z["embeddings"].shape == (7, 512)
    for p, row, size, mtime in zip(z["paths"], z["embeddings"], z["sizes"], z["mtimes"]):
        np.testing.assert_allclose(row, want := tagger.embed(str(p)), rtol=0, atol=_emb_tol(want))
        assert (int(size), float(mtime)) == file_stat(str(p))
    assert not Path(str(emb) + ".partial").exists()

    decoded.clear()
    assert run(str(tmp_path / "c"), "-r", "-o", str(out), "--embeddings", str(emb)) == 0
    assert decoded == []


@requires_fixtures
@pytest.mark.parametrize("name", ["tags.jsonl", "tags.csv"])
def test_a_torn_last_line_is_cut_and_its_file_redone(run, tmp_path, decoded, caplog, name):
    files = make_corpus(tmp_path / "c")
    out = tmp_path / name
    assert run(str(tmp_path / "c"), "-r", "-o", str(out)) == 0
    whole = out.read_bytes()
    out.write_bytes(whole[:-25])  # a kill in the middle of the last write
    decoded.clear()
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        assert run(str(tmp_path / "c"), "-r", "-o", str(out)) == 0
    assert "incomplete last record" in caplog.text
    assert decoded == [files[-1]]
    assert out.read_bytes() == whole  # the same bytes as the uninterrupted run


@requires_fixtures
def test_csv_written_with_other_columns_is_refused(run, tmp_path, capsys):
    wav = _write(tmp_path / "a.wav", 0.5, 32000)
    out = str(tmp_path / "tags.csv")
    assert run(wav, "-k", "3", "-o", out) == 0
    assert run(wav, "-k", "5", "-o", out) == 2
    assert "top_k: 3 in the file, 5 in this run" in capsys.readouterr().err
    assert run(wav, "-k", "5", "-o", out, "--overwrite") == 0
    assert "label_5" in Path(out).read_text().splitlines()[1]


SLOW_PANNS_TAG = """
import sys, time
from panns_infer.engine import Engine
forward = Engine.forward
def slow(self, *args, **kwargs):
    time.sleep(0.5)
    return forward(self, *args, **kwargs)
Engine.forward = slow
from panns_infer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@requires_fixtures
def test_kill_mid_run_then_resume(cnn6, labels_csv, run, tagger, tmp_path, decoded):
    root = tmp_path / "c"
    files = make_corpus(root) + [_write(root / "more" / f"g{i}.wav", 0.5 + 0.1 * i, 32000, seed=20 + i)
                                 for i in range(4)]
    out, emb = tmp_path / "tags.jsonl", tmp_path / "emb.npz"
    cmd = [sys.executable, "-c", SLOW_PANNS_TAG, str(root), "-r", "-c", cnn6, "--labels", str(labels_csv),
           "-o", str(out), "--embeddings", str(emb), "--batch-size", "1", "--workers", "1", "--no-progress",
           "--window", "10", "--whole-up-to", "0"]  # the resume below runs with these (they shape records)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:  # the header and two records
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    # the whole records on disk (a torn last line, if the kill hit a write, is cut by the resume)
    done_before = [json.loads(line) for line in out.read_bytes().split(b"\n")[1:-1]]
    assert 2 <= len(done_before) < len(files)
    assert not emb.exists() and Path(str(emb) + ".partial").exists()

    assert run(str(root), "-r", "-o", str(out), "--embeddings", str(emb)) == 0
    assert sorted(decoded) == sorted(set(files) - {r["path"] for r in done_before})  # nothing done twice
    records = _jsonl(out)
    assert records[:len(done_before)] == done_before
    assert sorted(r["path"] for r in records) == sorted(files)
    z = np.load(emb)
    assert sorted(z["paths"].tolist()) == sorted(files) and z["embeddings"].shape == (len(files), 512)
    for p, row in zip(z["paths"], z["embeddings"]):
        np.testing.assert_allclose(row, want := tagger.embed(str(p)), rtol=0, atol=_emb_tol(want))


# -- embeddings --------------------------------------------------------------------------------


@requires_fixtures
def test_npy_embeddings_with_paths_file_grow_on_resume(run, tagger, tmp_path, decoded):
    files = make_corpus(tmp_path / "c")
    out, emb = tmp_path / "tags.csv", tmp_path / "emb.npy"
    assert run(*files[:4], "-o", str(out), "--embeddings", str(emb)) == 0
    assert np.load(emb).shape == (4, 512)
    decoded.clear()
    assert run(*files, "-o", str(out), "--embeddings", str(emb)) == 0
    assert decoded == files[4:]
    paths = [json.loads(line)["path"] for line in Path(str(emb) + ".paths.jsonl").read_bytes().split(b"\n")[1:-1]]
    matrix = np.load(emb)
    assert paths == files and matrix.shape == (6, 512)
    for p, row in zip(paths, matrix):
        np.testing.assert_allclose(row, want := tagger.embed(p), rtol=0, atol=_emb_tol(want))


def test_embedding_journal_survives_a_torn_tail(tmp_path):
    store = EmbeddingStore(tmp_path / "e.npz", 4, header=HEADER)
    rows = {f"f{i}.wav": np.arange(4, dtype=np.float32) + i for i in range(3)}
    store.append([FileResult(p, size=10 + i, mtime=100.0 + i, embedding=v) for i, (p, v) in enumerate(rows.items())])
    store.close()
    partial = tmp_path / "e.npz.partial"
    partial.write_bytes(partial.read_bytes()[:-7])  # the last entry is torn
    store = EmbeddingStore(tmp_path / "e.npz", 4, header=HEADER)
    assert store.has("f0.wav", 10, 100.0) and store.has("f1.wav", 11, 101.0)
    assert not store.has("f2.wav", 12, 102.0) and not store.has("f0.wav", 10, 99.0)
    store.append([FileResult("f2.wav", size=12, mtime=102.0, embedding=rows["f2.wav"])])
    store.finalize()
    z = np.load(tmp_path / "e.npz")
    assert z["paths"].tolist() == [record_key(p) for p in rows]
    assert np.array_equal(z["embeddings"], np.stack(list(rows.values())))
    assert z["sizes"].tolist() == [10, 11, 12] and z["mtimes"].tolist() == [100.0, 101.0, 102.0]
    with pytest.raises(OutputFileError, match="shape"):
        EmbeddingStore(tmp_path / "e.npz", 8, header=HEADER)


def test_record_file_refuses_a_damaged_middle_line_and_keeps_the_file(tmp_path):
    out = tmp_path / "t.jsonl"
    good = [json.dumps({"path": record_key(f"{c}.wav"), "size": 1, "mtime": 2.0, "labels": []}) for c in "abc"]
    out.write_text(HEADER.to_json() + "\n" + good[0] + "\n" + good[1] + "\n" + good[2] + "\n")
    with RecordFile(out, header=HEADER, top_k=0) as records:
        assert records.is_done("b.wav", 1, 2.0) and not records.is_done("b.wav", 1, 3.0)
        assert records.drop(["a.wav", "zzz.wav"]) == 1
    assert out.read_text() == HEADER.to_json() + "\n" + "".join(g + "\n" for g in good[1:])
    damaged = HEADER.to_json() + "\n" + good[0] + "\n{garbage\n" + good[1] + "\n"
    out.write_text(damaged)
    with pytest.raises(OutputFileError, match="line 3"):
        RecordFile(out, header=HEADER, top_k=0)
    assert out.read_text() == damaged  # nothing lost


# -- events and stdout -------------------------------------------------------------------------


@requires_fixtures
def test_events_to_tsv_and_jsonl_files(run, tmp_path, capsys):
    files = make_corpus(tmp_path / "c")[:3]
    tsv, jsonl = tmp_path / "events.tsv", tmp_path / "events.jsonl"
    opts = ["--events", "--segment", "0.5", "--hop", "0.25", "--threshold", "0.6"]
    assert run(*files, *opts, "-o", str(tsv)) == 0
    lines = tsv.read_text().splitlines()
    assert lines[0] == "filename\tonset\toffset\tevent_label" and len(lines) > 1
    assert {line.split("\t")[0] for line in lines[1:]} <= set(files)  # the files' resolved paths
    assert Path(str(tsv) + ".jsonl").exists()  # its records, for the next resume
    assert run(*files, *opts, "-o", str(jsonl)) == 0
    records = _jsonl(jsonl)
    assert [r["path"] for r in records] == files and all(isinstance(r["events"], list) for r in records)
    assert sum(len(r["events"]) for r in records) == len(lines) - 1
    assert capsys.readouterr().out == ""


@requires_fixtures
def test_stdout_runs_take_directories_and_keep_their_format(run, tmp_path, capsys):
    files = make_corpus(tmp_path / "c")
    assert run(str(tmp_path / "c"), "--recursive", "--format", "json", "-k", "2") == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == files and all(len(r["labels"]) == 2 for r in records)
