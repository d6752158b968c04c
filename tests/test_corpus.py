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
    assert len(logged) == 1 and (logged[0].name, logged[0].getMessage()) == ("panns_infer", f"while tagging {bad}")
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
    assert f"panns-tag: 6 of 7 file(s) already done in {out} and {emb}; 1 to do" in capsys.readouterr().err.splitlines()

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


# -- headers, locks and record files (no model) ------------------------------------------------


def _header(**changes) -> RunHeader:
    fields = dict(model="Cnn6_mAP=0.343.pth", sha256="0123456789abcdef" * 4, arch="Cnn6",
                  options={"top_k": 3, "window": 10.0}, tool="panns-infer 9.9")
    fields.update(changes)
    return RunHeader(**fields)


FOREIGN = ("{!r} exists and was not written by panns-tag (it has no panns-infer header): it is left "
           "untouched. Choose another output file, or remove it yourself")


def test_run_header_is_written_as_one_sorted_json_line():
    h = _header(options={"b": 1, "a": "x\ny"})
    assert h.to_dict() == {"format": "panns-infer/records", "version": 1, "tool": "panns-infer 9.9",
                           "model": "Cnn6_mAP=0.343.pth", "checkpoint_sha256": "0123456789abcdef" * 4,
                           "arch": "Cnn6", "options": {"b": 1, "a": "x\ny"}}
    assert h.to_json() == ('{"arch": "Cnn6", "checkpoint_sha256": "' + "0123456789abcdef" * 4 + '", '
                           '"format": "panns-infer/records", "model": "Cnn6_mAP=0.343.pth", '
                           '"options": {"a": "x\\ny", "b": 1}, "tool": "panns-infer 9.9", "version": 1}')
    assert RunHeader.from_json(h.to_json(), "out.jsonl") == h and RunHeader.from_json(h.to_json(), "o").tool == h.tool
    assert RunHeader(model="m", sha256="s", arch="a").tool.startswith("panns-infer ")


def test_run_header_refuses_what_this_package_did_not_write():
    good = _header().to_dict()
    broken = [None, [good], {**good, "format": "other"}, {k: v for k, v in good.items() if k != "format"},
              {**good, "options": None}, {**good, "options": [1]}, {**good, "model": 3},
              {**good, "checkpoint_sha256": None}, {k: v for k, v in good.items() if k != "arch"}]
    for data in broken:
        with pytest.raises(OutputFileError) as info:
            RunHeader.from_dict(data, "out.jsonl")
        assert str(info.value) == FOREIGN.format("out.jsonl"), data
    for text in ("", "not json", "{", json.dumps(broken[2])):
        with pytest.raises(OutputFileError) as info:
            RunHeader.from_json(text, "t.csv")
        assert str(info.value) == FOREIGN.format("t.csv")
    bare = {k: v for k, v in good.items() if k != "tool"}
    assert RunHeader.from_dict(bare, "out.jsonl").tool == ""
    assert RunHeader.from_dict({**bare, "tool": 7}, "out.jsonl").tool == "7"


@pytest.mark.parametrize("tool, version, named", [("panns-infer 2.0", 2, "'panns-infer 2.0'"),
                                                   (None, None, "'another version'")])
def test_run_header_of_another_record_format_names_its_version(tool, version, named):
    data = {k: v for k, v in _header().to_dict().items() if k != "tool"}
    data["version"] = version
    if tool is not None:
        data["tool"] = tool
    with pytest.raises(OutputFileError) as info:
        RunHeader.from_dict(data, "tags.jsonl")
    assert str(info.value) == (f"'tags.jsonl' was written by {named} in a record format this version does not "
                               f"read (version {version!r}): choose another output file, or --overwrite to start "
                               "it again")


