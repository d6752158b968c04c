"""Audio input: decoding, integer scaling, downmixing, resampling, and refusing bad input."""

from __future__ import annotations

import io
import os
import tracemalloc

import numpy as np
import pytest
import resampy
import soundfile
import torch

from conftest import FIXTURES, requires_fixtures
from panns_infer.audio import as_clips, decode_blocks, probe_file, read_audio, to_float32
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


# --- exact values, boundaries and messages of array input --------------------------------


def _message(call, error=InvalidAudioError):
    with pytest.raises(error) as info:
        call()
    return str(info.value)


def test_to_float32_keeps_float32_and_gives_float32_for_every_accepted_dtype():
    x = np.array([0.25, -0.5], dtype=np.float32)
    assert to_float32(x) is x  # no copy of audio that is already float32
    for dtype in (np.float16, np.float64, np.int8, np.int16, np.int32, np.uint8):
        assert to_float32(np.zeros(3, dtype=dtype)).dtype == np.float32, dtype
    np.testing.assert_array_equal(to_float32(np.array([0.25, -0.5])), [0.25, -0.5])


def test_integer_pcm_is_converted_without_a_float64_copy():
    x = np.random.default_rng(3).integers(-2 ** 31, 2 ** 31, 1_000_000, dtype=np.int64).astype(np.int32)
    tracemalloc.start()
    try:
        y = to_float32(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.dtype == np.float32
    assert peak < 2.5 * y.nbytes  # two float32 arrays at most; a float64 step would take three


def test_an_unsupported_dtype_names_the_ones_that_are():
    assert _message(lambda: to_float32(np.zeros(2, dtype=np.int64))) == (
        "audio samples of dtype int64 are not supported; use float32/float64, or int8, int16, int32 or uint8 PCM")


@pytest.mark.parametrize("rate", [1000, 1_000_000, 1000.0, np.int64(16000), np.float32(8000)])
def test_sample_rates_at_the_bounds_and_of_numpy_types_are_accepted(rate):
    (clip,), _ = as_clips(np.zeros(2000, dtype=np.float32), sample_rate=rate, target_rate=int(rate))
    assert clip.original_rate == int(rate) and type(clip.original_rate) is int
    assert clip.samples.shape == (2000,)


@pytest.mark.parametrize("rate, message", [
    (999, "sample_rate must be a whole number of Hz in 1000..1000000, got 999; "
          "resample the audio into that range first"),
    (1_000_001, "sample_rate must be a whole number of Hz in 1000..1000000, got 1000001; "
                "resample the audio into that range first"),
    (1000.5, "sample_rate must be a whole number of Hz in 1000..1000000, got 1000.5; "
             "resample the audio into that range first"),
    ("32000", "sample_rate must be a positive integer, got '32000'"),
    (True, "sample_rate must be a positive integer, got True"),
])
def test_bad_sample_rates_say_what_is_accepted(rate, message):
    assert _message(lambda: as_clips(np.zeros(100), sample_rate=rate, target_rate=32000)) == message


def test_non_finite_samples_are_counted():
    bad = np.array([np.nan, 0.0, np.inf, 0.5, -np.inf])
    assert _message(lambda: as_clips(bad, sample_rate=None, target_rate=32000)) == (
        "audio array contains 3 NaN or infinite sample(s); replace them (e.g. numpy.nan_to_num) or fix the "
        "source of the audio")


def test_float_samples_up_to_two_to_the_31_are_accepted():
    edge = np.array([-2.0 ** 31, 2.0 ** 31, 0.0])  # unscaled int32 PCM in a float array
    (clip,), _ = as_clips(edge, sample_rate=None, target_rate=32000)
    np.testing.assert_array_equal(clip.samples, edge)


@pytest.mark.parametrize("bad, shown", [(np.array([0.0, 3e9]), "3e+09"), (np.array([0.5, -3e9]), "3e+09"),
                                        (np.array([2.0 ** 31 + 1]), "2.15e+09")])
def test_float_samples_beyond_two_to_the_31_are_refused_either_sign(bad, shown):
    assert _message(lambda: as_clips(bad, sample_rate=None, target_rate=32000)) == (
        f"audio array has samples as large as {shown}; float audio is expected in [-1, 1]: divide it by its "
        "full scale (pass integer PCM with its integer dtype)")


def test_the_rows_of_a_batch_are_checked_and_named():
    x = np.array([[0.0, 0.1], [np.nan, 0.0]])
    assert _message(lambda: as_clips(x, sample_rate=None, target_rate=32000)) == (
        "audio array, row 1 contains 1 NaN or infinite sample(s); replace them (e.g. numpy.nan_to_num) or fix "
        "the source of the audio")
    assert _message(lambda: as_clips(np.zeros((2, 0)), sample_rate=None, target_rate=32000)) == (
        "audio array, row 0 has no samples; pass a clip with at least one sample")


def test_a_batch_gives_each_row_as_a_clip():
    x = np.arange(12, dtype=np.int16).reshape(3, 4) * 1024
    clips, single = as_clips(x, sample_rate=None, target_rate=32000)
    assert not single
    for clip, row in zip(clips, x):
        assert clip.samples.dtype == np.float32 and clip.source is None and clip.original_rate == 32000
        np.testing.assert_array_equal(clip.samples, row / 32768)


@pytest.mark.parametrize("shape", [(64, 64), (65, 65), (64, 2)])
def test_batches_up_to_64_rows_or_of_more_than_64_samples_are_accepted(shape):
    clips, _ = as_clips(np.zeros(shape, dtype=np.float32), sample_rate=None, target_rate=32000)
    assert [c.samples.shape for c in clips] == [(shape[1],)] * shape[0]


def test_a_samples_by_channels_array_is_refused_with_the_fix():
    assert _message(lambda: as_clips(np.zeros((65, 64)), sample_rate=None, target_rate=32000)) == (
        "audio array has shape (65, 64): 65 clips of 64 sample(s) each, which looks like (samples, channels) "
        "audio. A 2-D array is (batch, samples): pass x.mean(axis=1) for one mono clip, or x.T to tag each "
        "channel as a clip")


@pytest.mark.parametrize("bad, message", [
    (np.zeros(0), "audio array has no samples; pass a clip with at least one sample"),
    (np.zeros((2, 2, 2)), "audio array: expected a 1-D clip or a 2-D (batch, samples) array, got shape (2, 2, 2); "
                          "average the channels of multichannel audio into one clip first"),
    (np.array(["a"]), "audio array: expected numeric audio samples, got an array of dtype <U1"),
    (np.array([1, 2], dtype="timedelta64[s]"),
     "audio array: expected numeric audio samples, got an array of dtype timedelta64[s]"),
    (np.array([True]), "audio array: expected numeric audio samples, got an array of dtype bool"),
    ({"a": 1}, "expected a path, a numpy array, a torch tensor, or a list of them; got dict"),
    (3, "expected a path, a numpy array, a torch tensor, or a list of them; got int"),
    ([np.zeros(2), np.zeros(0)], "input 1 has no samples; pass a clip with at least one sample"),
    ([np.zeros(2), np.array([np.nan])],
     "input 1 contains 1 NaN or infinite sample(s); replace them (e.g. numpy.nan_to_num) or fix the source of "
     "the audio"),
    ([np.array(["a"])], "input 0: expected numeric audio samples, got an array of dtype <U1"),
    ([np.zeros(2), np.zeros((2, 3))],
     "input 1: list items must be 1-D clips or paths, got shape (2, 3); pass a 2-D batch on its own"),
    ([np.zeros(2), 0.5], "input 1: expected a path, numpy array or tensor, got float (to pass one clip, use "
                         "numpy.asarray(x))"),
    ([3], "input 0: expected a path, numpy array or tensor, got int (to pass one clip, use numpy.asarray(x))"),
    ([None], "input 0: expected a path, numpy array or tensor, got NoneType"),
    ([b"a.wav"], "input 0: expected a path, numpy array or tensor, got bytes"),
])
def test_bad_input_messages(bad, message):
    assert _message(lambda: as_clips(bad, sample_rate=None, target_rate=32000)) == message


# --- tensors ----------------------------------------------------------------------------


def test_integer_tensors_are_scaled_like_integer_arrays():
    (clip,), _ = as_clips(torch.tensor([16384, -32768], dtype=torch.int16), sample_rate=None, target_rate=32000)
    np.testing.assert_array_equal(clip.samples, [0.5, -1.0])


def test_bfloat16_and_sparse_tensors_are_read():
    (clip,), _ = as_clips(torch.tensor([0.5, -0.25], dtype=torch.bfloat16), sample_rate=None, target_rate=32000)
    np.testing.assert_array_equal(clip.samples, [0.5, -0.25])
    sparse = torch.tensor([0.0, 0.5, 0.0, -0.25]).to_sparse()
    (clip,), _ = as_clips(sparse, sample_rate=None, target_rate=32000)
    np.testing.assert_array_equal(clip.samples, [0.0, 0.5, 0.0, -0.25])


def test_a_tensor_without_data_is_a_typed_error():
    meta = torch.zeros(3, device="meta")
    assert _message(lambda: as_clips(meta, sample_rate=None, target_rate=32000)) == (
        "audio array: cannot read the tensor's samples (Cannot copy out of meta tensor; no data!); pass a dense "
        "CPU or CUDA tensor of floats")
    assert _message(lambda: as_clips([np.zeros(2), meta], sample_rate=None, target_rate=32000)).startswith(
        "input 1: cannot read the tensor's samples (")


# --- files and file objects -------------------------------------------------------------


def _wav_bytes(data, rate, subtype="PCM_16", format="WAV"):
    buffer = io.BytesIO()
    soundfile.write(buffer, data, rate, subtype=subtype, format=format)
    return buffer.getvalue()


def _write(path, data, rate, subtype="PCM_16", format="WAV"):
    path.write_bytes(_wav_bytes(data, rate, subtype, format))
    return path


class _Unseekable(io.RawIOBase):
    """A stream that can only be read forward, like a pipe."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        return self._data.readinto(b)


class _ReadOnly:
    """The least a file object can be: something with a ``read`` method."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def read(self, n=-1):
        return self._data.read(n)


_TONE = (np.sin(np.arange(1600) / 5) * 16000).astype(np.int16)


@pytest.mark.parametrize("make", [
    lambda path: path, lambda path: str(path), lambda path: os.fsencode(path),
    lambda path: io.BytesIO(path.read_bytes()), lambda path: _Unseekable(path.read_bytes()),
    lambda path: _ReadOnly(path.read_bytes()),
])
def test_paths_and_file_objects_decode_alike(make, tmp_path):
    path = _write(tmp_path / "tone.wav", _TONE, 16000)
    clip = read_audio(make(path), 16000)
    np.testing.assert_array_equal(clip.samples, _TONE / 32768)
    assert clip.samples.dtype == np.float32 and clip.original_rate == 16000
    assert read_audio(make(path), 32000).samples.shape == (3200,)


def test_clips_name_their_source(tmp_path):
    path = _write(tmp_path / "tone.wav", _TONE, 16000)
    assert read_audio(path, 16000).source == str(path)
    assert read_audio(os.fsencode(path), 16000).source == str(path)
    with open(path, "rb") as f:
        assert read_audio(f, 16000).source == str(path)
    assert read_audio(io.BytesIO(path.read_bytes()), 16000).source == "<BytesIO>"
    with open(os.open(path, os.O_RDONLY), "rb") as f:  # opened from a descriptor: its name is a number
        assert read_audio(f, 16000).source == "<BufferedReader>"


def test_as_clips_reads_paths_and_file_objects(tmp_path):
    path = _write(tmp_path / "tone.wav", _TONE, 16000)
    for source in (path, str(path), io.BytesIO(path.read_bytes())):
        (clip,), single = as_clips(source, sample_rate=8000, target_rate=32000)
        assert single and clip.original_rate == 16000  # files carry their own rate
        np.testing.assert_array_equal(clip.samples, read_audio(path, 32000).samples)
    clips, single = as_clips([str(path), np.zeros(5, dtype=np.int16), io.BytesIO(path.read_bytes()), path],
                             sample_rate=8000, target_rate=16000)
    assert not single and [c.original_rate for c in clips] == [16000, 8000, 16000, 16000]
    assert [c.source for c in clips] == [str(path), None, "<BytesIO>", str(path)]
    for i in (0, 2, 3):
        np.testing.assert_array_equal(clips[i].samples, _TONE / 32768)
    assert clips[1].samples.shape == (10,)


def test_undecodable_sources_are_named(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    assert _message(lambda: read_audio(text, 32000), AudioDecodeError).startswith(
        f"cannot decode {str(text)!r} as audio (libsndfile: Format not recognised")
    assert _message(lambda: read_audio(io.BytesIO(b"not audio"), 32000), AudioDecodeError).startswith(
        "cannot decode '<BytesIO>' as audio (libsndfile: Format not recognised")
    with open(text, "rb") as f:
        assert _message(lambda: read_audio(f, 32000), AudioDecodeError).startswith(
            f"cannot decode {str(text)!r} as audio (")
    with open(os.open(text, os.O_RDONLY), "rb") as f:
        assert _message(lambda: read_audio(f, 32000), AudioDecodeError).startswith(
            "cannot decode '<BufferedReader>' as audio (")


def test_missing_and_unusable_paths_say_what_to_do(tmp_path):
    missing = tmp_path / "missing.wav"
    assert _message(lambda: read_audio(missing, 32000), AudioDecodeError) == (
        f"audio file {str(missing)!r} does not exist; check the path")
    assert _message(lambda: read_audio(os.fsencode(missing), 32000), AudioDecodeError) == (
        f"audio file {str(missing)!r} does not exist; check the path")
    assert _message(lambda: read_audio(tmp_path, 32000), AudioDecodeError) == (
        f"{str(tmp_path)!r} is a directory, not an audio file; pass the files inside it")
    assert _message(lambda: read_audio("", 32000), AudioDecodeError) == (
        "an empty string was given as an audio file path; pass the path of a file")
    long = str(tmp_path / ("a" * 5000))
    message = _message(lambda: read_audio(long, 32000), AudioDecodeError)
    assert message.startswith(f"cannot access audio file {long!r} (") and "File name too long" in message


@pytest.mark.parametrize("call", [
    lambda source: read_audio(source, 16000, stream=1), lambda source: probe_file(source, stream=1),
    lambda source: next(decode_blocks(source, stream=1)),
])
@pytest.mark.parametrize("as_object", [False, True])
def test_another_stream_than_the_first_is_refused_for_a_one_stream_file(call, as_object, tmp_path):
    pytest.importorskip("av", reason="PyAV (the av package) reads the streams of containers")
    from panns_infer.errors import InvalidArgumentError

    path = _write(tmp_path / "tone.wav", _TONE, 16000)
    source, name = (io.BytesIO(path.read_bytes()), "<BytesIO>") if as_object else (path, str(path))
    assert _message(lambda: call(source), InvalidArgumentError) == (
        f"stream=1, but {name!r} has 1 audio stream(s): pass 0..0")
    np.testing.assert_array_equal(read_audio(path, 16000, stream=0).samples, _TONE / 32768)


def test_a_file_with_no_frames_is_a_typed_error(tmp_path):
    empty = _write(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.int16), 16000)
    assert probe_file(empty) == (0, 16000)
    assert _message(lambda: read_audio(empty, 16000)) == (
        f"audio file {str(empty)!r} holds no audio samples (0 frames); check that it was written completely")


@pytest.mark.parametrize("rate", [999, 1_000_001])
def test_a_file_rate_out_of_range_is_refused_naming_the_file(rate, tmp_path):
    path = _write(tmp_path / "odd.wav", np.zeros(10, dtype=np.int16), rate)
    expected = (f"the sample rate of audio file {str(path)!r} must be a whole number of Hz in 1000..1000000, "
                f"got {rate}; resample the audio into that range first")
    assert _message(lambda: read_audio(path, 32000)) == expected
    assert _message(lambda: probe_file(path)) == expected
    assert _message(lambda: next(decode_blocks(path))) == expected


def test_a_file_longer_than_one_block_is_read_whole(tmp_path):
    # 1.2 million samples: two of the blocks read_audio decodes at a time
    left, right = np.random.default_rng(4).integers(-32768, 32768, (2, 600_000)).astype(np.int16)
    path = _write(tmp_path / "long.wav", np.stack([left, right], axis=1), 16000)
    samples = read_audio(path, 16000).samples
    np.testing.assert_array_equal(samples, (left / np.float32(32768) + right / np.float32(32768)) / 2)


def _float_file(tmp_path, data, rate=1000):
    return _write(tmp_path / "float.wav", np.asarray(data, dtype=np.float32), rate, subtype="FLOAT")


def test_non_finite_samples_in_a_file_are_located(tmp_path):
    stereo = np.zeros((1000, 2), dtype=np.float32)
    stereo[250, 1] = np.nan
    stereo[600, 0] = np.inf
    path = _float_file(tmp_path, stereo)
    expected = (f"audio file {str(path)!r} contains NaN or infinite samples (the first at 0.250 s); fix the file, "
                "e.g. re-export it as integer PCM")
    assert _message(lambda: read_audio(path, 32000)) == expected
    # blocks of 100 frames: the NaN is 50 frames into the third
    assert _message(lambda: list(decode_blocks(path, block_samples=200))) == expected
    stereo[250, 1] = 0
    path = _float_file(tmp_path, stereo)
    assert _message(lambda: list(decode_blocks(path, block_samples=200))).endswith(
        "(the first at 0.600 s); fix the file, e.g. re-export it as integer PCM")


def test_float_files_up_to_two_to_the_31_are_accepted(tmp_path):
    path = _float_file(tmp_path, [0.0, 2.0 ** 31, -2.0 ** 31])
    np.testing.assert_array_equal(read_audio(path, 1000).samples, [0.0, 2.0 ** 31, -2.0 ** 31])


@pytest.mark.parametrize("value", [3e9, -3e9])
def test_float_files_beyond_two_to_the_31_are_refused(value, tmp_path):
    path = _float_file(tmp_path, [0.0, value, 0.5])
    expected = (f"audio file {str(path)!r} has samples as large as 3e+09; float audio is expected in [-1, 1]: "
                "normalise the file")
    assert _message(lambda: read_audio(path, 32000)) == expected
    assert _message(lambda: list(decode_blocks(path))) == expected


def test_decode_blocks_gives_mono_blocks_of_the_size_asked(tmp_path):
    stereo = np.random.default_rng(5).integers(-32768, 32768, (1000, 2)).astype(np.int16)
    path = _write(tmp_path / "stereo.wav", stereo, 16000)
    blocks = list(decode_blocks(path, block_samples=400))
    assert [len(b) for b in blocks] == [200] * 5 and all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), stereo.astype(np.float32).mean(axis=1) / 32768)
    assert [len(b) for b in decode_blocks(io.BytesIO(path.read_bytes()))] == [1000]
    mono = _write(tmp_path / "mono.wav", stereo[:, 0], 16000)
    (block,) = decode_blocks(mono)
    assert block.shape == (1000,)
    np.testing.assert_array_equal(block, stereo[:, 0] / np.float32(32768))


