"""``panns-tag`` output files: resume only what matches, never write into others' files, check
every option before loading, and name every file unambiguously."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import requires_fixtures
from panns_infer import AudioTagger
from panns_infer import tagger as tagger_module
from panns_infer.cli import main
from panns_infer.cli.events import plot_paths
from panns_infer.corpus import run as corpus_run
from panns_infer.corpus import tag_corpus
from panns_infer.corpus.header import output_lock
from panns_infer.errors import AudioDecodeError


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal, so progress lines are drawn on it."""

    def isatty(self) -> bool:
        return True


def _wav(path: Path, seconds: float = 0.5, rate: int = 32000, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).standard_normal(int(seconds * rate)).astype(np.float32) * 0.1
    soundfile.write(path, x, rate)
    return str(path)


def _records(path) -> list[dict]:
    lines = Path(path).read_bytes().split(b"\n")
    return [json.loads(line) for line in lines[1:-1]]


@pytest.fixture(scope="module")
def cnn6(fixture_checkpoint):
    return str(fixture_checkpoint("Cnn6"))


@pytest.fixture
def run(cnn6, labels_csv, capsys):
    """``run(*args) -> (exit status, stdout, stderr)``; a usage error (SystemExit) counts as its code."""
    def go(*args: str, checkpoint: str = cnn6) -> tuple:
        try:
            code = main([*args, "-c", checkpoint, "--labels", str(labels_csv), "--no-progress"])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err
    return go



# -- what a file holds, and whose it is --------------------------------------------------------


@requires_fixtures
def test_resume_refuses_other_options_or_another_model(run, fixture_checkpoint, tmp_path):
    files = [_wav(tmp_path / "c" / f"{i}.wav", seed=i) for i in range(2)]
    out = tmp_path / "tags.jsonl"
    assert run(*files, "-k", "2", "-o", str(out))[0] == 0
    before = out.read_bytes()
    header = json.loads(before.split(b"\n")[0])
    assert header["arch"] == "Cnn6" and header["options"]["top_k"] == 2 and len(header["checkpoint_sha256"]) == 64
    assert all(r["model"] == header["model"] for r in _records(out))
    for args, difference in ((["-k", "5"], "top_k: 2 in the file, 5 in this run"), (["-k", "2", "--full"], "full"),
                             (["-k", "2", "--window", "5"], "window")):
        code, _, err = run(*files, *args, "-o", str(out))
        assert code == 2 and difference in err and "--overwrite" in err, err
    code, _, err = run(*files, "-k", "2", "-o", str(out), checkpoint=str(fixture_checkpoint("MobileNetV1")))
    assert code == 2 and "checkpoint:" in err and "arch: Cnn6 in the file, MobileNetV1 in this run" in err
    assert out.read_bytes() == before  # nothing mixed in
    assert run(*files, "-k", "5", "-o", str(out), "--overwrite")[0] == 0
    assert all(len(r["labels"]) == 5 for r in _records(out))


@requires_fixtures
def test_a_file_the_tool_did_not_write_is_never_rewritten(run, tmp_path):
    wav = _wav(tmp_path / "a.wav")
    manifest = tmp_path / "manifest.jsonl"
    text = '{"path": "x.wav"}\n{"path": "y.wav"}\nnot json\n'
    manifest.write_text(text)
    for extra in ([], ["--overwrite"]):
        code, _, err = run(wav, "-o", str(manifest), *extra)
        assert code == 2 and "not written by panns-tag" in err
    assert manifest.read_text() == text
    emb = tmp_path / "mine.npz"
    np.savez(emb, x=np.arange(3))
    assert run(wav, "--embeddings", str(emb))[0] == 2
    assert run(wav, "-o", str(tmp_path / "new.jsonl"), "--embeddings", str(emb))[0] == 2
    assert np.load(emb)["x"].tolist() == [0, 1, 2] and not (tmp_path / "new.jsonl").exists()


