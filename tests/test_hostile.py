"""Hostile inputs: every one ends in a typed error or a valid, finite result (issue #6).

The corpus is built here (nothing is downloaded) and every case goes through
``AudioTagger.tag`` with a Cnn6 fixture checkpoint. "result" means a ``Tags`` whose 527
probabilities are finite and in [0, 1]; an error is the ``PannsError`` subclass named, with a
message that names the input and says what to do. No case crashes the process, hangs,
allocates gigabytes or returns NaN: the lying-header files run in a child process with
1.5 GB of address space to spare and a per-file alarm, so a regression fails a test instead of
taking the machine down.

=================================================================  ===================================
input                                                              outcome
=================================================================  ===================================
Files
zero-byte ``.wav``; text file renamed ``.wav``; WAV cut in its     AudioDecodeError
header
WAV header with no frames; AU whose data size exceeds the file     InvalidAudioError (no samples)
WAV cut inside its data                                            result for the samples present
WAV whose RIFF/data sizes claim ~4 GB (18 h) with 1 s of data      result for the 1 s present
MP3 (Xing) / Ogg (granule) claiming 3 h, 2**32 frames, 2**62       result for the 1 s present
FLAC whose STREAMINFO claims 3 h or 2**36 samples                  AudioDecodeError (libsndfile stops)
WAV whose header says 1 Hz                                         InvalidAudioError (1 kHz..1 MHz)
float WAV with a NaN, an Inf (the time of the first is named), or  InvalidAudioError
samples of 1e21; the same in a file longer than the 10 s window
all-zero WAV; 1-sample WAV at 32 and 44.1 kHz; 8 channels;         result
1 kHz and 384 kHz WAVs
a directory; a missing path; an empty string                       AudioDecodeError
Arrays and other objects
NaN or Inf samples; float32 1e20; float64 1e300                    InvalidAudioError
unscaled int16 values as floats (up to 32767)                      result
zeros; 1 sample (at 32 kHz and at 384 kHz); 1 kHz; 384 kHz         result
int8, int16, int32, uint8, float16, float64; tensors (also         result
requires_grad, sparse)
int64, uint16                                                      InvalidAudioError
non-contiguous 1-D; Fortran-order 2-D batch                        result(s)
3-D array; a (32000, 8) array (samples x channels)                 InvalidAudioError
empty array; a (2, 0) batch; a batch with a NaN row (row named)    InvalidAudioError
empty list; a (0, 100) batch                                       [] (empty list)
None; [array, None]; a list of floats                              InvalidAudioError
sample_rate=1, 999 or 2_000_000                                    InvalidAudioError
Checkpoints (beyond tests/test_checkpoint.py)
NaN or Inf in a weight or buffer                                   CheckpointError
meta, sparse, complex, bool tensors; int64 where floats belong     CheckpointError
non-tensor values; non-string keys                                 CheckpointError
a valid zip that is not a torch file                               CheckpointError
a torch zip declaring a 2**31-element storage for 16 bytes         CheckpointError, nothing allocated
a torch zip with a deflated entry (64 MB of zeros in 70 kB)        CheckpointError, nothing inflated
the file rewritten in place after loading (``cp new.pth it.pth``)  the loaded tagger is unaffected
=================================================================  ===================================
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import requires_fixtures
from panns_infer import AudioTagger, Tags
from panns_infer.cli import main
from panns_infer.errors import AudioDecodeError, CheckpointError, InvalidAudioError, PannsError

pytestmark = requires_fixtures

OK, EMPTY = "result", "empty list"


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


# --- the file corpus ------------------------------------------------------------------------------

def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def build_corpus(folder: Path) -> dict[str, Path]:
    """Write every hostile file into ``folder``; return them by name."""
    folder.mkdir(parents=True, exist_ok=True)
    x = _noise(32000)
    files: dict[str, Path] = {}

    def write(name: str, data, rate: int, **kw) -> bytes:
        files[name] = folder / name
        soundfile.write(files[name], data, rate, **kw)
        return files[name].read_bytes()

    def put(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(bytes(data))

    wav = write("good.wav", x, 32000, subtype="PCM_16")  # 44-byte header, then 64000 bytes of data
    put("zero_bytes.wav", b"")
    put("text_renamed.wav", b"this is a text file, not audio\n" * 20)
    put("truncated_header.wav", wav[:20])
    put("truncated_data.wav", wav[:44 + 32000])  # the header still says 1 s
    b = bytearray(wav)
    b[4:8] = b[40:44] = struct.pack("<I", 0xFFFFFFF0)  # RIFF and data sizes: ~4 GB, i.e. 18 hours
    put("hours_header.wav", b)
    b = bytearray(wav)
    b[24:28] = struct.pack("<I", 1)  # sample rate: 1 Hz (1 s of data becomes 8.9 hours)
    put("rate_1hz_header.wav", b)
    write("no_frames.wav", np.zeros(0, dtype=np.float32), 32000, subtype="PCM_16")

    flac = bytearray(write("good.flac", x, 32000))
    for name, total in (("hours_header.flac", 3 * 3600 * 32000), ("max_header.flac", 2 ** 36 - 1)):
        b = bytearray(flac)  # STREAMINFO: the low 36 bits of bytes 18..25 are the total samples
        v = int.from_bytes(b[18:26], "big")
        b[18:26] = ((v >> 36 << 36) | total).to_bytes(8, "big")
        put(name, b)
    mp3 = bytearray(write("good.mp3", x, 32000, format="MP3"))
    xing = mp3.find(b"Xing")
    for name, frames in (("hours_header.mp3", 3 * 3600 * 32000 // 1152), ("max_header.mp3", 2 ** 32 - 1)):
        b = bytearray(mp3)
        b[xing + 8:xing + 12] = struct.pack(">I", frames)
        put(name, b)
    ogg = bytearray(write("good.ogg", x, 32000, format="OGG"))
    last = ogg.rfind(b"OggS")
    for name, granule in (("hours_header.ogg", 3 * 3600 * 32000), ("max_header.ogg", 2 ** 62)):
        b = bytearray(ogg)
        b[last + 6:last + 14] = struct.pack("<q", granule)
        b[last + 22:last + 26] = b"\0\0\0\0"
        b[last + 22:last + 26] = struct.pack("<I", _ogg_crc(bytes(b[last:])))
        put(name, b)
    au = bytearray(write("good.au", x, 32000, format="AU", subtype="PCM_16"))
    au[8:12] = struct.pack(">I", 0x7FFFFFF0)
    put("huge_data_size.au", au)

    bad = x.copy()
    bad[16000] = np.nan
    write("nan.wav", bad, 32000, subtype="FLOAT")
    bad[16000] = np.inf
    write("inf.wav", bad, 32000, subtype="FLOAT")
    write("huge_amplitude.wav", x * np.float32(1e21), 32000, subtype="FLOAT")
    write("zeros.wav", np.zeros(32000, dtype=np.float32), 32000, subtype="PCM_16")
    write("one_sample.wav", x[:1], 32000, subtype="PCM_16")
    write("one_sample_44k.wav", x[:1], 44100, subtype="PCM_16")
    write("eight_channels.wav", np.stack([_noise(32000, seed=c) for c in range(8)], axis=1), 32000)
    write("rate_1khz.wav", _noise(1000), 1000, subtype="PCM_16")
    write("rate_384khz.wav", _noise(38400), 384000, subtype="PCM_24")
    (folder / "a_directory").mkdir(exist_ok=True)
    files["a_directory"] = folder / "a_directory"
    files["missing.wav"] = folder / "missing.wav"
    return files


# Files whose header claims more (or other) audio than they hold: run in a bounded child process.
LYING_HEADERS = {
    "hours_header.wav": OK, "hours_header.mp3": OK, "hours_header.ogg": OK,
    "max_header.mp3": OK, "max_header.ogg": OK,
    "hours_header.flac": AudioDecodeError, "max_header.flac": AudioDecodeError,
    "huge_data_size.au": InvalidAudioError, "rate_1hz_header.wav": InvalidAudioError,
}

FILE_CASES = [  # name, outcome, what the message must also say
    ("zero_bytes.wav", AudioDecodeError, "as audio"),
    ("text_renamed.wav", AudioDecodeError, "as audio"),
    ("truncated_header.wav", AudioDecodeError, "as audio"),
    ("no_frames.wav", InvalidAudioError, "no audio samples"),
    ("truncated_data.wav", OK, None),
    ("nan.wav", InvalidAudioError, r"NaN or infinite samples \(the first at 0.500 s\); fix the file"),
    ("inf.wav", InvalidAudioError, r"NaN or infinite samples \(the first at 0.500 s\)"),
    ("huge_amplitude.wav", InvalidAudioError, r"as large as .*e\+2.*normalise"),
    ("zeros.wav", OK, None),
    ("one_sample.wav", OK, None),
    ("one_sample_44k.wav", OK, None),
    ("eight_channels.wav", OK, None),
    ("rate_1khz.wav", OK, None),
    ("rate_384khz.wav", OK, None),
    ("a_directory", AudioDecodeError, "is a directory.*pass the files inside it"),
    ("missing.wav", AudioDecodeError, "does not exist; check the path"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return build_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def cnn6_path(fixture_checkpoint) -> Path:
    return fixture_checkpoint("Cnn6")


@pytest.fixture(scope="module")
def tagger(cnn6_path, labels_csv) -> AudioTagger:
    return AudioTagger(cnn6_path, device="cpu", labels=labels_csv, window=10.0, whole_up_to=0)


def _assert_valid(tags) -> None:
    assert isinstance(tags, Tags)
    p = tags.probabilities
    assert p.shape == (527,) and p.dtype == np.float32
    assert np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0


def _assert_outcome(tagger, x, expected, match, *, name=None, **kwargs):
    if expected is OK:
        result = tagger.tag(x, **kwargs)
        for tags in result if isinstance(result, list) else [result]:
            _assert_valid(tags)
        return result
    if expected is EMPTY:
        assert tagger.tag(x, **kwargs) == []
        return None
    with pytest.raises(expected) as info:
        tagger.tag(x, **kwargs)
    assert isinstance(info.value, PannsError) and type(info.value) is expected
    message = str(info.value)
    if name is not None:
        assert repr(name) in message  # the message names the input
    if match:
        assert re.search(match, message), message
    return None


@pytest.mark.parametrize("name, expected, match", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_hostile_files(tagger, corpus, name, expected, match):
    path = str(corpus[name])
    _assert_outcome(tagger, path, expected, match, name=path)


@pytest.mark.parametrize("name", ["zero_bytes.wav", "text_renamed.wav", "truncated_header.wav"])
def test_undecodable_files_say_what_to_do(tagger, corpus, name):
    with pytest.raises(AudioDecodeError, match="supported formats .*convert it"):
        tagger.tag(str(corpus[name]))


def test_undecodable_files_say_what_to_do_when_read_directly(corpus):
    from panns_infer.audio import read_audio

    for name in ("zero_bytes.wav", "text_renamed.wav", "truncated_header.wav"):
        with pytest.raises(AudioDecodeError, match="cannot decode .*supported formats .*convert it"):
            read_audio(corpus[name], 32000)


def test_a_long_file_with_huge_samples_is_refused(tagger, tmp_path):
    path = tmp_path / "long_huge.wav"
    soundfile.write(path, _noise(12 * 32000) * np.float32(1e21), 32000, subtype="FLOAT")
    _assert_outcome(tagger, str(path), InvalidAudioError, "as large as", name=str(path))


def test_a_long_file_with_a_nan_is_refused(tagger, tmp_path):
    path = tmp_path / "long_nan.wav"
    x = _noise(12 * 32000)
    x[11 * 32000] = np.nan
    soundfile.write(path, x, 32000, subtype="FLOAT")
    _assert_outcome(tagger, str(path), InvalidAudioError, "NaN or infinite", name=str(path))


def test_empty_string_path(tagger):
    _assert_outcome(tagger, "", AudioDecodeError, "empty string .*pass the path")


def test_what_the_files_yield(tagger, corpus):
    """The valid outcomes are the audio that is there, not padding or garbage."""
    good = tagger.tag(str(corpus["good.wav"])).probabilities
    head = tagger.tag(_noise(32000)[:16000]).probabilities  # PCM_16 rounding aside, the first 0.5 s
    cut = tagger.tag(str(corpus["truncated_data.wav"])).probabilities
    assert np.abs(cut - head).max() < 1e-3 and np.abs(cut - good).max() > 1e-3
    eight = soundfile.read(corpus["eight_channels.wav"], dtype="float32")[0].mean(axis=1)
    np.testing.assert_allclose(tagger.tag(str(corpus["eight_channels.wav"])).probabilities,
                               tagger.tag(eight).probabilities, atol=1e-6)


# --- arrays and other Python objects ------------------------------------------------------------

def _int(dtype, bits):
    return lambda: (_noise(32000) * 2 ** (bits - 1)).astype(dtype)


ARRAY_CASES = [  # id, make() -> (x, kwargs), outcome, message fragment
    ("nan", lambda: (np.where(np.arange(32000) == 5, np.nan, _noise(32000)), {}), InvalidAudioError,
     r"audio array contains 1 NaN or infinite sample\(s\); replace them"),
    ("inf", lambda: (np.full(32000, -np.inf, dtype=np.float32), {}), InvalidAudioError, "32000 NaN or infinite"),
    ("float32_1e20", lambda: (_noise(32000) * np.float32(1e20), {}), InvalidAudioError,
     "audio array has samples as large as .*divide it by its full scale"),
    ("float64_1e300", lambda: (_noise(32000).astype(np.float64) * 1e300, {}), InvalidAudioError, "as large as"),
    ("unscaled_int16_as_float", lambda: (np.round(_noise(32000) * 32767), {}), OK, None),
    ("zeros", lambda: (np.zeros(32000, dtype=np.float32), {}), OK, None),
    ("single_sample", lambda: (np.array([0.5], dtype=np.float32), {}), OK, None),
    ("single_sample_384k", lambda: (np.array([0.5], dtype=np.float32), {"sample_rate": 384000}), OK, None),
    ("rate_1khz", lambda: (_noise(1000), {"sample_rate": 1000}), OK, None),
    ("rate_384khz", lambda: (_noise(96000), {"sample_rate": 384000}), OK, None),
    ("int8", lambda: (_int(np.int8, 8)(), {}), OK, None),
    ("int16", lambda: (_int(np.int16, 16)(), {}), OK, None),
    ("int32", lambda: (_int(np.int32, 32)(), {}), OK, None),
    ("uint8", lambda: ((_noise(32000) * 127 + 128).astype(np.uint8), {}), OK, None),
    ("float16", lambda: (_noise(32000).astype(np.float16), {}), OK, None),
    ("float64", lambda: (_noise(32000).astype(np.float64), {}), OK, None),
    ("tensor_requires_grad", lambda: (torch.from_numpy(_noise(32000)).requires_grad_(), {}), OK, None),
    ("sparse_tensor", lambda: (torch.from_numpy(_noise(32000)).to_sparse(), {}), OK, None),
    ("int64", lambda: (np.zeros(32000, dtype=np.int64), {}), InvalidAudioError, "int64 are not supported; use"),
    ("uint16", lambda: (np.zeros(32000, dtype=np.uint16), {}), InvalidAudioError, "uint16 are not supported"),
    ("non_contiguous", lambda: (_noise(64000)[::2], {}), OK, None),
    ("fortran_order_batch", lambda: (np.asfortranarray(np.stack([_noise(20000, s) for s in range(3)])), {}),
     OK, None),
    ("three_d", lambda: (np.zeros((2, 2, 16000), dtype=np.float32), {}), InvalidAudioError,
     "expected a 1-D clip or a 2-D .*average the channels"),
    ("samples_by_channels", lambda: (np.zeros((32000, 8), dtype=np.float32), {}), InvalidAudioError,
     r"shape \(32000, 8\).*looks like \(samples, channels\).*x.mean\(axis=1\)"),
    ("empty_array", lambda: (np.zeros(0, dtype=np.float32), {}), InvalidAudioError, "has no samples; pass"),
    ("batch_of_empty_rows", lambda: (np.zeros((2, 0), dtype=np.float32), {}), InvalidAudioError,
     "audio array, row 0 has no samples"),
    ("batch_with_a_nan_row", lambda: (np.stack([_noise(8000), np.full(8000, np.nan, np.float32)]), {}),
     InvalidAudioError, "audio array, row 1 contains 8000 NaN"),
    ("empty_list", lambda: ([], {}), EMPTY, None),
    ("empty_batch", lambda: (np.zeros((0, 100), dtype=np.float32), {}), EMPTY, None),
    ("none", lambda: (None, {}), InvalidAudioError, "got NoneType"),
    ("list_with_none", lambda: ([_noise(100), None], {}), InvalidAudioError, "input 1: .*got NoneType"),
    ("list_of_floats", lambda: ([0.0] * 100, {}), InvalidAudioError, r"got float \(to pass one clip, use"),
    ("sample_rate_1", lambda: (_noise(100), {"sample_rate": 1}), InvalidAudioError, "1000..1000000, got 1;"),
    ("sample_rate_999", lambda: (_noise(100), {"sample_rate": 999}), InvalidAudioError, "got 999"),
    ("sample_rate_2mhz", lambda: (_noise(100), {"sample_rate": 2_000_000}), InvalidAudioError, "got 2000000"),
]


@pytest.mark.parametrize("make, expected, match", [c[1:] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES])
def test_hostile_arrays(tagger, make, expected, match):
    x, kwargs = make()
    result = _assert_outcome(tagger, x, expected, match, **kwargs)
    if isinstance(x, np.ndarray) and x.ndim == 2 and expected is OK:
        assert len(result) == len(x)


def test_resampled_single_samples_are_not_dropped():
    """A clip shorter than one output sample still gives one (resampy alone raises ValueError)."""
    from panns_infer.audio import resample

    for n, rate in [(1, 384000), (11, 384000), (1, 44100), (2, 96000)]:
        out = resample(np.full(n, 0.5, dtype=np.float32), rate, 32000)
        assert out.shape == (1,) and out.dtype == np.float32 and np.isfinite(out).all()


# --- lying headers, in a child process with bounded memory and time -------------------------------

_CHILD = textwrap.dedent("""
    import json, re, resource, signal, sys, time
    import numpy as np
    from panns_infer import AudioTagger

    class Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise Alarm()

    signal.signal(signal.SIGALRM, on_alarm)
    checkpoint, labels, seconds, *paths = sys.argv[1:]
    tagger = AudioTagger(checkpoint, device="cpu", labels=labels)
    tagger.tag(np.zeros(16000, dtype=np.float32), sample_rate=16000)  # warm up resampy's compilation
    # From here on, at most 1.5 GB more address space: an allocation of gigabytes fails at once.
    size = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + 1536 * 2 ** 20, resource.RLIM_INFINITY))
    for path in paths:
        start, record = time.monotonic(), {"path": path}
        signal.alarm(int(seconds))
        try:
            p = tagger.tag(path).probabilities
            record.update(outcome="result", finite=bool(np.isfinite(p).all()), low=float(p.min()),
                          high=float(p.max()))
        except Alarm:
            record.update(outcome="timeout")
        except BaseException as exc:
            record.update(outcome=type(exc).__name__, message=str(exc))
        finally:
            signal.alarm(0)
        record["seconds"] = time.monotonic() - start
        # VmHWM, not getrusage: Linux carries a parent's ru_maxrss into a forked child across
        # exec, so a large pytest process would make every child look large.
        record["maxrss_mb"] = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
        print(json.dumps(record), flush=True)
