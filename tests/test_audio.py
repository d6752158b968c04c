"""Audio input: decoding, integer scaling, downmixing, resampling, and refusing bad input."""

from __future__ import annotations

import numpy as np
import pytest
import resampy
import soundfile
import torch

from conftest import FIXTURES, requires_fixtures
from panns_infer.audio import as_clips, read_audio, to_float32
from panns_infer.errors import AudioDecodeError, InvalidAudioError, PannsError


@pytest.mark.parametrize("dtype, full_scale", [(np.int8, 2 ** 7), (np.int16, 2 ** 15), (np.int32, 2 ** 31)])
def test_integer_pcm_is_scaled(dtype, full_scale):
    x = np.array([0, full_scale // 2, -full_scale, full_scale - 1], dtype=dtype)
    y = to_float32(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0.0, 0.5, -1.0, (full_scale - 1) / full_scale], rtol=1e-6)


def test_uint8_is_centred():
    np.testing.assert_allclose(to_float32(np.array([128, 0, 255], dtype=np.uint8)), [0, -1, 127 / 128])


def test_float64_and_tensors():
    x = np.linspace(-1, 1, 1000)
    (clip,), single = as_clips(x, sample_rate=None, target_rate=32000)
    assert single and clip.samples.dtype == np.float32
    (clip2,), _ = as_clips(torch.from_numpy(x).half(), sample_rate=None, target_rate=32000)
    assert np.abs(clip2.samples - x).max() < 1e-3


def test_batch_and_list_shapes():
    clips, single = as_clips(np.zeros((3, 500), dtype=np.float32), sample_rate=None, target_rate=32000)
    assert not single and len(clips) == 3
    clips, single = as_clips([np.zeros(10), torch.zeros(20)], sample_rate=None, target_rate=32000)
    assert not single and [len(c.samples) for c in clips] == [10, 20]
    assert as_clips([], sample_rate=None, target_rate=32000) == ([], False)


def test_non_contiguous_array_is_accepted():
    x = np.random.default_rng(0).standard_normal((2, 2000)).astype(np.float32)
    (clip,), _ = as_clips(x[0, ::2], sample_rate=None, target_rate=32000)
    np.testing.assert_array_equal(clip.samples, x[0, ::2])


def test_resampling_equals_resampy_kaiser_best():
    x = np.random.default_rng(1).standard_normal(44100).astype(np.float32) * 0.1
    (clip,), _ = as_clips(x, sample_rate=44100, target_rate=32000)
    expected = resampy.resample(x, 44100, 32000, filter="kaiser_best")
    assert clip.samples.shape == (32000,)
    # A reimplementation of kaiser_best that sums in float64 (resampy rounds to float32 as it goes).
    np.testing.assert_allclose(clip.samples, expected, atol=1e-6)
    assert clip.original_rate == 44100


@pytest.mark.parametrize("bad, match", [
    (np.array([0.0, np.nan, 0.1]), "NaN or infinite"),
    (np.array([0.0, np.inf]), "NaN or infinite"),
    (np.zeros(0), "no samples"),
    (np.zeros((2, 2, 2)), "1-D clip or a 2-D"),
    (np.array(["a", "b"]), "numeric"),
    (np.array([1 + 2j]), "numeric"),
    (np.array([True, False]), "numeric"),
    (np.zeros(5, dtype=np.int64), "not supported"),
])
def test_bad_arrays_are_typed_errors(bad, match):
    with pytest.raises(InvalidAudioError, match=match) as info:
        as_clips(bad, sample_rate=None, target_rate=32000)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("rate", [0, -16000, 1.5, float("nan"), "32000", True, 10 ** 9])
def test_bad_sample_rates(rate):
    with pytest.raises(InvalidAudioError, match="sample_rate"):
        as_clips(np.zeros(100), sample_rate=rate, target_rate=32000)


@pytest.mark.parametrize("bad", [None, 3.0, {"a": 1}, [None], [np.zeros((2, 2))]])
def test_bad_input_types(bad):
    with pytest.raises(InvalidAudioError):
        as_clips(bad, sample_rate=None, target_rate=32000)


def test_files_stereo_rates_and_formats(tmp_path):
    rng = np.random.default_rng(2)
    left, right = rng.standard_normal((2, 16000)).astype(np.float32) * 0.1
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_24")
    clip = read_audio(path, 16000)
    np.testing.assert_allclose(clip.samples, (left + right) / 2, atol=1e-6)
    assert clip.source == str(path) and clip.original_rate == 16000
    assert read_audio(path, 32000).samples.shape == (32000,)
    pcm16 = tmp_path / "pcm16.wav"
    soundfile.write(pcm16, (left * 32767).astype(np.int16), 16000, subtype="PCM_16")
    np.testing.assert_allclose(read_audio(pcm16, 16000).samples, (left * 32767).astype(np.int16) / 32768, atol=1e-7)


@requires_fixtures
def test_mp3_decodes():
    clip = read_audio(FIXTURES / "audio" / "r9_speech_bell_7s.mp3", 32000)
    wav = read_audio(FIXTURES / "audio" / "r9_speech_bell_7s.wav", 32000)
    assert abs(len(clip.samples) - len(wav.samples)) < 32000 * 0.1
    assert np.isfinite(clip.samples).all() and np.abs(clip.samples).max() > 0.01


def test_unreadable_files(tmp_path):
    with pytest.raises(AudioDecodeError, match="does not exist"):
        read_audio(tmp_path / "missing.wav", 32000)
    with pytest.raises(AudioDecodeError, match="directory"):
        read_audio(tmp_path, 32000)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(AudioDecodeError, match="cannot decode") as info:
        read_audio(text, 32000)
    assert isinstance(info.value, OSError) and isinstance(info.value, PannsError)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError):
        read_audio(empty, 32000)