def test_run_header_names_each_difference():
    file = _header(options={"top_k": 3, "window": 10.0, "full": True})
    run = _header(model="other.pth", sha256="fedcba9876543210" * 4, arch="Cnn14",
                  options={"top_k": 5, "window": 10.0, "hop": 1.0})
    assert file.differences(run) == [
        "checkpoint: Cnn6_mAP=0.343.pth (sha256 0123456789ab...) in the file, "
        "other.pth (sha256 fedcba987654...) in this run",
        "arch: Cnn6 in the file, Cnn14 in this run",
        "full: True in the file, None in this run",
        "hop: None in the file, 1.0 in this run",
        "top_k: 3 in the file, 5 in this run"]
    assert file.differences(_header(options=dict(file.options), tool="panns-infer 0.0")) == []
    file.check(_header(options=dict(file.options)), "tags.jsonl")  # nothing differs: no error
    with pytest.raises(OutputFileError) as info:
        file.check(_header(arch="Cnn10", options={"top_k": 3, "window": 10.0}), "tags.jsonl")
    assert str(info.value) == ("'tags.jsonl' holds records made otherwise (arch: Cnn6 in the file, Cnn10 in this "
                               "run; full: True in the file, None in this run): resuming would mix them. Use the "
                               "same checkpoint and options, another output file, or --overwrite to start it again")


def test_checkpoint_sha256_reads_the_whole_file_and_notices_a_change(tmp_path):
    import hashlib

    from panns_infer.corpus import checkpoint_sha256

    big, small = tmp_path / "big.pth", tmp_path / "small.pth"
    big.write_bytes(bytes(range(256)) * 10_000)  # 2.4 MiB: read in several blocks
    small.write_bytes(b"weights")
    assert checkpoint_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    assert checkpoint_sha256(str(small)) == hashlib.sha256(b"weights").hexdigest()
    assert checkpoint_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()  # from the cache
    small.write_bytes(b"other weights")
    assert checkpoint_sha256(small) == hashlib.sha256(b"other weights").hexdigest()


def test_an_output_is_locked_while_a_run_writes_it(tmp_path):
    from panns_infer.corpus.header import Lock, output_lock

    out = str(tmp_path / "tags.jsonl")
    lock = Lock(out)
    with pytest.raises(OutputFileError) as info:
        Lock(out)
    assert str(info.value) == (f"another panns-tag run is writing {out!r} (it holds {out + '.lock'!r}): wait for "
                               "it to finish, or choose another output file")
    lock.release()
    lock.release()  # again: nothing happens
    with output_lock(out):
        with pytest.raises(OutputFileError, match="another panns-tag run is writing"):
            Lock(out)
    Lock(out).release()


def _tags(labels, scores, probabilities, names):
    from panns_infer.results import Tags

    return Tags(list(labels), np.asarray(scores, np.float32), np.asarray(probabilities, np.float32), list(names))


def test_csv_records_are_written_and_read_back_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ["Cat", "Dog", "Owl"]
    tags = _tags(["Dog", "Cat"], [0.5, 0.25], [0.25, 0.5, 0.125], names)
    odd = os.fsdecode(b"caf\xe9 \"1\",\r\nb.wav")  # not UTF-8; a quote, a comma and a line break
    out = tmp_path / "t.csv"
    h = _header(options={"top_k": 2, "full": True})
    with RecordFile(out, header=h, top_k=2, full=True, class_names=names) as records:
        records.append([FileResult("a.wav", size=3, mtime=1.5, duration=1.23456789, sample_rate=32000, tags=tags),
                        FileResult(odd, size=None, mtime=None, error="cannot decode"),
                        FileResult(None, size=9, error="bytes have no record"),
                        FileResult("e.wav", size=2, mtime=3.0, error="no audio")])
        assert records.is_done("a.wav", 3, 1.5) and not records.is_done(odd, None, None)
    a, b = record_key("a.wav").encode(), os.fsencode(record_key(odd)).replace(b'"', b'""')
    assert out.read_bytes() == (
        b"#" + h.to_json().encode() + b"\r\n"
        b"path,duration,sample_rate,model,size,mtime,label_1,score_1,label_2,score_2,error,Cat,Dog,Owl\r\n"
        + a + b",1.234568,32000,Cnn6_mAP=0.343.pth,3,1.5,Dog,0.5,Cat,0.25,,0.25,0.5,0.125\r\n"
        b'"' + b + b'",,,Cnn6_mAP=0.343.pth,,,,,,,cannot decode,,,\r\n'
        + record_key("e.wav").encode() + b",,,Cnn6_mAP=0.343.pth,2,3.0,,,,,no audio,,,\r\n")
    with RecordFile(out, header=h, top_k=2, full=True, class_names=names) as records:  # resumed
        assert records.is_done("./a.wav", 3, 1.5) and records.has(odd) and records.has("a.wav")
        assert not records.is_done(odd, None, None) and not records.has("b.wav")
        assert records.has("e.wav") and not records.is_done("e.wav", 2, 3.0)  # an error is done again
        assert not records.is_done("a.wav", 3, 1.0) and not records.is_done("a.wav", 4, 1.5)
        assert not records.is_done("a.wav", None, None)