@requires_fixtures
def test_one_record_per_file_however_its_path_is_written(run, tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    files = [_wav(root / f"{i}.wav", seed=i) for i in range(3)]
    out = tmp_path / "tags.jsonl"
    monkeypatch.chdir(tmp_path)
    for spelling in ("corpus", "./corpus", str(root), "corpus/../corpus"):
        assert run(spelling, "-o", str(out))[0] == 0
    monkeypatch.chdir(root)
    assert run(".", "-o", str(out))[0] == 0
    assert run("0.wav", "./0.wav", "-o", str(out))[0] == 0
    assert sorted(r["path"] for r in _records(out)) == sorted(os.path.realpath(f) for f in files)


@requires_fixtures
def test_a_second_run_on_the_same_output_is_refused(run, tmp_path):
    wav = _wav(tmp_path / "a.wav")
    out = str(tmp_path / "tags.jsonl")
    with output_lock(out):
        code, _, err = run(wav, "-o", out)
    assert code == 2 and "another panns-tag run is writing" in err
    assert not os.path.exists(out)
    assert run(wav, "-o", out)[0] == 0


@requires_fixtures
@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_embeddings_keep_their_paths_through_any_name_and_resume_alone(run, cnn6, labels_csv, tmp_path, decoded,
                                                                       kind):
    names = ["a\nb.wav", "c\rd.wav", "e\x0cf.wav", "g\u2028h.wav", "plain.wav", "i\x85j.wav"]
    files = [_wav(tmp_path / "c" / n, seconds=0.3 + 0.1 * i, seed=i) for i, n in enumerate(names)]
    emb = tmp_path / f"emb.{kind}"
    assert run(*files[:3], "--embeddings", str(emb))[0] == 0
    decoded.clear()
    assert run(*files, "--embeddings", str(emb))[0] == 0  # no --output: resumes from the embeddings
    assert decoded == files[3:]
    decoded.clear()
    assert run(*files, "--embeddings", str(emb))[0] == 0
    assert decoded == []
    if kind == "npz":
        z = np.load(emb)
        paths, matrix = z["paths"].tolist(), z["embeddings"]
    else:
        lines = Path(str(emb) + ".paths.jsonl").read_bytes().split(b"\n")
        paths, matrix = [json.loads(line)["path"] for line in lines[1:-1]], np.load(emb)
    assert paths == files and matrix.shape == (6, 512)
    tagger = AudioTagger(cnn6, labels=labels_csv, device="cpu")
    for p, row in zip(paths, matrix):
        np.testing.assert_allclose(row, tagger.embed(p), rtol=0, atol=1e-4)


@requires_fixtures
def test_csv_with_a_carriage_return_in_a_path_resumes(run, tmp_path, decoded):
    files = [_wav(tmp_path / "c" / n, seed=i) for i, n in enumerate(["a\rb.wav", 'q",z.wav', "plain.wav"])]
    out = tmp_path / "tags.csv"
    assert run(*files, "-k", "2", "-o", str(out))[0] == 0
    decoded.clear()
    assert run(*files, "-k", "2", "-o", str(out))[0] == 0
    assert decoded == []
    with open(out, newline="") as f:
        f.readline()
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == files and all(r["model"] for r in rows)
    # a damaged row: a typed error and exit 2, not a csv traceback; the file is left as it was
    damaged = out.read_bytes().replace(b"plain.wav", b'plain.wav"')
    out.write_bytes(damaged)
    code, _, err = run(*files, "-k", "2", "-o", str(out))
    assert code == 2 and "line" in err and out.read_bytes() == damaged


# -- names -------------------------------------------------------------------------------------


@requires_fixtures
def test_events_name_the_full_path_and_refuse_names_a_tsv_cannot_hold(run, tmp_path):
    same = [_wav(tmp_path / d / "clip.wav", seconds=1.0, seed=i) for i, d in enumerate(("x", "y"))]
    tab = _wav(tmp_path / "x" / "a\tb.wav", seconds=1.0)
    opts = ["--events", "--segment", "0.5", "--threshold", "0.01"]
    code, out, err = run(*same, tab, *opts, "--format", "tsv")
    assert code == 1 and "tab or a line break" in err
    rows = [line.split("\t") for line in out.splitlines()[1:]]
    assert rows and all(len(row) == 4 for row in rows)
    assert {row[0] for row in rows} == set(same)  # two files with one base name stay apart
    tsv = tmp_path / "ev.tsv"
    code, _, err = run(*same, tab, *opts, "-o", str(tsv))
    assert code == 1 and f"panns-tag: {tab}: {tab!r} holds a tab or a line break" in err
    rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
    assert {row[0] for row in rows} == {os.path.realpath(p) for p in same} and all(len(r) == 4 for r in rows)


def test_several_plots_never_share_an_image():
    files = ["d1/ZOOM0001.WAV", "d2/ZOOM0001.WAV", "d1/ZOOM0001.mp3"]
    paths = plot_paths("out.png", files)
    assert len(set(paths.values())) == 3 and all(p.startswith("out_") and p.endswith(".png") for p in paths.values())
    assert plot_paths("one.png", ["a.wav"]) == {"a.wav": "one.png"}


def test_plot_names_carry_position_and_base_name():
    assert plot_paths("figs/ev.svg", ["d1/a.wav", "d2/a.flac"]) == {"d1/a.wav": "figs/ev_1_a.svg",
                                                                  "d2/a.flac": "figs/ev_2_a.svg"}
    assert plot_paths("ev", ["x.wav", "y.wav"]) == {"x.wav": "ev_1_x.png", "y.wav": "ev_2_y.png"}  # no extension
    many = plot_paths("p.png", [f"s{i}.wav" for i in range(10)])
    assert many["s0.wav"] == "p_01_s0.png" and many["s9.wav"] == "p_10_s9.png"  # positions padded alike
    odd = plot_paths("p.png", ["a\\b\nc.wav", "tab\there.wav", "MIX_X.wav"])  # unprintable and path characters
    assert list(odd.values()) == ["p_1_a_b_c.png", "p_2_tab_here.png", "p_3_MIX_X.png"]


# -- options, checked before anything loads ----------------------------------------------------


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")
    monkeypatch.setattr(tagger_module.AudioTagger, "__init__", refuse)


@requires_fixtures
@pytest.mark.parametrize("args, says", [
    (["--events", "--threshold", "1.5"], "--threshold"),
    (["--events", "--threshold", "-0.1"], "--threshold"),
    (["--events", "--threshold", "0.3", "--offset-threshold", "0.5"], "--offset-threshold"),
    (["--events", "--segment", "0"], "--segment"),
    (["--events", "--segment", "1", "--hop", "2"], "--hop"),
    (["--events", "--segment", "1", "--hop", "0"], "--hop"),
    (["--window", "-5"], "--window"),
    (["--segment", "1"], "add --events"),
    (["--events", "--segment", "1", "--plot", "x.png"], "--plot"),
    (["--events", "--min-duration", "-1"], "--min-duration"),
    (["-o", "nodir/x.jsonl"], "does not exist"),
    (["--embeddings", "nodir/x.npz"], "does not exist"),
    (["-o", "x.json"], ".jsonl"),
])
def test_bad_options_exit_2_before_anything_runs(run, no_model, tmp_path, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    wav = _wav(tmp_path / "a.wav")
    code, out, err = run(wav, *args)
    assert code == 2 and says in err, err
    assert out == "" and sorted(os.listdir(tmp_path)) == ["a.wav"]  # nothing run, nothing written


@requires_fixtures
def test_a_malformed_mirror_is_a_usage_error_even_offline(run, no_model, tmp_path, monkeypatch):
    monkeypatch.setenv("PANNS_INFER_MIRROR", "files.example.org/panns")
    code, _, err = run(_wav(tmp_path / "a.wav"), "--offline")
    assert code == 2 and "PANNS_INFER_MIRROR" in err
    code, _, err = run("--download", "Cnn14", "--offline")
    assert code == 2 and "PANNS_INFER_MIRROR" in err


def test_list_models_prints_real_json_and_csv(capsys):
    assert main(["--list-models", "--format", "json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert isinstance(models, list) and {"name", "arch", "mAP"} <= set(models[0])
    assert main(["--list-models", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows] == [m["name"] for m in models]
    with pytest.raises(SystemExit) as info:
        main(["--list-models", "--format", "tsv"])
    assert info.value.code == 2


# -- what users see ----------------------------------------------------------------------------


@requires_fixtures
def test_a_long_file_reports_its_progress(cnn6, labels_csv, tmp_path):
    long = _wav(tmp_path / "long.wav", seconds=65.0, rate=8000)
    tagger = AudioTagger(cnn6, labels=labels_csv, device="cpu", optimize=False)
    calls = []
    for _ in tag_corpus(tagger, [long], callback=lambda path, done, total: calls.append((path, done, total))):
        pass
    assert len(calls) >= 3 and all(p == long for p, _, _ in calls)  # one per 30 s chunk
    assert [d for _, d, _ in calls] == sorted(d for _, d, _ in calls)
    assert calls[-1][1] == pytest.approx(calls[-1][2], abs=0.01) and calls[-1][2] == pytest.approx(65.0, abs=0.01)


@requires_fixtures
def test_the_progress_line_never_runs_into_text_results(cnn6, labels_csv, tmp_path, monkeypatch):
    files = [_wav(tmp_path / f"{i}.wav", seed=i) for i in range(3)]

    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    monkeypatch.setattr("sys.stderr", screen)
    monkeypatch.setattr(corpus_run.Progress, "interval", 0.0)
    assert main([*files, "-c", cnn6, "--labels", str(labels_csv), "-k", "1", "--batch-size", "1",
                 "--workers", "0"]) == 0
    text = screen.getvalue()
    assert "files" in text  # the progress line was drawn
    for f in files:
        at = text.index(f"{f}:")
        assert at == 0 or text[:at].endswith(("\n", "\r\033[K")), repr(text[max(0, at - 40):at])


@requires_fixtures
def test_one_vocabulary_in_every_output(run, tmp_path):
    wav = _wav(tmp_path / "a.wav", seconds=1.0, rate=16000)
    core = {"path", "duration", "sample_rate", "model"}
    _, out, _ = run(wav, "--format", "json", "-k", "1")
    stdout = json.loads(out)
    assert core <= set(stdout) and stdout["duration"] == 1.0 and stdout["sample_rate"] == 16000
    assert run(wav, "-o", str(tmp_path / "t.jsonl"), "-k", "1")[0] == 0
    assert core <= set(_records(tmp_path / "t.jsonl")[0])
    assert run(wav, "-o", str(tmp_path / "t.csv"), "-k", "1")[0] == 0
    with open(tmp_path / "t.csv", newline="") as f:
        f.readline()
        assert core <= set(next(csv.DictReader(f)))
    _, out, _ = run(wav, "--events", "--segment", "0.5", "--format", "json")
    assert core <= set(json.loads(out))


@requires_fixtures
def test_events_runs_show_progress_on_a_terminal_unless_told_not_to(cnn6, labels_csv, tmp_path, monkeypatch):
    """Files done and how far a long file has got, in both events modes (to a file, to stdout),
    only on a terminal and never with --no-progress; stdout records name the checkpoint."""
    short = _wav(tmp_path / "short.wav", seconds=1.0)
    long = _wav(tmp_path / "long.wav", seconds=65.0, rate=8000)

    monkeypatch.setattr(corpus_run.Progress, "interval", 0.0)
    common = ["-c", cnn6, "--labels", str(labels_csv), "--events", "--segment", "2", "--hop", "1"]

    def shown(*args: str) -> tuple[str, str]:
        screen, out = Terminal(), io.StringIO()
        with monkeypatch.context() as mp:
            mp.setattr("sys.stderr", screen)
            mp.setattr("sys.stdout", out)
            assert main([*args, *common]) == 0
        return screen.getvalue(), out.getvalue()

    err, _ = shown(short, long, "-o", str(tmp_path / "ev.jsonl"))
    assert "2/2 files" in err and "1/2 files  long.wav: 100% (65 of 65 s)" in err
    err, _ = shown(short, "-o", str(tmp_path / "ev2.jsonl"), "--no-progress")
    assert err == ""
    err, out = shown(long, "--format", "json")
    assert "\rlong.wav: 100.0% (65/65 s)" in err
    assert json.loads(out.splitlines()[0])["model"] == os.path.basename(cnn6)
    err, _ = shown(long, "--no-progress")
    assert err == ""


@requires_fixtures
def test_events_json_on_stdout_has_a_record_for_each_failed_file(cnn6, labels_csv, tmp_path, capsys, caplog):
    good = _wav(tmp_path / "good.wav", seconds=1.0)
    bad = [tmp_path / "bad1.wav", tmp_path / "bad2.wav"]
    for path in bad:
        path.write_text("not audio")
    args = [str(bad[0]), good, str(bad[1]), "-c", cnn6, "--labels", str(labels_csv), "--events",
            "--segment", "0.5", "--format", "json", "--debug"]
    with caplog.at_level(logging.ERROR, logger="panns_infer"):
        assert main(args) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in records] == [str(bad[0]), good, str(bad[1])]
    failed = records[0]
    assert set(failed) == {"path", "duration", "sample_rate", "model", "error"}
    assert (failed["duration"], failed["sample_rate"], failed["model"]) == (None, None, os.path.basename(cnn6))
    assert f"panns-tag: {bad[0]}: {failed['error']}" in err.splitlines() and "cannot" in failed["error"]
    assert "panns-tag: 2 of 3 file(s) failed" in err.splitlines()
    logged = [r for r in caplog.records if r.exc_info]
    assert [(r.name, r.getMessage(), r.exc_info[0]) for r in logged] == [
        ("panns_infer", f"while tagging {path}", AudioDecodeError) for path in bad]


class FlushedStream(io.StringIO):
    """A captured stream that remembers what had been flushed: what a reader on a pipe has seen."""

    flushed = ""

    def flush(self) -> None:
        super().flush()
        self.flushed = self.getvalue()


@requires_fixtures
@pytest.mark.parametrize("fmt, first_line", [("tsv", "filename\tonset\toffset\tevent_label"), ("json", None)])
def test_events_on_stdout_reach_a_reader_before_the_next_file_starts(cnn6, labels_csv, tmp_path, monkeypatch,
                                                                     fmt, first_line):
    """The TSV header, and a failed file's JSON record, are flushed before the next file is
    decoded: a reader of a long run sees each line when it is written."""
    from panns_infer.cli import events as cli_events

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    good = _wav(tmp_path / "good.wav", seconds=1.0)
    stdout = FlushedStream()
    seen_at_start = {}
    one_file = cli_events._one_file

    def watched(tagger, path, *args):
        seen_at_start[path] = stdout.flushed
        return one_file(tagger, path, *args)

    monkeypatch.setattr(cli_events, "_one_file", watched)
    monkeypatch.setattr("sys.stdout", stdout)
    code = main([str(bad), good, "-c", cnn6, "--labels", str(labels_csv), "--events", "--segment", "0.5",
                 "--format", fmt, "--no-progress"])
    assert code == 1
    if fmt == "tsv":  # a TSV has no line for a failed file; its header comes before any file
        assert seen_at_start[str(bad)] == first_line + "\n"
    else:
        assert seen_at_start[str(bad)] == ""
        assert json.loads(seen_at_start[good])["path"] == str(bad)


@requires_fixtures
def test_plots_carry_the_log_mel_of_the_file(fixture_checkpoint, labels_csv, tmp_path, monkeypatch):
    from panns_infer.results import Framewise

    sed = str(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"))
    wav = _wav(tmp_path / "a.wav", seconds=1.0)
    seen = []
    monkeypatch.setattr(Framewise, "plot", lambda self, path, top_k=10, logmel=None: seen.append((path, top_k, logmel)))
    assert main([wav, "-c", sed, "--labels", str(labels_csv), "--events", "--plot", str(tmp_path / "a.png"),
                 "-k", "4", "--no-progress"]) == 0
    [(path, top_k, logmel)] = seen
    assert (path, top_k) == (str(tmp_path / "a.png"), 4)
    assert logmel is not None and logmel.shape == (101, 64)  # the file's frames (1 s at a 10 ms hop) x mel bins


@requires_fixtures
@pytest.mark.parametrize("frames, drawn", [(60_000, True), (60_001, False)])
def test_a_plot_carries_the_log_mel_up_to_ten_minutes(fixture_checkpoint, labels_csv, tmp_path, monkeypatch,
                                                      frames, drawn):
    """Past 60,000 frames (10 minutes at a 10 ms hop) the plot goes without its log-mel, which
    would be computed again over the whole file; up to that, with it, cut to the result's frames."""
    from panns_infer.cli import events as cli_events
    from panns_infer.results import Framewise

    sed = str(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"))
    wav = _wav(tmp_path / "a.wav", seconds=1.0)
    detect = cli_events._detect

    def long_result(*args, **kwargs):
        result = detect(*args, **kwargs)
        result.num_frames = frames  # as if the file were this long
        return result

    computed = []
    monkeypatch.setattr(cli_events, "_detect", long_result)
    monkeypatch.setattr(AudioTagger, "log_mel",
                        lambda self, path: computed.append(path) or np.ones((frames + 5, 64), np.float32))
    seen = []
    monkeypatch.setattr(Framewise, "plot", lambda self, path, top_k=10, logmel=None: seen.append(logmel))
    assert main([wav, "-c", sed, "--labels", str(labels_csv), "--plot", str(tmp_path / "a.png"), "--no-progress"]) == 0
    assert computed == ([wav] if drawn else [])
    [logmel] = seen
    assert (logmel is None) if not drawn else logmel.shape == (frames, 64)


@requires_fixtures
def test_paths_as_given_on_stdout_and_once_each_in_records(run, tmp_path, monkeypatch):
    """stdout shows each path as it was given; an output file keys records by the resolved path,
    so one file named twice is tagged and recorded once."""
    _wav(tmp_path / "a.wav", seconds=1.0)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run("./a.wav", "-k", "1")
    assert code == 0 and out.splitlines()[0] == "./a.wav:"
    (tmp_path / "bad.wav").write_text("not audio")
    code, _, err = run("a.wav", "./a.wav", "bad.wav", "-k", "1", "-o", "out.jsonl")
    assert code == 1
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines[1:]] == [os.path.realpath(n) for n in ("a.wav", "bad.wav")]
    assert f"panns-tag: {os.path.realpath('bad.wav')}: " in err  # named as its record is


@requires_fixtures
def test_embeddings_from_a_decision_level_checkpoint_are_refused_with_the_reason(run, fixture_checkpoint, tmp_path):
    sed = str(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"))
    wav = _wav(tmp_path / "a.wav", seconds=1.0)
    code, out, err = run(wav, "--embeddings", str(tmp_path / "e.npz"), checkpoint=sed)
    assert (code, out) == (2, "")
    assert err.splitlines() == ["panns-tag: error: Cnn14_DecisionLevelMax is a decision-level model and has no "
                                "embedding output: drop --embeddings or use a clip-level checkpoint"]
    assert not (tmp_path / "e.npz").exists()


@requires_fixtures
def test_records_in_a_named_format_and_full_csv_columns(run, tmp_path, labels_csv):
    wav = _wav(tmp_path / "a.wav", seconds=1.0)
    code, _, _ = run(wav, "-k", "2", "-o", str(tmp_path / "tags.log"), "--format", "jsonl")
    assert code == 0
    lines = (tmp_path / "tags.log").read_text().splitlines()
    assert len(json.loads(lines[1])["labels"]) == 2
    code, _, _ = run(wav, "-k", "1", "-o", str(tmp_path / "tags.csv"), "--full")
    assert code == 0
    with open(tmp_path / "tags.csv", newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    names = [row[2] for row in csv.reader(open(labels_csv, newline=""))][1:]
    assert rows[0][-len(names):] == names and len(rows[1]) == len(rows[0])


@requires_fixtures
def test_an_embeddings_store_of_other_options_needs_overwrite_and_leaves_no_new_records(run, tmp_path):
    wav = _wav(tmp_path / "a.wav", seconds=1.0)
    emb, out = tmp_path / "e.npz", tmp_path / "new.jsonl"
    assert run(wav, "--embeddings", str(emb))[0] == 0
    with np.load(emb) as z:
        assert json.loads(str(z["header"]))["options"]["output"] == "embeddings"
    code, _, err = run(wav, "--embeddings", str(emb), "--whole-up-to", "5", "-o", str(out))
    assert code == 2 and "--overwrite" in err
    assert not out.exists()  # the records file this run created is removed with it
    code, _, err = run(wav, "--embeddings", str(emb), "--whole-up-to", "5")
    assert code == 2 and "--overwrite" in err
    records = tmp_path / "kept.jsonl"
    assert run(wav, "-o", str(records), "--whole-up-to", "5")[0] == 0
    before = records.read_bytes()
    code, _, err = run(wav, "-o", str(records), "--embeddings", str(emb), "--whole-up-to", "5")  # the store differs
    assert code == 2 and "--overwrite" in err
    assert records.read_bytes() == before  # an existing records file is never removed
    assert run(wav, "--embeddings", str(emb), "--whole-up-to", "5", "--overwrite")[0] == 0
    with np.load(emb) as z:
        assert json.loads(str(z["header"]))["options"]["whole_up_to"] == 5


@requires_fixtures
def test_an_interrupted_embeddings_run_lets_the_next_one_finish(run, tmp_path, monkeypatch):
    from panns_infer import corpus

    files = [_wav(tmp_path / f"{i}.wav", seconds=1.0, seed=i) for i in range(3)]
    emb = tmp_path / "e.npz"
    real = corpus.tag_corpus

    stored = []

    def interrupted(*args, **kwargs):
        for n, batch in enumerate(real(*args, **kwargs)):
            if n == 1:
                raise KeyboardInterrupt
            stored.extend(r.path for r in batch)
            yield batch

    ends = []  # how the run let go of its store: closed (journal kept) or finalized, once

    def spied(name: str):
        real_method = getattr(corpus.EmbeddingStore, name)

        def spy(self):
            ends.append(name)
            return real_method(self)
        return spy

    for method in ("close", "finalize"):
        monkeypatch.setattr(corpus.EmbeddingStore, method, spied(method))
    monkeypatch.setattr(corpus, "tag_corpus", interrupted)
    assert run(*files, "--embeddings", str(emb), "--batch-size", "1")[0] == 130
    assert not emb.exists() and ends == ["close"]
    monkeypatch.setattr(corpus, "tag_corpus", real)
    code, _, err = run(*files, "--embeddings", str(emb))  # the lock and journal were let go
    assert code == 0 and ends == ["close", "finalize"]
    # the files of the batch stored before the interruption (one or more: a batch takes the
    # files whose decodes are ready) are not tagged again
    kept = len(stored)
    assert f"panns-tag: {kept} of 3 file(s) already done in {emb}; {3 - kept} to do" in err.splitlines()
    with np.load(emb) as z:
        assert z["embeddings"].shape[0] == 3


@requires_fixtures
def test_tagging_passes_workers_and_progress_to_the_corpus_run(cnn6, labels_csv, tmp_path, monkeypatch, capsys):
    from panns_infer import corpus

    wav = _wav(tmp_path / "a.wav", seconds=1.0)
    real, seen = corpus.tag_corpus, []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus, "tag_corpus", spy)
    common = [wav, "-c", cnn6, "--labels", str(labels_csv), "-k", "1"]
    assert main([*common, "--workers", "3"]) == 0
    assert seen[-1]["workers"] == 3
    progress = seen[-1]["callback"]
    assert progress.__name__ == "within" and isinstance(progress.__self__, corpus_run.Progress)
    assert capsys.readouterr().err == ""  # stderr is no terminal here: no progress line

    monkeypatch.setattr(corpus_run.Progress, "interval", 0.0)
    for extra, drawn in (([], True), (["--no-progress"], False)):
        screen = Terminal()
        with monkeypatch.context() as mp:
            mp.setattr("sys.stderr", screen)
            assert main([*common, *extra, "-o", str(tmp_path / f"t{len(extra)}.jsonl")]) == 0
        assert ("1/1 files" in screen.getvalue()) is drawn


@requires_fixtures
def test_events_as_text_and_what_the_detectors_are_given(cnn6, fixture_checkpoint, labels_csv, tmp_path, monkeypatch,
                                                         capsys):
    """Text events: the path, then one line per event; a timeline's hop defaults to half the
    segment; a decision-level run passes the terminal's progress callback to framewise()."""
    import re

    wav = _wav(tmp_path / "a.wav", seconds=1.0)
    seen = {}
    real_timeline, real_framewise = AudioTagger.timeline, AudioTagger.framewise

    def timeline(self, path, **kwargs):
        seen["timeline"] = kwargs
        return real_timeline(self, path, **kwargs)

    def framewise(self, path, **kwargs):
        seen["framewise"] = kwargs
        return real_framewise(self, path, **kwargs)

    monkeypatch.setattr(AudioTagger, "timeline", timeline)
    monkeypatch.setattr(AudioTagger, "framewise", framewise)
    assert main([wav, "-c", cnn6, "--labels", str(labels_csv), "--events", "--segment", "0.6",
                 "--threshold", "0.05", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{wav}:" and len(lines) > 1
    assert all(re.fullmatch(r"  [ \d]{5}\.\d\d [ \d]{5}\.\d\d  [01]\.\d{3}  \S.*", line) for line in lines[1:]), lines
    assert seen["timeline"]["segment"] == 0.6 and seen["timeline"]["hop"] == 0.3

    sed = str(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"))
    monkeypatch.setattr("sys.stderr", Terminal())
    assert main([wav, "-c", sed, "--labels", str(labels_csv), "--events"]) == 0
    assert callable(seen["framewise"]["callback"])