""")
_PER_FILE_SECONDS = 30  # a guard against hangs, not a timing assertion


LINUX_ONLY = pytest.mark.skipif(sys.platform != "linux", reason="bounds the child with /proc, RLIMIT_AS, SIGALRM")


@pytest.fixture(scope="module")
def lying_header_outcomes(corpus, cnn6_path, labels_csv) -> dict:
    paths = [str(corpus[name]) for name in LYING_HEADERS]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(cnn6_path), str(labels_csv), str(_PER_FILE_SECONDS), *paths],
        capture_output=True, text=True, timeout=60 + _PER_FILE_SECONDS * len(paths),
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(r["path"]).name: r for r in map(json.loads, proc.stdout.splitlines())}


@LINUX_ONLY
@pytest.mark.parametrize("name, expected", list(LYING_HEADERS.items()), ids=list(LYING_HEADERS))
def test_lying_headers(lying_header_outcomes, name, expected):
    record = lying_header_outcomes[name]
    assert record["seconds"] < _PER_FILE_SECONDS, record
    assert record["maxrss_mb"] < 1024, record  # the process's peak so far: no gigabytes
    if expected is OK:
        assert record["outcome"] == "result", record
        assert record["finite"] and 0.0 <= record["low"] and record["high"] <= 1.0, record
    else:
        assert record["outcome"] == expected.__name__, record
        assert name in record["message"], record


def test_lying_header_files_give_what_they_hold(corpus, tagger):
    """The lying WAV, MP3 and Ogg files decode to their real 1 s, whatever the header says."""
    from panns_infer.audio import decode_blocks, probe_file, read_audio

    for name in ("hours_header.wav", "hours_header.mp3", "max_header.mp3", "hours_header.ogg", "max_header.ogg"):
        clip = read_audio(corpus[name], 32000)
        assert 31000 <= len(clip.samples) <= 34000, name
        frames, rate = probe_file(corpus[name])
        assert rate == 32000 and frames <= corpus[name].stat().st_size * 16384, name
    good = read_audio(corpus["good.mp3"], 32000).samples
    np.testing.assert_array_equal(read_audio(corpus["max_header.mp3"], 32000).samples[:len(good)], good)
    with pytest.raises(AudioDecodeError, match="header does not match its data"):
        list(decode_blocks(corpus["max_header.flac"]))
    with pytest.raises(InvalidAudioError, match="1000..1000000, got 1;"):
        probe_file(corpus["rate_1hz_header.wav"])


# --- hostile checkpoints (what tests/test_checkpoint.py does not cover) ----------------------------

@pytest.fixture(scope="module")
def cnn6_state():
    from conftest import make_checkpoint_module

    return make_checkpoint_module().build_state_dict("Cnn6")[1]


def _with(state, key, value):
    changed = dict(state)
    changed[key] = value(state[key].clone())
    return {"model": changed}


def _nan(t):
    t.view(-1)[0] = float("nan")
    return t


def _inf(t):
    t.view(-1)[-1] = float("inf")
    return t


CHECKPOINT_CASES = [  # id, make(state) -> object to torch.save, message fragment, needs the fix
    ("nan_weight", lambda s: _with(s, "fc1.weight", _nan), r"NaN or infinite values .*fc1\.weight", True),
    ("inf_running_var", lambda s: _with(s, "bn0.running_var", _inf), r"NaN or infinite .*bn0\.running_var", True),
    ("meta_tensor", lambda s: _with(s, "fc1.weight", lambda t: torch.empty(t.shape, device="meta")),
     r"fc1\.weight \(meta", True),
    ("sparse_tensor", lambda s: _with(s, "fc1.weight", lambda t: t.to_sparse()), r"fc1\.weight \(sparse", True),
    ("complex_weight", lambda s: _with(s, "fc1.weight", lambda t: t.to(torch.complex64)), "complex64", True),
    ("int64_weight", lambda s: _with(s, "fc1.weight", lambda t: t.to(torch.int64)), "dtype", True),
    ("bool_weight", lambda s: _with(s, "fc1.weight", lambda t: t.bool()), "bool", True),
    ("non_tensor_values", lambda s: _with(s, "fc1.weight", lambda t: 3.0), r"not named tensors: \['fc1\.weight'\]",
     False),
    ("non_string_keys", lambda s: {"model": {1: torch.zeros(3), **s}}, r"not named tensors: \[1\]", False),
]


@pytest.mark.parametrize("make, match", [
    pytest.param(make, match, id=name) for name, make, match, _ in CHECKPOINT_CASES])
def test_hostile_checkpoints_are_refused_at_load(cnn6_state, tmp_path, labels_csv, make, match):
    path = tmp_path / "hostile.pth"
    torch.save(make(cnn6_state), path)
    with pytest.raises(CheckpointError, match=match) as info:
        AudioTagger(path, device="cpu", labels=labels_csv).tag(np.zeros(32000, dtype=np.float32))
    assert isinstance(info.value, ValueError) and repr(str(path)) in str(info.value)


def test_a_valid_zip_that_is_not_a_torch_file(tmp_path):
    import zipfile

    from panns_infer.checkpoint import load_model

    path = tmp_path / "notes.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(path)


def test_huge_declared_storage_sizes_allocate_nothing(tmp_path):
    """A torch zip whose pickle declares a 2**31-element storage for 16 bytes of data."""
    import zipfile

    from panns_infer.checkpoint import load_model

    small = tmp_path / "small.pth"
    torch.save({"fc1.weight": torch.zeros(4)}, small)
    path = tmp_path / "huge.pth"
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("data.pkl"):
                big = b"J" + struct.pack("<i", 2 ** 31 - 1)
                patched = data.replace(b"K\x04t", big + b"t").replace(b"QK\x00K\x04\x85", b"QK\x00" + big + b"\x85")
                assert patched != data
                data = patched
            dst.writestr(name, data)
    before = _peak_rss_mib()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)
    assert _peak_rss_mib() - before < 100


def test_a_zip_bomb_is_refused_before_inflating(tmp_path):
    """torch.save stores zip entries uncompressed; torch.load would inflate a deflated one in memory."""
    import zipfile

    from panns_infer.checkpoint import load_model

    small = tmp_path / "small.pth"
    torch.save({"fc1.weight": torch.zeros(4)}, small)
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(small) as src, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, b"\0" * (64 << 20) if name.endswith("data.pkl") else src.read(name))
    assert path.stat().st_size < 200_000
    before = _peak_rss_mib()
    with pytest.raises(CheckpointError, match="compressed"):
        load_model(path)
    assert _peak_rss_mib() - before < 32  # nothing inflated


_CHILD_REWRITE = textwrap.dedent("""
    import shutil, sys
    import numpy as np
    from panns_infer import AudioTagger

    checkpoint, labels, other = sys.argv[1:]
    tagger = AudioTagger(checkpoint, device="cpu", labels=labels)
    x = np.random.default_rng(0).standard_normal(32000).astype(np.float32) * 0.1
    before = tagger.tag(x).probabilities
    with open(other, "rb") as src, open(checkpoint, "r+b") as dst:  # like `cp other checkpoint`
        dst.truncate(0)
        shutil.copyfileobj(src, dst)
    after = tagger.tag(x).probabilities
    print(float(np.abs(after - before).max()))
