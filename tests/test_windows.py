"""Long recordings: window plans, streaming resampling, stitching, bounded memory."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import resampy
import soundfile

from conftest import requires_fixtures
from panns_infer import AudioTagger
from panns_infer.audio import resample
from panns_infer.errors import InvalidArgumentError
from panns_infer.windows import grid_spans, iter_windows, plan_windows, resample_stream, stitch_segments

NAMES = [f"class {i}" for i in range(527)]


@pytest.mark.parametrize("n", [1, 399, 400, 401, 1000, 12345])
def test_plan_covers_the_input_with_aligned_windows(n):
    spans = plan_windows(n, window=400, hop=150, align=32)
    assert spans[0][0] == 0 and spans[-1][1] == n
    if n <= 400:
        assert spans == [(0, n)]
        return
    starts = [a for a, _ in spans]
    assert all(a % 32 == 0 for a in starts) and starts == sorted(set(starts))
    assert all(b - a >= 400 for a, b in spans)
    assert all(b_prev > a for (_, b_prev), (a, _) in zip(spans, spans[1:]))  # overlapping, no gaps


@pytest.mark.parametrize("rate, target, n, block", [(44100, 32000, 300_000, 44100), (48000, 32000, 250_001, 7000),
                                                    (22050, 32000, 100_003, 5000), (44101, 32000, 200_000, 30_000),
                                                    (8000, 32000, 20_000, 100), (44100, 32000, 1000, 100)])
def test_streaming_resampling_equals_whole_signal_resampling(rate, target, n, block):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    streamed = np.concatenate(list(resample_stream((x[i:i + block] for i in range(0, n, block)), rate, target)))
    np.testing.assert_array_equal(streamed, resample(x, rate, target))
    np.testing.assert_array_equal(streamed, resampy.resample(x, rate, target, filter="kaiser_best"))


def test_iter_windows_slices_and_short_streams():
    x = np.arange(1000, dtype=np.float32)
    spans = plan_windows(1000, window=300, hop=150, align=10)
    got = dict(iter_windows((x[j:j + 70] for j in range(0, 1000, 70)), spans))
    assert list(got) == list(range(len(spans)))
    for k, (a, b) in enumerate(spans):
        np.testing.assert_array_equal(got[k], x[a:b])
    # A stream that ends early (a header that promised more): later windows are cut or dropped.
    short = list(iter_windows(iter([x[:500]]), spans))
    assert short[-1][1][-1] == 499 and all(w[0] < 500 for _, w in short)


def test_stitch_keeps_the_centre_of_overlaps():
    a = np.full((10, 1), 1.0)
    b = np.full((10, 1), 2.0)
    out = stitch_segments([(0, a), (6, b)])  # overlap 6..10, boundary at 8
    assert out[:, 0].tolist() == [1.0] * 8 + [2.0] * 8


@pytest.fixture(scope="module")
def sed(fixture_checkpoint):
    return AudioTagger(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"),
                       device="cpu", labels=NAMES, window=10.0, whole_up_to=0)


@requires_fixtures
def test_windows_equal_whole_clip_results_in_their_centres(sed):
    x = (np.random.default_rng(5).standard_normal(32000 * 27) * 0.1).astype(np.float32)
    fw = sed.framewise(x).probabilities
    assert fw.shape == (len(x) // 320 + 1, 527)
    spans = sed._engine.spans(len(x))
    assert len(spans) > 2
    for a, b in spans[1:-1]:
        whole = sed.framewise(x[a:b]).probabilities
        centre = slice(a // 320 + 320, a // 320 + 640)
        assert np.abs(fw[centre] - whole[320:640]).max() <= 1e-5


@requires_fixtures
def test_no_window_at_most_one_window_is_the_whole_clip(sed, fixture_checkpoint):
    whole = AudioTagger(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"),
                        device="cpu", labels=NAMES, window=None)
    x = (np.random.default_rng(6).standard_normal(320_000) * 0.1).astype(np.float32)
    np.testing.assert_array_equal(sed.framewise(x).probabilities, whole.framewise(x).probabilities)
    longer = np.concatenate([x, x])
    assert whole.framewise(longer).probabilities.shape == sed.framewise(longer).probabilities.shape


@requires_fixtures
def test_every_length_gives_the_whole_input_result_by_default_and_windows_on_request(fixture_checkpoint, tmp_path):
    """By default a 20 s input runs in one pass and a 31 s one in exact chunks: both give the
    one-pass (reference) result, as array and as file; 10 s windows differ."""
    path = fixture_checkpoint("Cnn6")
    default = AudioTagger(path, device="cpu", labels=NAMES)
    one_pass = AudioTagger(path, device="cpu", labels=NAMES, whole_up_to=math.inf)
    windows = AudioTagger(path, device="cpu", labels=NAMES, window=10.0, whole_up_to=0)
    rng = np.random.default_rng(8)
    x20 = (rng.standard_normal(20 * 32000) * 0.1).astype(np.float32)
    x31 = (rng.standard_normal(31 * 32000) * 0.1).astype(np.float32)
    soundfile.write(tmp_path / "x31.wav", x31, 32000, subtype="FLOAT")
    assert not default._engine.chunked(len(x20)) and default._engine.chunked(len(x31))
    for clip in (x20, x31, str(tmp_path / "x31.wav")):
        got = default.tag(clip).probabilities
        np.testing.assert_allclose(got, one_pass.tag(clip).probabilities, rtol=0, atol=1e-5)
        assert np.abs(got - windows.tag(clip).probabilities).max() > 1e-4  # windows differ
    for bad in (-1, float("nan"), "30", True):
        with pytest.raises(InvalidArgumentError, match="whole_up_to"):
            AudioTagger(path, device="cpu", labels=NAMES, whole_up_to=bad)


@requires_fixtures
@pytest.mark.parametrize("window, hop", [(0.2, 0.1), (0.31, None), (0.3, 0.3)])
def test_windows_shorter_than_the_window_grid_are_refused(fixture_checkpoint, window, hop):
    """Windows start on the 0.32 s segment grid: a shorter window would leave audio between
    windows that never reaches the network (0.2 s every 0.32 s skipped 37%)."""
    with pytest.raises(InvalidArgumentError, match="never reach the network"):
        AudioTagger(fixture_checkpoint("Cnn6"), device="cpu", labels=NAMES, window=window, hop=hop)


@requires_fixtures
@pytest.mark.parametrize("window, hop", [(0.32, None), (0.5, 0.1), (10.0, 4.8)])
def test_windows_cover_every_sample(fixture_checkpoint, window, hop):
    tagger = AudioTagger(fixture_checkpoint("Cnn6"), device="cpu", labels=NAMES, window=window, hop=hop,
                         whole_up_to=0)
    n = 32000 * 12 + 17
    spans = tagger._engine.spans(n)
    covered = np.zeros(n, bool)
    for a, b in spans:
        covered[a:b] = True
    assert covered.all() and len(spans) > 1


@requires_fixtures
def test_stitching_shows_no_seams(sed):
    """An input that repeats every segment (0.32 s) gives the same output in every segment
    away from the recording's own edges, across the window boundaries too."""
    t = np.arange(32000 * 40) / 32000
    x = (0.3 * np.sin(2 * np.pi * 437.5 * t)).astype(np.float32)  # 140 periods per segment
    fw = sed.framewise(x).probabilities
    assert len(sed._engine.spans(len(x))) >= 7
    interior = fw[32 * 8:-32 * 8]  # the receptive field reaches ~6 segments
    assert np.abs(interior - interior[0]).max() <= 1e-5


