"""panns-tag: output formats, exit codes, and no tracebacks for user errors."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_fixtures
from panns_infer.cli import main


def _wav(path, seconds=1.0, rate=32000, seed=0):
    x = (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)
    soundfile.write(path, x, rate)
    return str(path)


@pytest.fixture(scope="module")
def cnn6(fixture_checkpoint):
    return str(fixture_checkpoint("Cnn6"))


@requires_fixtures
def test_text_and_json_output(cnn6, labels_csv, tmp_path, capsys):
    a, b = _wav(tmp_path / "a.wav"), _wav(tmp_path / "b.flac", rate=44100, seed=1)
    assert main([a, b, "--checkpoint", cnn6, "--labels", str(labels_csv), "--top-k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{a}:" and len(out) == 8
    assert main([a, "-c", cnn6, "--labels", str(labels_csv), "-k", "2", "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == a and record["model"] == os.path.basename(cnn6) and record["duration"] == 1.0
    assert record["sample_rate"] == 32000 and len(record["labels"]) == 2 and len(record["scores"]) == 2


@requires_fixtures
def test_bad_files_are_reported_and_the_rest_finish(cnn6, labels_csv, tmp_path, capsys):
    good = _wav(tmp_path / "good.wav")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    code = main([str(bad), good, str(tmp_path / "missing.wav"), "-c", cnn6, "--labels", str(labels_csv),
                 "--format", "json"])
    captured = capsys.readouterr()
    assert code == 1
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [("error" in r) for r in records] == [True, False, True]
    assert "2 of 3 file(s) failed" in captured.err and "Traceback" not in captured.err


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main([]) == 2
    assert main([_wav(tmp_path / "a.wav"), "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        main(["--format", "xml", "a.wav"])
    assert info.value.code == 2


def test_list_models(capsys):
    assert main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert "Cnn14_DecisionLevelMax" in out and "Wavegram_Logmel_Cnn14" in out
    assert main(["--list-models", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)  # one JSON document: an array
    assert {"name", "mAP", "embedding_size", "pinned", "sample_rate"} <= set(rows[0])


@requires_fixtures
def test_console_script_runs_as_a_new_process(cnn6, labels_csv, tmp_path):
    wav = _wav(tmp_path / "a.wav")
    proc = subprocess.run([sys.executable, "-m", "panns_infer.cli", wav, "-c", cnn6, "--labels",
                           str(labels_csv), "-k", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{wav}:")


@pytest.fixture(scope="module")
def sed_ckpt(fixture_checkpoint):
    return str(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"))


@requires_fixtures
def test_events_as_dcase_tsv_and_plot(sed_ckpt, labels_csv, tmp_path, capsys):
    wav = _wav(tmp_path / "street.wav", seconds=3.0)
    image = tmp_path / "street.png"
    # --plot needs matplotlib (the plot extra): without it the events are still checked, then the test skips
    plot = ["--plot", str(image)] if importlib.util.find_spec("matplotlib") else []
    code = main([wav, "-c", sed_ckpt, "--labels", str(labels_csv), "--events", "--format", "tsv",
                 "--threshold", "0.6", "--min-duration", "0.3", *plot])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "filename\tonset\toffset\tevent_label" and len(lines) > 1
    for line in lines[1:]:
        name, onset, offset, label = line.split("\t")
        assert name == wav and 0 <= float(onset) < float(offset) <= 3.01 and label
        assert float(offset) - float(onset) >= 0.3
    pytest.importorskip("matplotlib")
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@requires_fixtures
def test_events_need_a_sed_checkpoint_or_a_timeline(cnn6, labels_csv, tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav", seconds=3.0)
    no_sed = ("panns-tag: error: Cnn6 has no framewise output: use a sound event detection checkpoint "
              "(Cnn14_DecisionLevelMax, Cnn14_DecisionLevelAtt)")
    assert main([wav, "-c", cnn6, "--labels", str(labels_csv), "--events"]) == 2
    assert capsys.readouterr().err == no_sed + " or add --segment SECONDS for a timeline\n"
    assert main(["--stream", wav, "-c", cnn6, "--labels", str(labels_csv), "--events"]) == 2
    assert capsys.readouterr().err == no_sed + "\n"
    assert main([wav, "-c", cnn6, "--labels", str(labels_csv), "--events", "--segment", "1",
                 "--hop", "0.5", "--format", "json", "--threshold", "0.5"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == wav and all(0 <= e["onset"] < e["offset"] <= 3.0 for e in record["events"])
    with pytest.raises(SystemExit):
        main([wav, "-c", cnn6, "--labels", str(labels_csv), "--format", "tsv"])


@requires_fixtures
def test_short_jobs_skip_the_fast_path_and_long_ones_use_it(cnn6, labels_csv, tmp_path, capsys):
    """Building the CPU fast path costs more than it saves on a few seconds of audio."""
    from panns_infer import fast

    built = []
    real = fast.optimize
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast, "optimize", lambda model, **kw: built.append(model.arch) or real(model, **kw))
        short = _wav(tmp_path / "short.wav", seconds=2.0)
        assert main([short, "-c", cnn6, "--labels", str(labels_csv), "--device", "cpu"]) == 0
        assert built == []
        long = _wav(tmp_path / "long.wav", seconds=31.0, rate=16000)
        assert main([short, long, "-c", cnn6, "--labels", str(labels_csv), "--device", "cpu"]) == 0
        assert built == ["Cnn6"]
        many = [_wav(tmp_path / f"m{i}.wav", seconds=0.5, seed=i) for i in range(9)]
        assert main(many + ["-c", cnn6, "--labels", str(labels_csv), "--device", "cpu"]) == 0
        assert built == ["Cnn6", "Cnn6"]
    capsys.readouterr()


@pytest.fixture(scope="module")
def cnn6_tagger(cnn6, labels_csv):
    from panns_infer import AudioTagger

    return AudioTagger(cnn6, labels=labels_csv, device="cpu", optimize=False)


def _same_events(records, events) -> None:
    """The same events; scores equal up to float rounding (the API may run the CPU fast path)."""
    assert [(r["label"], r["onset"], r["offset"]) for r in records] == [(e.label, e.onset, e.offset) for e in events]
    np.testing.assert_allclose([r["score"] for r in records], [e.score for e in events], rtol=0, atol=1e-4)


@requires_fixtures
def test_events_never_run_past_the_end_of_the_file(sed_ckpt, labels_csv, tmp_path, capsys):
    from panns_infer import AudioTagger

    wav = _wav(tmp_path / "short.wav", seconds=2.3)  # the last frame's hop reaches past 2.3 s
    out = tmp_path / "events.jsonl"
    common = ["-c", sed_ckpt, "--labels", str(labels_csv), "--threshold", "0.0"]
    assert main([wav, *common, "--events", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)["events"]
    assert main([wav, *common, "--events", "--output", str(out)]) == 0
    capsys.readouterr()
    written = json.loads(out.read_text().splitlines()[1])["events"]  # after the header line
    api = AudioTagger(sed_ckpt, labels=labels_csv, device="cpu").framewise(wav).events(threshold=0.0, duration=2.3)
    assert max(e["offset"] for e in printed) == 2.3                 # every class is active to the end
    assert printed == written
    _same_events(printed, api)


@requires_fixtures
@settings(max_examples=4, deadline=None, derandomize=True, database=None)
@given(segment=st.sampled_from([1.0, 2.0]), hop=st.sampled_from([0.5, 1.0]), threshold=st.sampled_from([0.0, 0.05]),
       min_duration=st.sampled_from([0.0, 0.7, 1.2]), min_gap=st.sampled_from([0.0, 0.6]))
def test_cli_timeline_events_equal_the_api(cnn6_tagger, labels_csv, tmp_path_factory, segment, hop, threshold,
                                            min_duration, min_gap):
    import contextlib
    import io

    cnn6 = str(cnn6_tagger.checkpoint_path)
    wav = _wav(tmp_path_factory.mktemp("tl") / "clip.wav", seconds=4.3, rate=16000)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([wav, "-c", cnn6, "--labels", str(labels_csv), "--events", "--format", "json",
                     "--segment", str(segment), "--hop", str(hop), "--threshold", str(threshold),
                     "--min-duration", str(min_duration), "--min-gap", str(min_gap)]) == 0
    printed = json.loads(buf.getvalue())["events"]
    api = cnn6_tagger.timeline(wav, segment=segment, hop=hop).events(
        threshold=threshold, min_duration=min_duration, min_gap=min_gap, duration=4.3)
    _same_events(printed, api)
    assert all(e["offset"] <= 4.3 and e["offset"] - e["onset"] >= min_duration - 1e-9 for e in printed)


@requires_fixtures
def test_arch_names_are_case_insensitive_like_checkpoint_names(cnn6, labels_csv, tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav")
    assert main([wav, "-c", cnn6, "--arch", "cnn6", "--labels", str(labels_csv), "-k", "1"]) == 0
    assert main([wav, "-c", str(tmp_path / "a.wav"), "--labels", str(labels_csv)]) == 2
    assert "WAV audio" in capsys.readouterr().err



@pytest.fixture
def released_cnn6(cnn6, monkeypatch, loopback_server) -> bytes:
    """The fixture Cnn6 pinned in the registry as the released ``Cnn6`` and served by a
    loopback mirror; returns its bytes."""
    import dataclasses
    import hashlib

    from panns_infer import registry

    data = open(cnn6, "rb").read()
    entry = dataclasses.replace(registry.CHECKPOINTS["Cnn6"], checksum="sha256:" + hashlib.sha256(data).hexdigest(),
                                size=len(data))
    monkeypatch.setitem(registry.CHECKPOINTS, "Cnn6", entry)
    loopback_server.serve("/" + urllib.parse.quote(entry.filename), data)
    monkeypatch.setenv("PANNS_INFER_MIRROR", loopback_server.url(""))
    return data


@requires_fixtures
def test_a_registry_name_is_the_model_every_output_names(released_cnn6, cnn6, labels_csv, tmp_path, capsys):
    """``-c Cnn6`` is named ``Cnn6`` in records and on stdout, not by its file name, which is
    what a checkpoint given as a path is named by."""
    a = _wav(tmp_path / "a.wav")
    common = ["-c", "Cnn6", "--labels", str(labels_csv), "--no-progress"]
    assert main([a, "--format", "json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "Cnn6"
    assert main([a, "--events", "--segment", "0.5", "--format", "json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "Cnn6"
    out = tmp_path / "tags.jsonl"
    assert main([a, "-o", str(out), *common]) == 0
    lines = out.read_text().splitlines()
    assert json.loads(lines[0])["model"] == "Cnn6" and json.loads(lines[1])["model"] == "Cnn6"
    assert os.path.basename(cnn6) != "Cnn6"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@requires_fixtures
@pytest.mark.parametrize("quiet", [False, True])
def test_downloads_draw_progress_on_a_terminal_unless_no_progress(released_cnn6, labels_csv, tmp_path, monkeypatch,
                                                                  capsys, quiet):
    """``--download NAME`` and a registry name given with ``-c`` fetch the released file with a
    progress bar on a terminal's stderr, and without one under ``--no-progress``."""
    import shutil

    from panns_infer import hub

    wav = _wav(tmp_path / "a.wav")
    flag = ["--no-progress"] if quiet else []
    for args in (["--download", "Cnn6"], [wav, "-c", "Cnn6", "--labels", str(labels_csv)]):
        shutil.rmtree(hub.checkpoint_path("Cnn6").parent, ignore_errors=True)
        stderr = _Terminal()
        monkeypatch.setattr("sys.stderr", stderr)
        code = main([*args, *flag])
        assert code == 0, stderr.getvalue()
        assert hub.checkpoint_path("Cnn6").read_bytes() == released_cnn6
        assert ("100% |####################|" in stderr.getvalue()) is not quiet
    assert capsys.readouterr().out.splitlines()[0] == str(hub.checkpoint_path("Cnn6"))  # --download prints it


