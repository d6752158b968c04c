"""Every corpus output format, written and read back with hostile file names.

Property tests (seeded, bounded): JSONL and CSV records, the events TSV, and ``.npz`` /
``.npy`` embeddings are written for paths holding line breaks of every kind, tabs, quotes,
commas, non-ASCII text, undecodable bytes (surrogate escapes) and one base name in two
folders; then read back and resumed, and every file must come back exactly once, with its
own values. No model runs: results are made up, so this tests the record layer alone.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panns_infer.corpus import EmbeddingStore, EventsTsv, FileResult, RecordFile, RunHeader, record_key
from panns_infer.errors import InvalidArgumentError, OutputFileError
from panns_infer.results import Tags

HEADER = RunHeader(model="Cnn6", sha256="ab" * 32, arch="Cnn6", options={"top_k": 2})
CLASSES = ["Speech", "Dog, bark", 'Say "hi"']
HOSTILE = ["\n", "\r", "\r\n", "\t", '"', ",", "'", "\x0c", "\x0b", "\x1c", "\x85", "\u2028", "\u2029", " ", "é",
           "🎵", "\\", "#", os.fsdecode(b"\xff"), os.fsdecode(b"\xc3")]

names = st.lists(st.lists(st.sampled_from(HOSTILE + list("ab.")), min_size=1, max_size=6).map("".join),
                 min_size=1, max_size=6, unique=True)
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _files(base: list[str]) -> list[str]:
    """Each name in two folders (one base name, two files), as relative paths."""
    return [os.path.join(folder, name + ".wav") for name in base for folder in ("d1", "d2")]


def _result(path: str, i: int, *, tags: bool = True) -> FileResult:
    probs = np.array([0.9, 0.5 - 0.01 * i, 0.1], np.float32)  # top 2: 0.9, then the file's own score
    r = FileResult(path, size=1000 + i, mtime=1.7e9 + i, duration=1.0 + i, sample_rate=32000)
    if tags:
        r.tags = Tags.from_probabilities(probs, CLASSES, top_k=2, source=path)
    r.embedding = np.full(4, float(i), np.float32)
    return r


@contextlib.contextmanager
def fresh_folder():
    """A new empty working folder, for one hypothesis example."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield
        finally:
            os.chdir(old)


def _jsonl_records(path: str) -> list[dict]:
    lines = open(path, "rb").read().split(b"\n")
    assert json.loads(lines[0])["format"] == "panns-infer/records" and lines[-1] == b""
    return [json.loads(line) for line in lines[1:-1]]