def test_a_decoder_running_out_of_memory_says_how_far_it_got(monkeypatch):
    from panns_infer import audio
    from panns_infer.decoders import Decoder

    class Huge(Decoder):
        name, rate, channels, frames = "<BytesIO>", 16000, 1, 10 ** 9

        def blocks(self, block_samples):
            for _ in range(3):
                yield np.zeros((1000, 1), dtype=np.float32)
            raise MemoryError

    monkeypatch.setattr(audio, "open_decoder", lambda source, name, stream=None: Huge())
    assert _message(lambda: read_audio(io.BytesIO(b""), 16000), AudioDecodeError) == (
        "'<BytesIO>' does not fit in memory (more than 3000 samples decoded); split it into shorter files")


# --- probe_file -------------------------------------------------------------------------


def test_probe_file_reads_the_header_and_leaves_file_objects_where_they_were(tmp_path):
    path = _write(tmp_path / "tone.wav", _TONE, 16000)
    assert probe_file(path) == (1600, 16000)
    assert probe_file(os.fsencode(path)) == (1600, 16000)
    data = path.read_bytes()
    buffer = io.BytesIO(b"junk" + data)
    buffer.seek(4)
    assert probe_file(buffer) == (1600, 16000)
    assert buffer.tell() == 4
    np.testing.assert_array_equal(read_audio(buffer, 16000).samples, _TONE / 32768)
    assert probe_file(_Unseekable(data)) == (1600, 16000)
    assert probe_file(_ReadOnly(data)) == (1600, 16000)


@pytest.mark.parametrize("channels", [1, 3])
def test_probe_file_caps_a_lying_frame_count_at_what_the_size_can_hold(channels, tmp_path):
    flac = bytearray(_wav_bytes(np.zeros((10, channels), dtype=np.int16), 16000, format="FLAC"))
    value = int.from_bytes(flac[18:26], "big")  # STREAMINFO: the low 36 bits are the total frames
    flac[18:26] = ((value >> 36 << 36) | (2 ** 36 - 1)).to_bytes(8, "big")
    path = tmp_path / "lying.flac"
    path.write_bytes(bytes(flac))
    frames, rate = probe_file(path)
    assert rate == 16000 and type(frames) is int
    assert frames == len(flac) * 16384 // channels < 2 ** 36 - 1
    assert probe_file(_Unseekable(bytes(flac))) == (2 ** 36 - 1, 16000)  # no size to compare with