@requires_fixtures
def test_download_offline_fetches_nothing(released_cnn6, loopback_server, capsys):
    from panns_infer import hub

    assert main(["--download", "Cnn6", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "Traceback" not in err
    assert not hub.checkpoint_path("Cnn6").exists()
    assert main(["--download", "Cnn6"]) == 0 and hub.checkpoint_path("Cnn6").read_bytes() == released_cnn6


def test_export_onnx_hands_on_the_checkpoint_path_arch_and_offline(tmp_path, monkeypatch, capsys):
    """What ``--export-onnx`` gives the exporter, and that it prints the path written (the
    export itself is tested in tests/test_export.py)."""
    from panns_infer import export

    calls = []

    def exporter(checkpoint, path, **options):
        calls.append((checkpoint, path, options))
        return tmp_path / "written.onnx"

    monkeypatch.setattr(export, "to_onnx", exporter)
    out = str(tmp_path / "m.onnx")
    assert main(["--export-onnx", out, "-c", "weights.pth", "--arch", "Cnn10", "--offline"]) == 0
    assert main(["--export-onnx", out, "-c", "Cnn14"]) == 0
    assert calls == [("weights.pth", out, {"arch": "Cnn10", "offline": True}),
                     ("Cnn14", out, {"arch": None, "offline": None})]
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "written.onnx")] * 2