def _csv_records(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        assert f.readline().startswith("#{")
        return list(csv.DictReader(f))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@SETTINGS
@given(base=names, split=st.integers(0, 12))
def test_records_round_trip_and_resume_with_hostile_paths(fmt, base, split):
    with fresh_folder():
        files = _files(base)
        out = f"out.{fmt}"
        first, rest = files[:split], files[split:]
        with RecordFile(out, header=HEADER, top_k=2) as records:
            records.append([_result(p, files.index(p)) for p in first])
        with RecordFile(out, header=HEADER, top_k=2) as records:  # a resume: what is done is known
            assert all(records.is_done(p, 1000 + files.index(p), 1.7e9 + files.index(p)) for p in first)
            assert not any(records.has(p) for p in rest)
            # one file failed and is redone, with the rest
            redo = first[:1]
            assert records.drop(redo) == len(redo)
            records.append([_result(p, files.index(p)) for p in redo + rest])
        read = _jsonl_records(out) if fmt == "jsonl" else _csv_records(out)
        got = [r["path"] for r in read]
        assert sorted(got) == sorted(record_key(p) for p in files)  # each once: nothing lost or doubled
        for r in read:
            i = [record_key(p) for p in files].index(r["path"])
            score = r["scores"][1] if fmt == "jsonl" else float(r["score_2"])
            assert score == pytest.approx(0.5 - 0.01 * i)  # its own values
            assert int(r["size"]) == 1000 + i and r["model"] == "Cnn6"
        with RecordFile(out, header=HEADER, top_k=2) as records:
            assert all(records.is_done(p, 1000 + i, 1.7e9 + i) for i, p in enumerate(files))


@SETTINGS
@given(base=names)
def test_events_tsv_round_trip_with_hostile_paths(base):
    with fresh_folder():
        files = _files(base)
        tsv = EventsTsv("events.tsv", header=HEADER)
        kept = []
        for i, p in enumerate(files):
            r = _result(p, i, tags=False)
            r.events = [{"label": CLASSES[i % 3], "onset": float(i), "offset": i + 0.5, "score": 0.9}]
            if any(ch in p for ch in "\t\r\n"):
                with pytest.raises(InvalidArgumentError, match="DCASE TSV"):
                    tsv.append([r])
            else:
                tsv.append([r])
                kept.append((record_key(p), i))
        tsv.finalize()
        raw = open("events.tsv", "rb").read().decode("utf-8", "surrogateescape")
        rows = [line.split("\t") for line in raw.split("\n")[1:-1]]
        assert all(len(row) == 4 for row in rows)
        assert [(row[0], float(row[1]), row[3]) for row in rows] == [(k, float(i), CLASSES[i % 3]) for k, i in kept]
        again = EventsTsv("events.tsv", header=HEADER)  # a finished run resumes from its records
        assert all(again.is_done(k, 1000 + i, 1.7e9 + i) for k, i in kept)
        again.close()


@pytest.mark.parametrize("kind", ["npz", "npy"])
@SETTINGS
@given(base=names, split=st.integers(0, 12))
def test_embeddings_round_trip_and_resume_with_hostile_paths(kind, base, split):
    with fresh_folder():
        files = _files(base)
        out = f"emb.{kind}"
        store = EmbeddingStore(out, 4, header=HEADER)
        store.append([_result(p, i) for i, p in enumerate(files[:split])])
        store.finalize()
        store = EmbeddingStore(out, 4, header=HEADER)
        assert all(store.has(p, 1000 + i, 1.7e9 + i) for i, p in enumerate(files[:split]))
        assert not any(store.has(p, 1000 + i, 1.7e9 + i) for i, p in enumerate(files[split:], split))
        store.append([_result(p, i) for i, p in enumerate(files) if i >= split or i == 0])  # 0: redone
        store.finalize()
        if kind == "npz":
            z = np.load(out)
            paths, matrix = z["paths"].tolist(), z["embeddings"]
        else:
            lines = open(out + ".paths.jsonl", "rb").read().split(b"\n")
            paths, matrix = [json.loads(line)["path"] for line in lines[1:-1]], np.load(out)
        keys = [record_key(p) for p in files]
        assert sorted(paths) == sorted(keys) and matrix.shape == (len(files), 4)
        for p, row in zip(paths, matrix):
            assert np.all(row == keys.index(p))  # each row is its own file's


def test_foreign_files_are_never_written_into(tmp_path):
    user = tmp_path / "manifest.jsonl"
    text = '{"a": 1}\n{"b": 2}\n{garbage\n'
    user.write_text(text)
    for overwrite in (False, True):
        with pytest.raises(OutputFileError, match="not written by panns-tag"):
            RecordFile(user, header=HEADER, overwrite=overwrite)
    assert user.read_text() == text
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(OutputFileError, match="not written by panns-tag"):
        RecordFile(table, header=HEADER)
    np.savez(tmp_path / "e.npz", x=np.zeros(3))
    with pytest.raises(OutputFileError, match="not written by panns-tag"):
        EmbeddingStore(tmp_path / "e.npz", 4, header=HEADER, overwrite=True)
    np.save(tmp_path / "e.npy", np.zeros((2, 4)))
    with pytest.raises(OutputFileError, match="not written by panns-tag"):
        EmbeddingStore(tmp_path / "e.npy", 4, header=HEADER)
    (tmp_path / "ev.tsv").write_text("filename\tonset\toffset\tevent_label\nx.wav\t0\t1\tDog\n")
    with pytest.raises(OutputFileError, match="not written by panns-tag"):
        EventsTsv(tmp_path / "ev.tsv", header=HEADER, overwrite=True)
    assert not any(p.name.endswith((".partial", ".incomplete")) for p in tmp_path.iterdir())


def test_another_header_is_refused_naming_the_difference(tmp_path):
    out = tmp_path / "t.jsonl"
    RecordFile(out, header=HEADER).close()
    other = RunHeader(model="MobileNetV1", sha256="cd" * 32, arch="MobileNetV1", options={"top_k": 5})
    with pytest.raises(OutputFileError) as info:
        RecordFile(out, header=other)
    message = str(info.value)
    assert "checkpoint: Cnn6" in message and "arch: Cnn6" in message and "top_k: 2 in the file, 5" in message
    assert "--overwrite" in message
    RecordFile(out, header=other, overwrite=True).close()  # a file this package wrote may be started again
    assert json.loads(out.read_text().split("\n")[0])["model"] == "MobileNetV1"
    store = EmbeddingStore(tmp_path / "e.npz", 4, header=HEADER)
    store.append([_result("a.wav", 1)])
    store.close()  # killed before finalize: the journal stays
    with pytest.raises(OutputFileError, match="checkpoint"):
        EmbeddingStore(tmp_path / "e.npz", 4, header=other)


def test_a_malformed_csv_line_is_a_typed_error_not_a_csv_error(tmp_path):
    out = tmp_path / "t.csv"
    with RecordFile(out, header=HEADER, top_k=2) as records:
        records.append([_result("a.wav", 0), _result("b.wav", 1)])
    lines = out.read_bytes().split(b"\r\n")
    lines[2] = b'"unterminated,1,2'  # the first record
    out.write_bytes(b"\r\n".join(lines[:3]) + b"\n\n" + b"\r\n".join(lines[3:]))
    before = out.read_bytes()
    with pytest.raises(OutputFileError, match="line"):
        RecordFile(out, header=HEADER, top_k=2)
    assert out.read_bytes() == before


def test_csv_quotes_every_line_break(tmp_path):
    out = tmp_path / "t.csv"
    with RecordFile(out, header=HEADER, top_k=2) as records:
        records.append([_result("a\rb.wav", 0)])
    row = out.read_bytes().split(b"\r\n", 2)[2]
    assert row.startswith(b'"') and next(csv.reader(io.StringIO(row.decode(), newline="")))[0] == record_key("a\rb.wav")


def test_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path):
    out = tmp_path / "t.jsonl"
    with RecordFile(out, header=HEADER):
        with pytest.raises(OutputFileError, match="another panns-tag run"):
            RecordFile(out, header=HEADER)
    RecordFile(out, header=HEADER).close()  # free again once the first closed