def test_record_files_default_to_ten_labels_and_no_full_columns(tmp_path):
    out = tmp_path / "t.csv"
    with RecordFile(out, header=HEADER) as records:
        assert records.columns[6:] == [f"{kind}_{i}" for i in range(1, 11) for kind in ("label", "score")] + ["error"]
    assert out.read_bytes().split(b"\r\n")[1] == ",".join(records.columns).encode()
    with RecordFile(tmp_path / "records.txt", header=HEADER, format="jsonl", full=True) as records:
        tags = _tags(["Cat"], [0.75], [0.75, 0.5], ["Cat", "Dog"])
        records.append([FileResult("x.wav", size=1, mtime=2.0, tags=tags)])
    assert (tmp_path / "records.txt").read_bytes().split(b"\n")[1:] == [json.dumps(
        {"path": record_key("x.wav"), "duration": None, "sample_rate": None, "model": "test", "size": 1, "mtime": 2.0,
         "labels": ["Cat"], "scores": [0.75], "probabilities": {"Cat": 0.75, "Dog": 0.5}}).encode(), b""]


def test_jsonl_records_keep_odd_paths_and_resume_after_a_drop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    odd = os.fsdecode(b'a "quoted" \xff.wav')
    out = tmp_path / "t.jsonl"
    with RecordFile(out, header=HEADER, top_k=1) as records:
        records.append([])
        assert out.read_bytes() == HEADER.to_json().encode() + b"\n"  # nothing to write: nothing written
        records.append([FileResult(odd, size=1, mtime=2.0, duration=0.5, sample_rate=8000,
                                   tags=_tags(["Dog"], [0.5], [0.5], ["Dog"])),
                        FileResult("b.wav", size=5, mtime=6.0, error="cannot decode 'b.wav'"),
                        FileResult("c.wav", size=7, mtime=8.0, events=[])])
        assert records.is_done(odd, 1, 2.0) and records.is_done("c.wav", 7, 8.0)
        assert not records.is_done("b.wav", 5, 6.0) and records.has("b.wav")
    lines = out.read_bytes().split(b"\n")
    assert json.loads(lines[1]) == {"path": record_key(odd), "duration": 0.5, "sample_rate": 8000, "model": "test",
                                    "size": 1, "mtime": 2.0, "labels": ["Dog"], "scores": [0.5]}
    assert json.loads(lines[2])["error"] == "cannot decode 'b.wav'" and json.loads(lines[3])["events"] == []
    with RecordFile(out, header=HEADER, top_k=1) as records:
        assert records.is_done(odd, 1, 2.0) and not records.is_done("b.wav", 5, 6.0)
        assert records.drop([odd, "b.wav", "b.wav", "nothing.wav"]) == 2
        assert not records.has(odd) and not records.has("b.wav") and records.has("c.wav")
        records.append([FileResult("b.wav", size=5, mtime=6.0, events=[])])  # the file stays appendable
        assert records.is_done("b.wav", 5, 6.0)
    assert out.read_bytes().split(b"\n") == [lines[0], lines[3], json.dumps(
        {"path": record_key("b.wav"), "duration": None, "sample_rate": None, "model": "test", "size": 5,
         "mtime": 6.0, "events": []}).encode(), b""]