""")


def test_overwriting_the_checkpoint_file_does_not_touch_a_loaded_tagger(cnn6_path, fixture_checkpoint, labels_csv,
                                                                       tmp_path):
    """`cp new.pth model.pth` while a service runs must neither crash it nor change its weights."""
    checkpoint = tmp_path / "in_use.pth"
    checkpoint.write_bytes(cnn6_path.read_bytes())
    other = fixture_checkpoint("Cnn10")  # a different, larger file
    proc = subprocess.run([sys.executable, "-c", _CHILD_REWRITE, str(checkpoint), str(labels_csv), str(other)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert float(proc.stdout) == 0.0


# --- the command line ----------------------------------------------------------------------------

# Directories are corpora on the command line (their audio files are tagged), so not a bad input there.
CLI_FILES = [name for name, _, _ in FILE_CASES if name != "a_directory"] + [
    "good.wav", "good.flac", "hours_header.wav", "hours_header.mp3"]
CLI_BAD = {name for name, outcome, _ in FILE_CASES if outcome is not OK and name in CLI_FILES}


def _cli_args(corpus, cnn6_path, labels_csv, *extra):
    return [str(corpus[n]) for n in CLI_FILES] + ["-c", str(cnn6_path), "--labels", str(labels_csv), "-k", "3",
                                                    *extra]


def test_cli_reports_every_bad_file_and_finishes_the_rest(corpus, cnn6_path, labels_csv, capsys):
    code = main(_cli_args(corpus, cnn6_path, labels_csv, "--format", "json"))
    out, err = capsys.readouterr()
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in records] == [str(corpus[n]) for n in CLI_FILES]  # in order, one each
    for name, record in zip(CLI_FILES, records):
        if name in CLI_BAD:
            assert set(record) == {"path", "duration", "sample_rate", "model", "size", "mtime", "error"}, record
            assert record["error"]
            assert f"panns-tag: {corpus[name]}: " in err
        else:
            assert "error" not in record and len(record["scores"]) == 3
            assert all(np.isfinite(s) and 0 <= s <= 1 for s in record["scores"]), record
    assert f"{len(CLI_BAD)} of {len(CLI_FILES)} file(s) failed" in err
    assert "Traceback" not in err


def test_cli_debug_shows_the_traceback(corpus, cnn6_path, labels_csv, capsys, caplog):
    code = main([str(corpus["text_renamed.wav"]), "-c", str(cnn6_path), "--labels", str(labels_csv), "--debug"])
    err = capsys.readouterr().err
    assert code == 1
    logged = [r for r in caplog.records if r.exc_info]  # main() logs through "panns_infer" when --debug
    assert "Traceback" in err or (logged and logged[0].exc_info[0] is AudioDecodeError)


def test_cli_process_never_prints_a_traceback(corpus, cnn6_path, labels_csv):
    names = sorted(CLI_BAD) + ["good.wav"]
    proc = subprocess.run([sys.executable, "-m", "panns_infer.cli", *[str(corpus[n]) for n in names],
                           "-c", str(cnn6_path), "--labels", str(labels_csv), "-k", "3"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for name in CLI_BAD:
        assert f"panns-tag: {corpus[name]}: " in proc.stderr
    assert proc.stderr.splitlines()[-1] == f"panns-tag: {len(CLI_BAD)} of {len(names)} file(s) failed"
    assert proc.stdout.splitlines()[0] == f"{corpus['good.wav']}:" and len(proc.stdout.splitlines()) == 4