def test_record_keys_are_resolved_paths(tmp_path, monkeypatch):
    (tmp_path / "c").mkdir()
    monkeypatch.chdir(tmp_path)
    with RecordFile(tmp_path / "t.jsonl", header=HEADER) as records:
        records.append([_result("c/a.wav", 0)])
        for alias in ("c/a.wav", "./c/a.wav", str(tmp_path / "c" / "a.wav"), "c/../c/a.wav"):
            assert records.is_done(alias, 1000, 1.7e9)
        monkeypatch.chdir(tmp_path / "c")
        assert records.is_done("a.wav", 1000, 1.7e9)


def test_npy_paths_without_their_matrix_are_ours_to_complete(tmp_path):
    """A kill between writing FILE.npy.paths.jsonl and FILE.npy: the next run goes on."""
    out = tmp_path / "e.npy"
    store = EmbeddingStore(out, 4, header=HEADER)
    store.append([_result("a.wav", 1)])
    store.finalize()
    out.unlink()
    store = EmbeddingStore(out, 4, header=HEADER)
    assert not store.has("a.wav", 1001, 1.7e9 + 1)  # its row is gone: computed again
    store.append([_result("a.wav", 1)])
    store.finalize()
    assert np.load(out).tolist() == [[1.0] * 4]
    (tmp_path / "x.npy.paths.jsonl").write_text("a.wav\n")
    with pytest.raises(OutputFileError, match="not written by panns-tag"):
        EmbeddingStore(tmp_path / "x.npy", 4, header=HEADER)