@requires_fixtures
@pytest.mark.slow
def test_a_long_file_streams_with_bounded_memory(fixture_checkpoint, tmp_path):
    """20 minutes at 32 kHz: the whole signal would be 154 MB of float32; streaming keeps
    numpy's peak far below that, and the result equals the in-memory windowed result."""
    rate, minutes = 32000, 20
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(7)
    with soundfile.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for _ in range(minutes * 6):  # 10 s blocks of quiet noise with a tone burst
            block = rng.standard_normal(rate * 10) * 0.02
            block[: rate] += 0.3 * np.sin(2 * np.pi * 1000 * np.arange(rate) / rate)
            f.write(block.astype(np.float32))
    tagger = AudioTagger(fixture_checkpoint("MobileNetV2"), device="cpu", labels=NAMES, batch_size=4)
    seen = []
    tracemalloc.start()
    streamed = tagger.tag(str(path), callback=lambda done, total: seen.append((done, total)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 40e6, f"numpy peak {peak / 1e6:.1f} MB while streaming"
    assert seen[-1][0] == pytest.approx(seen[-1][1]) and seen[-1][1] == pytest.approx(minutes * 60)
    audio, _ = soundfile.read(path, dtype="float32")
    in_memory = tagger.tag(audio)
    assert np.abs(streamed.probabilities - in_memory.probabilities).max() <= 1e-5


def test_events_of_a_long_result_are_computed_in_class_blocks(monkeypatch):
    """Long recordings expand a few classes at a time; the events are the same."""
    import panns_infer.results as results
    from panns_infer.results import Framewise

    seg = np.random.default_rng(0).random((50, 6)).astype(np.float32)
    names = list("abcdef")
    compact = Framewise.from_segments(seg, frames_per_segment=32, num_frames=50 * 32 + 17, frame_hop=0.01,
                                      class_names=names, clipwise=seg.max(0))
    assert compact.shape == (1617, 6)
    full = Framewise(np.concatenate([np.repeat(seg, 32, axis=0), np.repeat(seg[-1:], 17, axis=0)]),
                     0.01, names, seg.max(0))
    monkeypatch.setattr(results, "_EXPAND_LIMIT", 4 * 1617 * 2)  # two classes per block
    for options in [dict(threshold=0.6), dict(threshold={"a": 0.9, "c": 0.3}),
                    dict(threshold=np.linspace(0.5, 0.9, 6), offset_threshold=0.4),
                    dict(classes=["b", "e"], threshold=0.7)]:
        events = compact.events(**options)
        assert events and events == full.events(**options)
    assert compact._expanded is None  # never expanded whole
    np.testing.assert_array_equal(compact.probabilities, full.probabilities)


@pytest.mark.parametrize("n, spans", [(3, [(0, 3)]), (4, [(0, 4)]), (7, [(0, 4), (3, 7)]),
                                      (8, [(0, 4), (3, 7), (6, 8)]), (10, [(0, 4), (3, 7), (6, 10)])])
def test_grid_spans_are_just_enough_segments(n, spans):
    assert grid_spans(n, segment=4, hop=3) == spans


def test_a_window_exactly_one_window_long_is_the_whole_input():
    assert plan_windows(400, window=400, hop=150, align=32) == [(0, 400)]


def test_without_align_windows_start_on_any_sample():
    assert plan_windows(101, window=40, hop=25) == [(0, 40), (25, 65), (50, 90), (61, 101)]


def _marked(start: int, length: int, window: int) -> tuple[int, np.ndarray]:
    """A window's segments: column 0 the global segment index, column 1 the window's number."""
    return start, np.stack([np.arange(start, start + length), np.full(length, window)], axis=1).astype(float)


@pytest.mark.parametrize("layout, owners", [
    # the last window longer than the others, as plan_windows makes it: boundaries at the overlaps' middles
    ([(0, 10), (6, 10), (12, 14)], [0] * 8 + [1] * 6 + [2] * 12),
    # a shorter window before a longer one, and the other way round
    ([(0, 6), (4, 12)], [0] * 5 + [1] * 11),
    ([(0, 12), (8, 6)], [0] * 10 + [1] * 4),
    # windows that touch without overlapping (hop == window): plain concatenation
    ([(0, 5), (5, 5), (10, 7)], [0] * 5 + [1] * 5 + [2] * 7),
])
def test_stitching_takes_each_segment_once_from_the_window_nearest_its_centre(layout, owners):
    out = stitch_segments([_marked(start, length, k) for k, (start, length) in enumerate(layout)])
    assert out[:, 0].tolist() == list(range(len(owners)))  # every segment once, in order
    assert out[:, 1].tolist() == owners