def test_no_input_prints_the_usage_and_what_to_give_on_stderr(capsys):
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: panns-tag ")
    assert err.endswith("\npanns-tag: error: give at least one FILE (or --list-models / --download / --export-onnx)\n")


def test_stream_options_without_a_stream_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--raw", "s16le:32000", "a.wav"])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: --raw, --max-lag, --idle-timeout and --stream-mode go with --stream SOURCE\n")


@requires_fixtures
def test_standard_input_and_a_stream_are_tagged_live(cnn6, labels_csv, tmp_path, monkeypatch, capsys):
    """``panns-tag -`` tags one file piped in; ``--stream FILE`` prints a record per hop and a
    final one for the whole input (the live paths themselves are tested in tests/test_stream.py)."""
    from panns_infer import AudioTagger

    wav = _wav(tmp_path / "a.wav", seconds=2.0)
    ref = AudioTagger(cnn6, labels=labels_csv, device="cpu").tag(wav, top_k=3)
    common = ["-c", cnn6, "--labels", str(labels_csv), "-k", "3"]
    with open(wav, "rb") as piped:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(piped))
        assert main(["-", *common, "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["source"] == "-" and record["labels"] == ref.labels
    assert np.allclose(record["scores"], ref.scores, atol=1e-6)

    assert main(["--stream", wav, *common, "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["type"] for r in records] == ["window"] * len(records) and len(records) >= 2
    assert records[-1]["final"] and (records[-1]["start"], records[-1]["end"]) == (0.0, 2.0)
    assert records[-1]["labels"] == ref.labels and np.allclose(records[-1]["scores"], ref.scores, atol=1e-6)


@requires_fixtures
def test_extensions_pick_the_files_of_a_directory(cnn6, labels_csv, tmp_path, capsys):
    """``--extensions`` is a comma-separated list; blanks around and between its items are
    ignored, and a list that matches nothing is a usage error."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    a, b, c = _wav(folder / "a.wav"), _wav(folder / "b.flac", seed=1), _wav(folder / "c.WAV", seed=2)
    common = [str(folder), "-c", cnn6, "--labels", str(labels_csv), "--format", "json"]

    def tagged(extensions: str) -> list[str]:
        assert main([*common, "--extensions", extensions]) == 0
        return [json.loads(line)["path"] for line in capsys.readouterr().out.splitlines()]

    assert tagged(" flac, ,") == [b]
    assert tagged("wav,flac") == [a, b, c]
    assert main(common) == 0 and len(capsys.readouterr().out.splitlines()) == 3
    assert main([str(folder), str(tmp_path), *common[1:], "--extensions", "mp3"]) == 2
    assert capsys.readouterr().err == f"panns-tag: error: no audio files found in {folder} {tmp_path}\n"


@requires_fixtures
def test_warnings_print_as_panns_tag_lines_and_debug_lowers_the_level(cnn6, labels_csv, tmp_path, monkeypatch,
                                                                      capsys):
    """Library warnings reach stderr as ``panns-tag: WARNING: ...``; ``--debug`` shows debug
    messages too. (pytest gives the root logger handlers, which make ``logging.basicConfig``
    a no-op: they are removed for this test.)"""
    wav = _wav(tmp_path / "a.wav")
    pattern = str(tmp_path / "missing" / "*.wav")
    for debug, level in ((False, logging.WARNING), (True, logging.DEBUG)):
        monkeypatch.setattr(logging.root, "handlers", [])
        monkeypatch.setattr(logging.root, "level", logging.NOTSET)
        code = main([pattern, wav, "-c", cnn6, "--labels", str(labels_csv), "--format", "json",
                     *(["--debug"] if debug else [])])
        assert code == 0 and logging.root.level == level
        err = capsys.readouterr().err.splitlines()
        assert f"panns-tag: WARNING: no audio files match {pattern!r}" in err


@requires_fixtures
def test_the_model_options_reach_the_tagger(cnn6, labels_csv, tmp_path, monkeypatch, capsys):
    """Each option that shapes the model is handed to AudioTagger as given, for files and for
    live input; left out, the tagger gets its defaults."""
    import panns_infer.tagger

    real = panns_infer.tagger.AudioTagger
    calls: list[dict] = []

    def spy(checkpoint, **options):
        calls.append({"checkpoint": checkpoint, **options})
        return real(checkpoint, **options)

    monkeypatch.setattr(panns_infer.tagger, "AudioTagger", spy)
    wav = _wav(tmp_path / "a.wav", seconds=2.0)
    given = ["-c", cnn6, "--labels", str(labels_csv), "--arch", "cnn6", "--device", "cpu", "--batch-size", "3",
             "--offline", "--no-progress"]
    assert main([wav, *given, "--window", "1", "--whole-up-to", "1.5", "--format", "json"]) == 0
    assert main([wav, "-c", cnn6, "--labels", str(labels_csv), "--format", "json"]) == 0
    assert main(["--stream", wav, *given, "--format", "jsonl", "--idle-timeout", "0.5"]) == 0
    capsys.readouterr()
    model = {"checkpoint": cnn6, "arch": "cnn6", "device": "cpu", "labels": str(labels_csv), "batch_size": 3,
             "offline": True, "progress": False}
    assert calls == [
        {**model, "window": 1.0, "whole_up_to": 1.5, "optimize": False},
        {"checkpoint": cnn6, "arch": None, "device": "auto", "labels": str(labels_csv), "batch_size": 8,
         "offline": None, "progress": None, "window": None, "whole_up_to": 30.0, "optimize": False},
        model,
    ]


@requires_fixtures
def test_labels_that_cannot_be_read_stop_the_run_before_any_file(cnn6, tmp_path, capsys):
    """A label list that cannot be had is a setup failure (exit 2, one line), found before the
    first file is tagged, not a failure of every file."""
    wav = _wav(tmp_path / "a.wav")
    bad = tmp_path / "labels.csv"
    bad.write_text("index,mid,display_name\n0,/m/x,Speech\n")
    for argv in ([wav, "--format", "json"], ["-", "--format", "json"], ["--stream", wav, "--format", "jsonl"]):
        assert main([*argv, "-c", cnn6, "--labels", str(bad)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("panns-tag: error: ") and err.count("\n") == 1, argv
