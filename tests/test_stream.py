"""Live audio: online results equal offline ones, whatever the chunking; sources, faults, bounds."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
import types

import numpy as np
import pytest

from conftest import FIXTURES, requires_fixtures
from panns_infer import stream_sources
from panns_infer.audio import resample
from panns_infer.errors import AudioDecodeError, InvalidArgumentError, InvalidAudioError
from panns_infer.events import detect_events
from panns_infer.online_events import EventTracker
from panns_infer.stream import StreamResampler
from panns_infer.stream_sources import TailFile, parse_raw

RATE = 32000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- no model needed ------------------------------------------------------------------------


def _probabilities(seed: int, frames: int = 700, classes: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.integers(1, 40, size=frames)  # piecewise constant runs of random lengths, as decision-level rows
    values = rng.random((frames, classes)).astype(np.float32)
    return np.repeat(values, steps, axis=0)[:frames]


EVENT_OPTIONS = [
    {},
    {"threshold": 0.6, "offset_threshold": 0.3},
    {"threshold": 0.5, "min_gap": 0.15, "min_duration": 0.05},
    {"threshold": 0.55, "offset_threshold": 0.4, "median_filter": 0.07, "min_gap": 0.05},
    {"threshold": [0.2, 0.5, 0.7, 0.9, 0.4, 0.6], "classes": ["c1", "c3", "c4"], "median_filter": 0.2},
]


@pytest.mark.parametrize("options", EVENT_OPTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_event_tracker_equals_detect_events_for_any_chunking(options, seed):
    p = _probabilities(seed)
    names = [f"c{i}" for i in range(p.shape[1])]
    offline = detect_events(p, names, 0.01, **options)
    assert offline, "the case must hold events to compare"
    rng = np.random.default_rng(seed + 10)
    for sizes in ([1] * len(p), [1000], list(rng.integers(1, 50, size=100))):
        tracker = EventTracker(names, 0.01, **options)
        found, at = [], 0
        for size in sizes:
            found += tracker.push(p[at:at + size])
            at += size
            if at >= len(p):
                break
        found += tracker.push(p[at:])
        found += tracker.finish()
        key = lambda e: (e.onset, e.label, e.offset)  # noqa: E731
        assert sorted(found, key=key) == offline  # same events, times and scores, each once


def test_event_tracker_reports_an_event_when_it_closes_and_open_ones_at_the_end():
    p = np.zeros((50, 1), dtype=np.float32)
    p[5:10] = 0.9
    p[40:] = 0.8
    tracker = EventTracker(["Dog"], 0.01)
    assert tracker.push(p[:9]) == []              # still open
    first = tracker.push(p[9:11])
    assert [(e.onset, e.offset) for e in first] == [(0.05, 0.1)]
    assert tracker.push(p[11:]) == []             # open until the end
    assert [(e.onset, e.offset) for e in tracker.finish()] == [(0.4, 0.5)]


def test_event_tracker_refuses_bad_options():
    with pytest.raises(InvalidArgumentError):
        EventTracker(["a"], 0.01, threshold=0.3, offset_threshold=0.5)
    with pytest.raises(InvalidArgumentError):
        EventTracker(["a"], 0.01, classes=["b"])


@pytest.mark.parametrize("rate", [48000, 44100, 16000])
def test_stream_resampler_equals_whole_resampling_for_any_chunking(rate):
    rng = np.random.default_rng(rate)
    x = rng.standard_normal(int(rate * 0.83)).astype(np.float32) * 0.1
    whole = resample(x, rate, RATE)
    outs = []
    for size in (1, 997, len(x)):
        r = StreamResampler(rate, RATE)
        parts = [r.push(x[i:i + size]) for i in range(0, len(x), size)] + [r.finish()]
        outs.append(np.concatenate(parts))
    for out in outs:  # resampy over the whole signal, bit for bit, however it was cut
        np.testing.assert_array_equal(out, whole)


def test_parse_raw_formats_and_errors():
    assert parse_raw("s16le:32000") == parse_raw("S16LE:32000:1")
    assert parse_raw("u8:8000:2").frame_bytes == 2
    for bad in ("s16le", "s16le:abc", "s24le:32000", "s16le:32000:0", "s16le:10:1", "s16le:32000:1:2"):
        with pytest.raises(InvalidArgumentError):
            parse_raw(bad)


# --- with fixture checkpoints -----------------------------------------------------------------


@pytest.fixture(scope="module")
def wave():
    if not (FIXTURES / "goldens" / "waveforms_32000.npz").is_file():
        pytest.skip(f"parity fixtures not found at {FIXTURES}")
    w = np.load(FIXTURES / "goldens" / "waveforms_32000.npz")
    return np.concatenate([w["real_7s"][:70000], w["synth_10s"][:67000]])  # 4.28 s, not a whole hop


@pytest.fixture(scope="module")
def cnn6(fixture_checkpoint, labels_csv):
    from panns_infer import AudioTagger

    return AudioTagger(fixture_checkpoint("Cnn6"), labels=labels_csv, device="cpu", window=2.0, whole_up_to=0)


@pytest.fixture(scope="module")
def sed(fixture_checkpoint, labels_csv):
    from panns_infer import AudioTagger

    path = fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth")
    return AudioTagger(path, labels=labels_csv, device="cpu", window=1.28, hop=0.64, whole_up_to=0)


def _chunks(x, size):
    return (x[i:i + size] for i in range(0, len(x), size))


def _summary(updates):
    return [(u.start, u.end, u.final, None if u.tags is None else u.tags.probabilities.tobytes(),
             None if u.framewise is None else u.framewise.tobytes(), u.first_frame, tuple(u.events))
            for u in updates]


@requires_fixtures
def test_each_window_tags_equal_tag_of_that_slice(cnn6, wave):
    updates = list(cnn6.stream(_chunks(wave, 5000), window=2.0, hop=0.5, top_k=3, mode="windows"))
    ends = [u.end for u in updates]
    assert ends == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, round(len(wave) / RATE, 6)]
    assert [u.start for u in updates[:4]] == [0.0] * 4 and updates[4].start == 0.5  # prefixes, then windows
    assert updates[-1].final and not any(u.final for u in updates[:-1])
    for u in updates:
        piece = wave[int(round(u.start * RATE)):int(round(u.end * RATE))]
        ref = cnn6.tag(piece, top_k=3)
        assert np.abs(ref.probabilities - u.tags.probabilities).max() <= 1e-6
        assert u.tags.labels == ref.labels


@requires_fixtures
def test_results_do_not_depend_on_chunking(cnn6, wave):
    x = wave[:80000]
    one = _summary(cnn6.stream(_chunks(x, 1), window=1.0, hop=0.5))
    assert one == _summary(cnn6.stream(_chunks(x, 1000), window=1.0, hop=0.5))
    assert one == _summary(cnn6.stream([x], window=1.0, hop=0.5))
    # and at another rate, through the stream resampler
    x48 = resample(x, RATE, 48000)
    a = _summary(cnn6.stream(_chunks(x48, 1), sample_rate=48000, window=1.0, hop=0.5))
    assert a == _summary(cnn6.stream(_chunks(x48, 3 * 48000), sample_rate=48000, window=1.0, hop=0.5))


@requires_fixtures
def test_framewise_rows_and_events_equal_offline(sed, wave):
    options = {"threshold": 0.6, "offset_threshold": 0.45, "min_gap": 0.35, "min_duration": 0.2}
    updates = list(sed.stream(_chunks(wave, 7000), window=1.28, hop=0.64, events=options, mode="windows"))
    offline = sed.framewise(wave)
    rows = np.concatenate([u.framewise for u in updates])
    assert [u.first_frame for u in updates] == list(np.cumsum([0] + [len(u.framewise) for u in updates[:-1]]))
    assert rows.shape == offline.probabilities.shape            # every row, the tail included
    assert np.abs(rows - offline.probabilities).max() <= 1e-6
    online = sorted((e for u in updates for e in u.events), key=lambda e: (e.onset, e.label, e.offset))
    expected = offline.events(**options)
    assert len(expected) >= 5
    assert [(e.onset, e.offset, e.label) for e in online] == [(e.onset, e.offset, e.label) for e in expected]
    assert max(abs(a.score - b.score) for a, b in zip(online, expected)) <= 1e-6
    # an event is reported in the update whose rows close it, not at the end only
    assert any(u.events for u in updates[:-1])


@requires_fixtures
def test_raw_pcm_file_objects_equal_array_chunks(cnn6, wave, caplog):
    pcm = (np.clip(wave[:60000], -1, 1) * 32767).astype(np.int16)
    expected = _summary(cnn6.stream([pcm], window=1.0, hop=0.5))
    got = _summary(cnn6.stream(io.BytesIO(pcm.tobytes()), raw="s16le:32000", window=1.0, hop=0.5))
    assert got == expected
    stereo = np.stack([pcm, pcm], axis=1).astype(">i2").tobytes()
    assert _summary(cnn6.stream(io.BytesIO(stereo), raw="s16be:32000:2", window=1.0, hop=0.5)) == expected
    with caplog.at_level(logging.WARNING, logger="panns_infer"):   # ends mid-sample: a clean end
        cut = _summary(cnn6.stream(io.BytesIO(pcm.tobytes() + b"\x01"), raw="s16le:32000", window=1.0, hop=0.5))
    assert cut == expected and "inside a frame" in caplog.text


@requires_fixtures
def test_garbage_raises_a_typed_error_after_the_complete_hops(cnn6):
    x = np.full(48000, 0.1, dtype=np.float32)
    x[40000] = np.nan
    seen = []
    with pytest.raises(InvalidAudioError):
        for u in cnn6.stream(io.BytesIO(x.astype("<f4").tobytes()), raw="f32le:32000", window=1.0, hop=0.25):
            seen.append(u)
    assert seen and seen[-1].final and seen[-1].end >= 1.0
    with pytest.raises(AudioDecodeError):
        list(cnn6.stream(io.BytesIO(b"this is not audio at all" * 100), window=1.0, hop=0.5))
    with pytest.raises(InvalidAudioError):
        list(cnn6.stream([np.zeros((10, 2))], window=1.0, hop=0.5))
    with pytest.raises(InvalidArgumentError):
        list(cnn6.stream(np.zeros(100), window=1.0, hop=0.5))


@requires_fixtures
def test_a_stalled_pipe_ends_cleanly_with_every_complete_hop(cnn6, wave):
    read_fd, write_fd = os.pipe()
    pcm = (wave[:30000] * 32767).astype(np.int16).tobytes()
    os.write(write_fd, pcm)              # 0.94 s (fits the pipe's buffer), then the writer stalls: never closes
    try:
        with os.fdopen(read_fd, "rb") as reader:
            start = time.monotonic()
            updates = list(cnn6.stream(reader, raw="s16le:32000", window=0.5, hop=0.25, idle_timeout=0.5,
                                        mode="windows"))
            assert time.monotonic() - start < 60
    finally:
        os.close(write_fd)
    assert [u.end for u in updates] == [0.25, 0.5, 0.75, 0.9375] and updates[-1].final


@requires_fixtures
def test_a_growing_file_is_followed_until_it_stops_growing(cnn6, wave, tmp_path):
    pcm = (wave[:48000] * 32767).astype(np.int16).tobytes()
    path = tmp_path / "growing.raw"
    path.write_bytes(pcm[:10000])

    def writer():
        with open(path, "ab") as f:
            for i in range(10000, len(pcm), 20000):
                time.sleep(0.05)
                f.write(pcm[i:i + 20000])
                f.flush()

    thread = threading.Thread(target=writer)
    thread.start()
    updates = list(cnn6.stream(path, raw="s16le:32000", window=1.0, hop=0.5, idle_timeout=1.0, poll=0.02))
    thread.join()
    pcm16 = np.frombuffer(pcm, dtype=np.int16)
    assert _summary(updates) == _summary(cnn6.stream([pcm16], window=1.0, hop=0.5))


def test_a_followed_file_that_stopped_growing_ends_once(tmp_path, monkeypatch):
    """The first read at the end waits ``idle_timeout`` for more bytes; after it has ended the
    stream, reads past the end (decoders make several) return at once instead of waiting again,
    and bytes that arrive later are still read."""
    sleeps: list[float] = []
    monkeypatch.setattr(stream_sources.time, "sleep", sleeps.append)
    path = tmp_path / "finished.raw"
    path.write_bytes(b"abc")
    tail = TailFile(path, poll=0.1, idle_timeout=0.5)
    assert tail.read(10) == b"abc" and not sleeps
    assert tail.read(10) == b"" and len(sleeps) == 5 and tail.ended
    assert tail.read(10) == b"" and tail.read(10) == b"" and len(sleeps) == 5
    with open(path, "ab") as f:
        f.write(b"de")
    assert tail.read(10) == b"de"
    tail.close()


@requires_fixtures
def test_a_slow_model_skips_to_the_newest_audio_and_reports_it(cnn6, wave, monkeypatch):
    engine = cnn6._engine
    real = engine.forward

    def slow(jobs, outputs):
        time.sleep(0.3)
        return real(jobs, outputs)

    monkeypatch.setattr(engine, "forward", slow)
    read_fd, write_fd = os.pipe()
    x = (np.tile(wave, 3)[:RATE * 12] * 32767).astype(np.int16).tobytes()

    def writer():  # 12 s of audio in ~1.2 s: ten times faster than the hops can be computed
        with os.fdopen(write_fd, "wb") as w:
            for i in range(0, len(x), RATE // 5):
                w.write(x[i:i + RATE // 5])
                w.flush()
                time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(read_fd, "rb") as reader:
        updates = list(cnn6.stream(reader, raw="s16le:32000", window=1.0, hop=0.25, max_lag=1.0, mode="windows"))
    thread.join()
    skips = [u.skipped for u in updates if u.skipped is not None]
    assert skips, "the model could not keep up, so audio must have been skipped"
    tagged = [u for u in updates if u.tags is not None]
    assert len(tagged) < 12 / 0.25                 # not every hop was computed
    assert tagged[-1].end == 12.0                  # but the newest audio was
    for a, b in skips:
        assert 0 < b - a
        assert not any(a < u.end <= b for u in tagged)  # nothing reported inside a skipped span


@requires_fixtures
def test_ctrl_c_ends_cleanly_with_the_results_so_far(sed, wave):
    def source():
        yield wave[:RATE * 3]
        raise KeyboardInterrupt

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for u in sed.stream(source(), window=1.28, hop=0.64, events={"threshold": 0.5}, mode="windows"):
            seen.append(u)
    assert seen[-1].final and seen[-1].end == 3.0
    rows = np.concatenate([u.framewise for u in seen])
    assert len(rows) == 3 * 100 + 1               # every frame of the 3 s received
    offline = sed.framewise(wave[:RATE * 3])
    online = sorted((e.onset, e.label) for u in seen for e in u.events)
    assert online == sorted((e.onset, e.label) for e in offline.events(threshold=0.5))


@requires_fixtures
def test_ctrl_c_inside_the_model_still_gives_offline_rows(sed, wave, monkeypatch):
    engine = sed._engine
    real, calls = engine.forward, []

    def interrupted_once(jobs, outputs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(jobs, outputs)

    monkeypatch.setattr(engine, "forward", interrupted_once)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        for u in sed.stream([wave[:RATE * 3]], window=1.28, hop=0.64, mode="windows"):
            seen.append(u)
    monkeypatch.setattr(engine, "forward", real)
    rows = np.concatenate([u.framewise for u in seen])
    offline = sed.framewise(wave[:RATE * 3]).probabilities
    assert rows.shape == offline.shape and np.abs(rows - offline).max() <= 1e-6


@requires_fixtures
def test_microphone_through_a_fake_input_device(cnn6, wave, monkeypatch):
    pcm = wave[:RATE * 2].astype(np.float32)

    class FakeInputStream:
        def __init__(self, *, samplerate, channels, dtype, device, blocksize, callback):
            assert samplerate == RATE and channels == 1 and dtype == "float32"
            self.callback, self.blocksize = callback, blocksize
            self.thread = threading.Thread(target=self._run, daemon=True)

        def _run(self):
            for i in range(0, len(pcm), self.blocksize):
                self.callback(pcm[i:i + self.blocksize, None], self.blocksize, None, None)

        def __enter__(self):
            self.thread.start()
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setitem(sys.modules, "sounddevice", types.SimpleNamespace(InputStream=FakeInputStream))
    for mode, count in (("exact", 3), ("windows", 4)):  # the updates before the end (the device never ends)
        gen = cnn6.stream("mic", window=1.0, hop=0.5, mode=mode)
        updates = [next(gen) for _ in range(count)]
        gen.close()
        expected = list(cnn6.stream([pcm], window=1.0, hop=0.5, mode=mode))[:count]
        assert _summary(updates) == _summary(expected)


@requires_fixtures
def test_microphone_without_portaudio_is_a_typed_error(cnn6, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails, as without the package
    with pytest.raises(AudioDecodeError, match="panns-infer\\[mic\\]"):
        next(iter(cnn6.stream("mic", window=1.0, hop=0.5)))


@requires_fixtures
@pytest.mark.slow
def test_memory_is_flat_over_an_hour(sed, monkeypatch):
    import tracemalloc

    engine = sed._engine
    rng = np.random.default_rng(0)
    segment_rows = rng.random((64, 527)).astype(np.float32)

    def fast(jobs, outputs):  # a stand-in network: the streaming machinery is what is measured
        (key, samples), = jobs
        segments = max(1, len(samples) // 10240)
        rows = segment_rows[(np.arange(segments) + len(samples)) % 64]
        return {key: {"clipwise_output": rows.max(axis=0), "segmentwise_output": rows}}

    monkeypatch.setattr(engine, "forward", fast)
    second = np.zeros(RATE, dtype=np.float32)
    tracemalloc.start()
    try:
        gen = sed.stream((second for _ in range(3600)), window=10.0, hop=1.0, events={"threshold": 0.9},
                         mode="windows")
        sizes = {}
        count = 0
        for _ in gen:
            count += 1
            if count in (600, 3500):
                sizes[count] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert count >= 3500
    assert sizes[3500] - sizes[600] < 2_000_000, sizes   # bytes: no growth with the stream's length


# --- command line -----------------------------------------------------------------------------


def _cli(args, stdin=None, timeout=600):
    import subprocess

    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "panns_infer.cli", *args], input=stdin, capture_output=True,
                          env=env, timeout=timeout)


def test_cli_refuses_stream_options_out_of_place():
    from panns_infer.cli import main

    for argv in (["--raw", "s16le:32000", "a.wav"], ["--stream", "-", "a.wav"], ["--stream", "-", "-o", "x.jsonl"],
                 ["--stream", "-", "--raw", "s24:32000"], ["--stream", "-", "--format", "csv"],
                 ["--stream", "-", "--hop", "0"], ["--stream-mode", "windows", "a.wav"],
                 ["--stream", "-", "--stream-mode", "chunks"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


@requires_fixtures
def test_cli_tags_one_file_from_stdin(fixture_checkpoint, labels_csv):
    import json

    from panns_infer import AudioTagger

    path = FIXTURES / "audio" / "r9_speech_bell_7s.wav"
    ckpt = fixture_checkpoint("Cnn6")
    out = _cli(["-", "-c", str(ckpt), "--labels", str(labels_csv), "--format", "json", "-k", "3"],
               stdin=path.read_bytes())
    assert out.returncode == 0, out.stderr.decode()
    record = json.loads(out.stdout)
    ref = AudioTagger(ckpt, labels=labels_csv, device="cpu").tag(str(path), top_k=3)
    assert record["labels"] == ref.labels and np.allclose(record["scores"], ref.scores, atol=1e-6)


@requires_fixtures
@pytest.mark.slow
def test_ffmpeg_pipe_into_cli_equals_offline(fixture_checkpoint, labels_csv, sed):
    import json
    import shutil
    import subprocess

    from panns_infer import AudioTagger

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (Debian: apt-get install ffmpeg)")
    src = FIXTURES / "audio" / "r9_speech_bell_7s.mp3"
    decode = ["ffmpeg", "-loglevel", "error", "-i", str(src), "-f", "s16le", "-ac", "1", "-ar", "32000", "-"]
    pcm = np.frombuffer(subprocess.run(decode, capture_output=True, check=True).stdout, dtype=np.int16)
    exact = AudioTagger(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"),
                        labels=labels_csv, device="cpu")
    ckpt = fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth")
    x = pcm.astype(np.float32) / 32768
    for mode in ("exact", "windows"):
        cmd = " ".join(decode) + f" | {sys.executable} -m panns_infer.cli --stream - --raw s16le:32000 -c {ckpt} " \
            f"--labels {labels_csv} --events --threshold 0.5 --format jsonl --window 1.28 --hop 0.64 -k 5 " \
            f"--stream-mode {mode}"
        out = subprocess.run(cmd, shell=True, capture_output=True, env=dict(os.environ, PYTHONPATH=ROOT),
                             timeout=900)
        assert out.returncode == 0, out.stderr.decode()
        lines = [json.loads(line) for line in out.stdout.decode().splitlines()]
        windows = [r for r in lines if r["type"] == "window"]
        events = [r for r in lines if r["type"] == "event"]
        assert windows[-1]["end"] == round(len(x) / RATE, 6)
        if mode == "windows":
            for w in windows:
                ref = sed.tag(x[int(round(w["start"] * RATE)):int(round(w["end"] * RATE))], top_k=5)
                assert w["labels"] == ref.labels and np.allclose(w["scores"], ref.scores, atol=1e-6)
            offline = sed.framewise(x)
        else:  # the exact stream's events are those of the whole recording
            offline = exact.framewise(x)
            rows = offline.probabilities
            for w in windows:  # each line's tags: the max over the window's final rows
                a, b = int(round(w["start"] * 100)), int(round(w["end"] * 100)) + (1 if w.get("final") else 0)
                assert np.allclose(w["scores"], np.sort(rows[a:b].max(axis=0))[::-1][:5], atol=1e-5)
        assert sorted((e["onset"], e["label"], e["offset"]) for e in events) == \
            sorted((e.onset, e.label, e.offset) for e in offline.events(threshold=0.5))