def test_record_files_refuse_unknown_formats_and_full_csv_without_names(tmp_path):
    with pytest.raises(InvalidArgumentError) as info:
        RecordFile(tmp_path / "t.txt", header=HEADER)
    assert str(info.value) == "record files are 'jsonl' or 'csv', got None"
    with pytest.raises(InvalidArgumentError) as info:
        RecordFile(tmp_path / "t.csv", header=HEADER, format="tsv")
    assert str(info.value) == "record files are 'jsonl' or 'csv', got 'tsv'"
    with pytest.raises(InvalidArgumentError) as info:
        RecordFile(tmp_path / "t.csv", header=HEADER, full=True)
    assert str(info.value) == "full CSV records need the class names (one column per class)"
    RecordFile(tmp_path / "t.jsonl", header=HEADER, full=True).close()  # JSONL names its classes itself
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl", "t.jsonl.lock"]  # nothing else was made


@pytest.mark.parametrize("name, content", [
    ("t.jsonl", b"x"), ("t.jsonl", b"some notes\nmore\n"), ("t.jsonl", b"\xff\xfe\x00\x01 binary\n"),
    ("t.jsonl", HEADER.to_json().encode()),  # no line end: not a header this package wrote
    ("t.csv", HEADER.to_json().encode() + b"\r\n"),  # a CSV's header starts with '#'
    ("t.csv", b"path,size\r\na.wav,1\r\n")],
    ids=["one-byte", "text", "binary", "header-without-line-end", "csv-header-without-hash", "plain-csv"])
def test_a_file_without_a_header_is_left_untouched(tmp_path, name, content):
    out = tmp_path / name
    out.write_bytes(content)
    for overwrite in (False, True):
        with pytest.raises(OutputFileError) as info:
            RecordFile(out, header=HEADER, overwrite=overwrite)
        assert str(info.value) == FOREIGN.format(str(out))
    assert out.read_bytes() == content
    RecordFile(tmp_path / "other.jsonl", header=HEADER).close()  # the refused one released its lock
    with RecordFile(str(out) + ".jsonl", header=HEADER):
        pass


def test_an_empty_file_is_started_and_an_own_file_is_replaced_only_when_asked(tmp_path, caplog):
    out = tmp_path / "t.jsonl"
    out.write_bytes(b"")
    with RecordFile(out, header=HEADER) as records:
        records.append([FileResult("a.wav", size=1, mtime=2.0)])
    for _ in range(2):  # a clean resume changes nothing and warns of nothing
        with caplog.at_level(logging.WARNING, logger="panns_infer"):
            with RecordFile(out, header=HEADER) as records:
                assert records.is_done("a.wav", 1, 2.0)
        assert caplog.messages == []
    with RecordFile(out, header=HEADER, overwrite=True) as records:
        assert not records.has("a.wav")
    assert out.read_bytes() == HEADER.to_json().encode() + b"\n"
    with RecordFile(out, header=HEADER):  # only the header: nothing to cut
        pass
    assert out.read_bytes() == HEADER.to_json().encode() + b"\n"
    new = tmp_path / "new.csv"
    with RecordFile(new, header=HEADER, top_k=0, overwrite=True):
        pass
    assert new.read_bytes() == (b"#" + HEADER.to_json().encode()
                                + b"\r\npath,duration,sample_rate,model,size,mtime,error\r\n")


