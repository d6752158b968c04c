"""Resampling: block by block, bit for bit resampy's kaiser_best over the whole signal."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import resampy
import soundfile

from conftest import requires_fixtures
from panns_infer import AudioTagger
from panns_infer.resampling import StreamResampler, output_length, resample_span
from panns_infer.windows import read_blocks, resample_stream

NAMES = [f"class {i}" for i in range(527)]
RATES = [16000, 22050, 44100, 48000, 11025, 8000]


def signal(kind: str, rate: int, n: int) -> np.ndarray:
    t = np.arange(n) / rate
    if kind == "tone":
        x = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    elif kind == "noise":
        x = 0.3 * np.random.default_rng(n).standard_normal(n)
    else:  # a sweep from 50 Hz to just under the input's Nyquist frequency
        f1 = 0.45 * rate
        x = 0.5 * np.sin(2 * np.pi * 50.0 * t[-1] * ((f1 / 50.0) ** (t / t[-1]) - 1) / math.log(f1 / 50.0))
    return x.astype(np.float32)


def whole(x: np.ndarray, rate: int) -> np.ndarray:
    """What the reference pipeline gives: resampy over the whole signal."""
    return resampy.resample(x, rate, 32000, filter="kaiser_best")


def streamed(x: np.ndarray, rate: int, block: int, piece_seconds: float = 0.1) -> np.ndarray:
    r = StreamResampler(rate, 32000, piece_seconds=piece_seconds)
    parts = [r.push(x[i:i + block]) for i in range(0, len(x), block)] + [r.finish()]
    return np.concatenate(parts)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind", ["tone", "noise", "sweep"])
def test_streamed_resampling_is_resampy_on_the_whole_signal_bit_for_bit(rate, kind):
    """Blocks one sample past a whole period of the rate pair, smaller than the filter's
    context, and single output samples per filter run: each is resampy's sample exactly."""
    period_in = rate // math.gcd(rate, 32000)
    n = 2 * rate + period_in + 1  # ends one sample past a whole period
    x = signal(kind, rate, n)
    want = whole(x, rate)
    reach = StreamResampler(rate, 32000).reach
    cases = [(period_in + 1, 0.1), (reach // 2, 0.1), (rate + 1, 1.0), (3001, 1 / 32000)]
    for block, piece in cases:
        got = streamed(x, rate, block, piece)
        assert got.shape == want.shape, (block, piece)
        assert np.array_equal(got, want), f"block {block}, piece {piece} s: {np.abs(got - want).max():.3g}"


@pytest.mark.parametrize("rate", [44100, 48000])
def test_streamed_resampling_of_a_long_tone_in_tiny_blocks(rate):
    """35 s (longer than one pass) through the file reader's resample_stream, in 7-sample and
    10 s + 1 blocks."""
    x = signal("tone", rate, 35 * rate + 3)
    want = whole(x, rate)
    for block in (7, 10 * rate + 1):
        got = np.concatenate(list(resample_stream((x[i:i + block] for i in range(0, len(x), block)), rate, 32000)))
        assert np.array_equal(got, want), block


@pytest.mark.parametrize("rate", RATES)
def test_output_length_is_resampys(rate):
    for n in (1, 2, rate - 1, rate, rate + 1, 3 * rate + 7, 441 * 77 + 1):
        x = np.ones(n, dtype=np.float32)
        expected = int(n * 32000 / rate)
        assert output_length(n, rate, 32000) == expected
        assert len(streamed(x, rate, 1000)) == expected
        if expected:
            assert len(whole(x, rate)) == expected


def test_short_signals_and_signal_ends():
    """Signals shorter than the filter's reach, and energy at the very first and last sample:
    resampy sees zeros beyond both ends, and so do the first and last pieces."""
    for rate in (44100, 8000):
        for n in (5, 60, 200):
            x = np.zeros(n, dtype=np.float32)
            x[0], x[-1] = 1.0, -0.75
            for block in (1, 3, n):
                assert np.array_equal(streamed(x, rate, block, 1 / 32000), whole(x, rate)), (rate, n, block)


def test_a_piece_far_into_a_day_long_signal_uses_the_same_positions():
    """resample_span runs resampy's loop at t * (1 / ratio) - offset: the integer and the
    fractional parts it takes are those of the whole signal's t * (1 / ratio), exactly, at
    any position up to a day of 1 MHz audio."""
    for rate in (44100, 48000, 22050, 1_000_000):
        inc = 1.0 / (32000.0 / rate)
        t = np.concatenate([np.arange(k, k + 1000) for k in (10**6, 10**8, 24 * 3600 * 32000 - 1000)])
        v = t * inc
        offset = np.floor(v).astype(np.int64) - 200
        local = v - offset
        assert np.array_equal(np.floor(local).astype(np.int64), np.floor(v).astype(np.int64) - offset)
        assert np.array_equal(local - np.floor(local), v - np.floor(v))


def test_streamed_resampling_keeps_only_a_block_and_the_filter_context():
    """90 s at 16 kHz pushed in 0.5 s blocks (made on the fly): the traced peak stays a small
    fraction of the output (11.5 MB) and of the input (5.8 MB)."""
    rng = np.random.default_rng(0)
    streamed(np.ones(16000, np.float32), 16000, 16000)  # numba compiles resampy's loop on first use
    r = StreamResampler(16000, 32000)
    total = 0
    tracemalloc.start()
    for _ in range(180):
        total += len(r.push((rng.standard_normal(8000) * 0.1).astype(np.float32)))
        assert len(r._buffer) + sum(len(p) for p in r._pending) <= 8000 + 4000 + 2 * r.reach
    total += len(r.finish())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert total == 90 * 32000
    assert peak < 1e6, f"{peak / 1e6:.2f} MB"  # ~0.4 MB


def test_resample_span_matches_resampy_inside_a_longer_signal():
    rate = 48000
    x = signal("sweep", rate, 3 * rate)
    want = whole(x, rate)
    got = resample_span(x[40_000:100_000], rate, 32000, offset=40_000, start=27_000, stop=66_000)
    assert np.array_equal(got, want[27_000:66_000])


def test_read_blocks_gives_the_one_pass_samples_of_a_stereo_file(tmp_path):
    """The streamed file reader averages the channels, then resamples: as one pass does."""
    from panns_infer.audio import read_audio

    rate = 44100
    x = np.stack([signal("tone", rate, 4 * rate + 5), signal("noise", rate, 4 * rate + 5)], axis=1)
    soundfile.write(tmp_path / "stereo.wav", x, rate, subtype="FLOAT")
    got = np.concatenate(list(read_blocks(tmp_path / "stereo.wav", 32000, block_seconds=0.77)))
    assert np.array_equal(got, read_audio(tmp_path / "stereo.wav", 32000).samples)


@requires_fixtures
@pytest.mark.parametrize("rate", [44100, pytest.param(48000, marks=pytest.mark.slow)])
def test_a_long_tonal_file_tags_as_in_one_pass(fixture_checkpoint, tmp_path, rate):
    """A 35 s steady tone at 44.1/48 kHz, tagged with default settings (streamed, exact chunks)
    equals the one-pass result (whole_up_to=inf: resampy over the whole file), to the float32
    rounding of the chunks (~5e-7; resampling in a float64 polyphase form instead, ~4e-7 per
    sample, moved this tone's probabilities by 6e-4)."""
    path = fixture_checkpoint("Cnn14")
    default = AudioTagger(path, device="cpu", labels=NAMES)
    one_pass = AudioTagger(path, device="cpu", labels=NAMES, whole_up_to=math.inf)
    t = np.arange(35 * rate + 11) / rate
    x = (0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3000.0 * t)).astype(np.float32)
    file = tmp_path / "tone.wav"
    soundfile.write(file, x, rate, subtype="FLOAT")
    assert default._engine.chunked(len(x) * 32000 // rate)
    got, want = default.tag(str(file)).probabilities, one_pass.tag(str(file)).probabilities
    assert float(np.abs(got - want).max()) <= 1e-5