def test_a_file_of_other_records_is_refused_with_each_difference(tmp_path):
    out = tmp_path / "t.jsonl"
    RecordFile(out, header=_header()).close()
    with pytest.raises(OutputFileError) as info:
        RecordFile(out, header=_header(options={"top_k": 5, "window": 10.0}))
    assert str(info.value) == (f"{str(out)!r} holds records made otherwise (top_k: 3 in the file, 5 in this run): "
                               "resuming would mix them. Use the same checkpoint and options, another output file, "
                               "or --overwrite to start it again")
    table = tmp_path / "t.csv"
    RecordFile(table, header=HEADER, top_k=2).close()
    with pytest.raises(OutputFileError) as info:
        RecordFile(table, header=HEADER, top_k=3)
    assert str(info.value) == (f"{str(table)!r} has other columns than this run writes: use the same options "
                               "(--top-k, --full, --labels), another output file, or --overwrite")


def test_damaged_and_torn_csv_entries(tmp_path, caplog):
    out = tmp_path / "t.csv"
    with RecordFile(out, header=HEADER, top_k=0) as records:
        records.append([FileResult("a\nb.wav", size=1, mtime=2.0), FileResult("c\r.wav", size=3, mtime=4.0)])
    whole = out.read_bytes()
    head = whole[:whole.index(b"\r\n", whole.index(b"\r\n") + 2) + 2]  # the header and the column row
    out.write_bytes(whole + b'"' + os.fsencode(record_key("d\nd.wav")))  # a kill inside a quoted line break
    with caplog.at_level(logging.WARNING, logger="panns_infer"):
        with RecordFile(out, header=HEADER, top_k=0) as records:
            assert records.is_done("a\nb.wav", 1, 2.0) and records.is_done("c\r.wav", 3, 4.0)
            assert not records.has("c\n.wav")
    assert caplog.messages == [f"{out}: an incomplete last record (from an interrupted run) was removed"]
    assert out.read_bytes() == whole
    row = whole[len(head):].split(b"\r\n")[-2] + b"\r\n"  # c\r.wav's row
    out.write_bytes(head + b'"never closed,,,,,,\r\n' + row + row)
    with pytest.raises(OutputFileError) as info:
        RecordFile(out, header=HEADER, top_k=0)
    assert str(info.value) == (f"{str(out)!r}: line 3 opens a quoted field that never closes: it was edited or "
                               "damaged. Fix or remove that line, or use another output file, or --overwrite to "
                               "start it again")
    long = b"x" * 100 + b",1,2\r\n"  # too few fields
    for bad in (long, b"a.wav,,,,nan?,,\r\n", b"a.wav,,,,1,later,\r\n"):
        out.write_bytes(head + row + bad + row)
        with pytest.raises(OutputFileError) as info:
            RecordFile(out, header=HEADER, top_k=0)
        assert str(info.value) == (f"{str(out)!r}: line 4 is not a record this run can read ({bad[:80]!r}...): it "
                                   "was edited or damaged. Fix or remove that line, or use another output file, or "
                                   "--overwrite to start it again")
    assert out.read_bytes() == head + row + bad + row  # nothing lost


@pytest.mark.parametrize("line", [b'{"path": 3}', b"[1, 2]", b'"a.wav"', b"{"])
def test_a_jsonl_line_without_a_path_is_refused(tmp_path, line):
    out = tmp_path / "t.jsonl"
    out.write_bytes(HEADER.to_json().encode() + b"\n" + line + b"\n")
    with pytest.raises(OutputFileError, match=r"line 2 is not a record this run can read"):
        RecordFile(out, header=HEADER)


def test_a_directory_that_refuses_fsync_does_not_fail_the_run(tmp_path, monkeypatch):
    import stat

    real = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")  # what some file systems answer for a folder
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with RecordFile(tmp_path / "t.jsonl", header=HEADER) as records:
        records.append([FileResult("a.wav", size=1, mtime=2.0)])
        assert records.drop(["a.wav"]) == 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc/self/fd")
def test_closing_a_record_file_closes_it(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    records = RecordFile(tmp_path / "t.jsonl", header=HEADER)
    records.close()
    records.close()  # again: nothing happens
    assert len(os.listdir("/proc/self/fd")) == before


def test_record_format_from_the_extension():
    from panns_infer.corpus import record_format

    assert [record_format(p) for p in ("a.jsonl", "b.NDJSON", "c.Csv", "d.TSV", "e.json", "jsonl", "f.jsonl.txt")] == [
        "jsonl", "jsonl", "csv", "tsv", None, None, None]


# -- events TSV (no model) ---------------------------------------------------------------------


def test_events_tsv_is_written_from_its_records(tmp_path, monkeypatch):
    from panns_infer.corpus import EventsTsv

    monkeypatch.chdir(tmp_path)
    odd = os.fsdecode(b"caf\xe9 X.wav")
    tsv = tmp_path / "ev.tsv"
    events = EventsTsv(tsv, header=HEADER)
    events.append([FileResult("a.wav", size=1, mtime=2.0, events=[
        {"label": "Dog", "onset": 0.25, "offset": 1.0004, "score": 0.9},
        {"label": "Speech, male", "onset": 1.5, "offset": 2.0, "score": 0.6}])])
    events.close()
    events = EventsTsv(tsv, header=HEADER)  # resumed: the records are kept
    assert events.is_done("a.wav", 1, 2.0)
    events.append([FileResult(odd, size=3, mtime=4.0, events=[{"label": "Cat", "onset": 0.0, "offset": 0.1236,
                                                                "score": 0.5}]),
                   FileResult("b.wav", size=5, mtime=6.0, error="cannot decode"),
                   FileResult("c.wav", size=7, mtime=8.0, events=[])])
    events.finalize()
    a, c = record_key("a.wav"), record_key(odd)
    assert tsv.read_bytes() == os.fsencode(f"filename\tonset\toffset\tevent_label\n{a}\t0.250\t1.000\tDog\n"
                                           f"{a}\t1.500\t2.000\tSpeech, male\n{c}\t0.000\t0.124\tCat\n")
    assert [json.loads(line)["path"] for line in (tmp_path / "ev.tsv.jsonl").read_bytes().split(b"\n")[1:-1]] == [
        a, c, record_key("b.wav"), record_key("c.wav")]
    with EventsTsv(tsv, header=HEADER, overwrite=True) as events:  # started again
        assert not events.has("a.wav")
        events.finalize()
    assert tsv.read_text() == "filename\tonset\toffset\tevent_label\n"


def test_events_tsv_refuses_a_tsv_it_did_not_write_and_names_it_cannot_hold(tmp_path):
    from panns_infer.corpus import EventsTsv, tsv_name_problem

    tsv = tmp_path / "ev.tsv"
    for content in (b"x", b"filename\tonset\toffset\tevent_label\n"):
        tsv.write_bytes(content)
        with pytest.raises(OutputFileError) as info:
            EventsTsv(tsv, header=HEADER)
        assert str(info.value) == FOREIGN.format(str(tsv))
        assert tsv.read_bytes() == content and not (tmp_path / "ev.tsv.jsonl").exists()
    tsv.write_bytes(b"")  # an empty file holds nothing to lose
    events = EventsTsv(tsv, header=HEADER)
    for name in ("a\tb.wav", "a\nb.wav", "a\rb.wav"):
        with pytest.raises(InvalidArgumentError) as info:
            events.append([FileResult("ok.wav", size=1, mtime=1.0), FileResult(name, size=1, mtime=1.0)])
        assert str(info.value) == (f"{name!r} holds a tab or a line break, which a DCASE TSV row cannot hold: rename "
                                   "the file, or write the events as JSON Lines (--output FILE.jsonl)")
        assert tsv_name_problem(name) == str(info.value)
    assert not events.has("ok.wav")  # nothing of a refused batch is written
    events.close()
    assert tsv_name_problem(None) is None and tsv_name_problem("XX \"a\", b.wav") is None


@requires_fixtures
@pytest.mark.parametrize("suffix", [".log", ".tsv"])
def test_events_records_in_full_and_overwrite(run, tmp_path, capsys, suffix):
    """An events run's records (JSONL, or the TSV's companion records): the header names the
    events run, each record its file's size, mtime, duration and rate, events end within the
    file, a failed file its error; other options need --overwrite, which starts afresh."""
    files = make_corpus(tmp_path / "c")
    short = files[-1]  # 0.1 s: shorter than one 0.5 s segment, so clipping at the file's end shows
    bad = tmp_path / "c" / "text.wav"
    bad.write_text("not audio")
    out = tmp_path / f"ev{suffix}"
    opts = ["--events", "--segment", "0.5", "--hop", "0.25", "--threshold", "0.05", "-o", str(out)]
    opts += ["--format", "jsonl"] if suffix == ".log" else []  # a JSONL file under another extension
    assert run(files[0], short, str(bad), *opts) == 1
    capsys.readouterr()
    records_path = out if suffix == ".log" else Path(str(out) + ".jsonl")
    header = json.loads(records_path.read_bytes().split(b"\n")[0])
    assert header["options"]["output"] == "events" and header["options"]["threshold"] == 0.05
    records = {r["path"]: r for r in _jsonl(records_path)}
    assert set(records) == {files[0], short, str(bad)}
    for path in (files[0], short):
        rec, st, info = records[path], os.stat(path), soundfile.info(path)
        assert (rec["size"], rec["mtime"], rec["sample_rate"]) == (st.st_size, st.st_mtime, info.samplerate)
        assert rec["duration"] == pytest.approx(info.frames / info.samplerate) and "error" not in rec
        assert rec["events"] and max(e["offset"] for e in rec["events"]) <= rec["duration"] + 1e-9
    assert records[str(bad)]["duration"] is None and "cannot" in records[str(bad)]["error"]
    assert run(files[0], *[o if o != "0.05" else "0.06" for o in opts]) == 2  # other options
    assert "--overwrite" in capsys.readouterr().err
    assert run(files[0], *[o if o != "0.05" else "0.06" for o in opts], "--overwrite") == 0
    assert [r["path"] for r in _jsonl(records_path)] == [files[0]]
    if suffix == ".tsv":
        assert {line.split("\t")[0] for line in out.read_text().splitlines()[1:]} == {files[0]}


@requires_fixtures
def test_events_to_a_file_count_and_explain_every_failure(run, tmp_path, capsys, caplog):
    good = _write(tmp_path / "good.wav", 0.5, 32000)
    bad = [tmp_path / "bad1.wav", tmp_path / "bad2.wav"]
    for path in bad:
        path.write_text("not audio")
    opts = ["--events", "--segment", "0.5", "-o", str(tmp_path / "ev.jsonl")]
    with caplog.at_level(logging.ERROR, logger="panns_infer"):
        assert run(str(bad[0]), good, str(bad[1]), *opts, "--debug") == 1
    lines = capsys.readouterr().err.splitlines()
    assert "panns-tag: 2 of 3 file(s) failed" in lines
    assert sum(line.startswith(f"panns-tag: {bad[0]}: ") and "cannot" in line for line in lines) == 1
    logged = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in logged] == [f"while tagging {bad[0]}", f"while tagging {bad[1]}"]
    assert {r.name for r in logged} == {"panns_infer"}
    assert all(r.exc_info[0] is AudioDecodeError for r in logged)


@requires_fixtures
def test_an_interrupted_events_tsv_run_writes_no_tsv_and_resumes(run, tmp_path, monkeypatch):
    from panns_infer.cli import events as cli_events

    files = make_corpus(tmp_path / "c")[:3]
    tsv = tmp_path / "ev.tsv"
    opts = ["--events", "--segment", "0.5", "--threshold", "0.05", "-o", str(tsv)]
    real, calls = cli_events._detect, []

    def stop_at_the_third(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cli_events, "_detect", stop_at_the_third)
    assert run(*files, *opts) == 130
    assert not tsv.exists() and len(_jsonl(str(tsv) + ".jsonl")) == 2  # records of the finished files only
    monkeypatch.setattr(cli_events, "_detect", real)
    assert run(*files, *opts) == 0
    assert {line.split("\t")[0] for line in tsv.read_text().splitlines()[1:]} == set(files)
