"""Decoding through PyAV, checked against the ffmpeg command-line tool as the oracle.

Every container here is made in the test from the fixture recording with the ffmpeg CLI
(nothing is downloaded). The oracle decodes each file to raw float32 at its own rate and
channel count; our decoded samples (channels averaged) equal it to 1e-4, and our tags of the
file equal the tags of the oracle's WAV to 1e-4.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import struct
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, requires_fixtures
from panns_infer.audio import decode_blocks, probe_file, read_audio
from panns_infer.errors import AudioDecodeError, InvalidArgumentError, PannsError

av = pytest.importorskip("av", reason="PyAV (the av package) is not installed; it decodes MP4, WebM, AAC, WMA")
FFMPEG = shutil.which("ffmpeg")
requires_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg command-line tool (Debian package "
                                     "'ffmpeg') is not installed; it makes the test files and is the oracle")
pytestmark = [requires_fixtures, requires_ffmpeg]

RECORDING = FIXTURES / "audio" / "r9_speech_bell_7s.wav"
VIDEO = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=5"]

#: name -> ffmpeg arguments between the recording input and the output file
CASES = {
    "aac.m4a": ["-c:a", "aac", "-b:a", "96k"],
    "stereo_44k.m4a": ["-af", "pan=stereo|c0=c0|c1=0.5*c0", "-ar", "44100", "-c:a", "aac"],
    "alac.m4a": ["-c:a", "alac"],
    "video.mp4": [*VIDEO, "-map", "1:v", "-map", "0:a", "-shortest", "-c:v", "mpeg4", "-c:a", "aac"],
    "pcm.mov": ["-c:a", "pcm_s16le"],
    "opus.webm": ["-c:a", "libopus"],
    "vorbis.webm": ["-c:a", "libvorbis"],
    "flac.mkv": ["-c:a", "flac"],
    "aac.mkv": ["-c:a", "aac"],
    "adts.aac": ["-c:a", "aac", "-f", "adts"],
    "wmav2.wma": ["-c:a", "wmav2"],
}


def _ffmpeg(*args: str) -> bytes:
    return subprocess.run([FFMPEG, "-v", "error", "-nostdin", "-y", *args], check=True, capture_output=True).stdout


def oracle(path: Path, stream: int = 0) -> tuple[np.ndarray, int]:
    """The ffmpeg CLI's samples of a file's audio stream (channels averaged) and its rate."""
    info = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", f"a:{stream}", "-show_streams",
                                      "-of", "json", str(path)], check=True, capture_output=True).stdout)
    channels, rate = int(info["streams"][0]["channels"]), int(info["streams"][0]["sample_rate"])
    raw = _ffmpeg("-i", str(path), "-map", f"0:a:{stream}", "-f", "f32le", "-")
    return np.frombuffer(raw, dtype="<f4").reshape(-1, channels).mean(axis=1), rate


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    made = {}
    for name, args in CASES.items():
        dest = folder / name
        video_first = args[:1] == ["-f"]
        inputs = ["-i", str(RECORDING)] + (args[:4] if video_first else [])
        _ffmpeg(*inputs, *(args[4:] if video_first else args), str(dest))
        made[name] = dest
    return made


def _decoded(source, **kw) -> np.ndarray:
    return np.concatenate(list(decode_blocks(source, **kw)))


@pytest.mark.parametrize("name", list(CASES))
def test_decoded_samples_equal_ffmpeg(media, name):
    path = media[name]
    expected, rate = oracle(path)
    ours = _decoded(path)
    assert probe_file(path)[1] == rate
    assert len(ours) == len(expected), (len(ours), len(expected))
    assert np.abs(ours - expected).max() <= 1e-4


@pytest.fixture(scope="module")
def tagger(fixture_checkpoint, labels_csv):
    from panns_infer import AudioTagger

    return AudioTagger(str(fixture_checkpoint("Cnn6")), labels=str(labels_csv), device="cpu")


def _oracle_wav(path: Path, dest: Path) -> Path:
    _ffmpeg("-i", str(path), "-map", "0:a:0", "-c:a", "pcm_f32le", str(dest))
    return dest


def test_tags_equal_the_tags_of_the_ffmpeg_decoded_wav(media, tagger, tmp_path):
    for name, path in media.items():
        ours = tagger.tag(str(path), top_k=5)
        reference = tagger.tag(str(_oracle_wav(path, tmp_path / f"{name}.wav")), top_k=5)
        assert np.abs(ours.probabilities - reference.probabilities).max() <= 1e-4, name


def test_the_format_is_chosen_by_content_not_by_extension(media, tmp_path):
    m4a_named_wav = tmp_path / "really_aac.wav"
    shutil.copy(media["aac.m4a"], m4a_named_wav)
    np.testing.assert_array_equal(_decoded(m4a_named_wav), _decoded(media["aac.m4a"]))
    wav_named_m4a = tmp_path / "really_wav.m4a"
    shutil.copy(RECORDING, wav_named_m4a)
    from panns_infer.decoders import open_decoder
    from panns_infer.decoders.sndfile import SndfileDecoder

    with open_decoder(str(wav_named_m4a), "x") as decoder:
        assert isinstance(decoder, SndfileDecoder)  # what libsndfile reads stays with libsndfile


def test_file_objects_decode_and_tag_like_their_paths(media, tagger):
    path = media["opus.webm"]
    buffer = io.BytesIO(path.read_bytes())
    np.testing.assert_array_equal(read_audio(buffer, 32000).samples, read_audio(path, 32000).samples)
    with open(path, "rb") as f:
        assert tagger.tag(f, top_k=3).labels == tagger.tag(str(path), top_k=3).labels
    many = tagger.tag([io.BytesIO(media["aac.m4a"].read_bytes()), str(media["flac.mkv"])], top_k=3)
    assert [t.labels for t in many] == [tagger.tag(str(media[n]), top_k=3).labels for n in ("aac.m4a", "flac.mkv")]


def test_another_audio_stream_can_be_picked(tmp_path):
    two = tmp_path / "two_tracks.mkv"
    _ffmpeg("-i", str(RECORDING), "-filter_complex", "[0:a]asplit[a][b];[b]areverse[r]", "-map", "[a]", "-map", "[r]",
            "-c:a", "flac", str(two))
    first, second = _decoded(two), _decoded(two, stream=1)
    assert np.abs(second - oracle(two, stream=1)[0]).max() <= 1e-4
    np.testing.assert_allclose(second, first[::-1], atol=1e-4)
    with pytest.raises(InvalidArgumentError, match=r"stream=2, but .* has 2 audio stream\(s\): pass 0..1"):
        read_audio(two, 32000, stream=2)


def test_a_video_without_sound_is_a_typed_error(tmp_path):
    silent = tmp_path / "silent.mp4"
    _ffmpeg(*VIDEO, "-t", "1", "-c:v", "mpeg4", str(silent))
    with pytest.raises(AudioDecodeError, match=r"holds no audio stream \(its streams: video\)"):
        read_audio(silent, 32000)


@contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging (the test runs in the main thread)."""
    def alarm(*_):
        raise TimeoutError(f"decoding took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _mp4_box(data: bytes, name: bytes) -> int:
    at = data.find(name)
    assert at > 4, name
    return at - 4  # the box starts with its 32-bit size


@pytest.fixture(scope="module")
def faststart(media, tmp_path_factory) -> Path:
    """The AAC recording in an MP4 whose moov (the index) comes before the data."""
    dest = tmp_path_factory.mktemp("faststart") / "faststart.m4a"
    _ffmpeg("-i", str(RECORDING), "-c:a", "aac", "-movflags", "+faststart", str(dest))
    return dest


def test_hostile_containers_end_in_typed_errors(media, faststart, tmp_path):
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    no_moov = tmp_path / "no_moov.m4a"  # moov at the end, cut off
    data = media["aac.m4a"].read_bytes()
    no_moov.write_bytes(data[:_mp4_box(data, b"moov")])
    cut_moov = tmp_path / "cut_moov.m4a"  # the index itself broken off half way
    data = faststart.read_bytes()
    moov = _mp4_box(data, b"moov")
    cut_moov.write_bytes(data[:moov + int.from_bytes(data[moov:moov + 4], "big") // 2])
    for path, match in ((empty, "empty"), (no_moov, "cannot decode"), (cut_moov, "cannot decode")):
        with _deadline(20), pytest.raises(AudioDecodeError, match=match) as info:
            read_audio(path, 32000)
        assert repr(str(path)) in str(info.value)


def test_a_header_claiming_days_gives_the_audio_present(media, tagger, tmp_path):
    data = bytearray(media["opus.webm"].read_bytes())
    at = data.find(b"\x44\x89\x88")  # the Segment's Duration: an 8-byte float, in milliseconds
    assert at > 0
    data[at + 3:at + 11] = struct.pack(">d", 5 * 86400 * 1000.0)
    lying = tmp_path / "days.webm"
    lying.write_bytes(bytes(data))
    frames, rate = probe_file(lying)
    assert rate == 48000 and frames <= len(data) * 16384  # capped by what the file's size can hold
    with _deadline(60):
        samples = read_audio(lying, 32000).samples
        tags = tagger.tag(str(lying))
    np.testing.assert_array_equal(samples, read_audio(media["opus.webm"], 32000).samples)
    # planned as days of windows, run as the windows the 7 s present fill: a valid result
    assert np.isfinite(tags.probabilities).all() and 0 <= tags.probabilities.min() <= tags.probabilities.max() <= 1


def test_a_container_without_a_duration_is_measured_before_decoding(tmp_path):
    live = tmp_path / "live.webm"  # written to a pipe, as a live recording is: no duration in it
    live.write_bytes(_ffmpeg("-i", str(RECORDING), "-c:a", "libopus", "-f", "webm", "pipe:1"))
    assert av.open(str(live)).duration is None
    frames, rate = probe_file(live)
    assert rate == 48000 and 7 * 48000 <= frames <= 7 * 48000 + 2000  # packet end times
    assert len(_decoded(live)) == len(oracle(live)[0])


def _damaged(path: Path, dest: Path) -> Path:
    """``path`` with its second half overwritten by random bytes."""
    data = bytearray(path.read_bytes())
    half = len(data) // 2
    data[half:] = np.random.default_rng(0).integers(0, 256, len(data) - half, dtype=np.uint8).tobytes()
    dest.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize("name", ["adts.aac", "faststart.m4a", "opus.webm"])
def test_a_stream_that_breaks_off_half_way_keeps_what_came_before_or_fails_typed(media, faststart, name, tmp_path):
    source = faststart if name == "faststart.m4a" else media[name]
    broken = _damaged(source, tmp_path / name)
    clean = _decoded(source)
    with _deadline(60):
        try:
            ours = _decoded(broken)
        except PannsError as exc:
            assert isinstance(exc, AudioDecodeError) and repr(str(broken)) in str(exc)
            assert "after" in str(exc)  # it says where the data stops decoding
            return
    assert np.isfinite(ours).all()
    head = len(clean) // 4  # well before the damage
    assert np.abs(ours[:head] - clean[:head]).max() <= 1e-4


def test_a_damaged_index_is_a_typed_error(media, tmp_path):
    broken = _damaged(media["aac.m4a"], tmp_path / "index_at_end.m4a")  # its moov is in the second half
    with _deadline(20), pytest.raises(AudioDecodeError, match="cannot decode"):
        read_audio(broken, 32000)


def test_truncated_files_give_the_audio_before_the_cut(media, tmp_path):
    data = media["opus.webm"].read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[:len(data) // 2])
    clean, ours = _decoded(media["opus.webm"]), _decoded(cut)
    assert len(clean) // 4 < len(ours) < len(clean)
    assert np.abs(ours[:len(ours) - 2000] - clean[:len(ours) - 2000]).max() <= 1e-4


def test_threads_decode_independently(media):
    names = ["aac.m4a", "opus.webm", "wmav2.wma", "adts.aac"] * 2
    alone = {n: _decoded(media[n]) for n in set(names)}
    results: dict = {}

    def work(i: int, name: str) -> None:
        results[i] = _decoded(media[name], block_samples=4096)

    threads = [threading.Thread(target=work, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, name in enumerate(names):
        np.testing.assert_array_equal(results[i], alone[name])


def test_encoded_bytes_in_corpus_runs_give_the_results_of_their_files(media, tagger):
    from panns_infer.corpus import tag_corpus

    names = ["aac.m4a", "opus.webm", "adts.aac", "video.mp4"]
    blobs = [media[n].read_bytes() for n in names]
    results = [r for batch in tag_corpus(tagger, blobs, top_k=3, workers=2) for r in batch]
    for r, name in zip(results, names):
        assert r.error is None, r.error
        np.testing.assert_allclose(r.tags.probabilities, tagger.tag(str(media[name])).probabilities, atol=1e-6)


def test_directories_find_the_new_containers():
    from panns_infer.corpus.discovery import is_audio_name

    assert all(is_audio_name(f"x.{ext}") for ext in ("m4a", "mp4", "mov", "mkv", "webm", "aac", "wma", "opus"))


@pytest.mark.slow
def test_a_mixed_folder_tags_with_one_record_per_file(media, tmp_path, fixture_checkpoint, labels_csv, capsys):
    """WAV, FLAC, OGG, MP3, M4A, MP4 with video, WebM, MKV, AAC and a broken M4A through
    ``panns-tag DIR --output tags.jsonl``: the broken one is an error record, the exit code
    1, and every good file's tags equal those of its ffmpeg-decoded WAV."""
    from panns_infer.cli import main

    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(RECORDING, folder / "a.wav")
    for ext, args in (("flac", []), ("ogg", ["-c:a", "libvorbis"]), ("mp3", [])):
        _ffmpeg("-i", str(RECORDING), *args, str(folder / f"b.{ext}"))
    for name in ("aac.m4a", "video.mp4", "opus.webm", "flac.mkv", "adts.aac"):
        shutil.copy(media[name], folder / name)
    data = media["aac.m4a"].read_bytes()
    (folder / "broken.m4a").write_bytes(data[:_mp4_box(data, b"moov")])
    out = tmp_path / "tags.jsonl"
    code = main([str(folder), "--output", str(out), "--full", "-c", str(fixture_checkpoint("Cnn6")),
                 "--labels", str(labels_csv)])
    assert code == 1
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines()[1:])}  # after the header
    assert sorted(records) == sorted(p.name for p in folder.iterdir())
    assert "error" in records.pop("broken.m4a")
    from panns_infer import AudioTagger

    tagger = AudioTagger(str(fixture_checkpoint("Cnn6")), labels=str(labels_csv), device="cpu")
    for name, record in records.items():
        assert "error" not in record, record
        probs = record["probabilities"]
        probs = np.array(list(probs.values()) if isinstance(probs, dict) else probs)
        reference = tagger.tag(str(_oracle_wav(folder / name, tmp_path / f"{name}.wav"))).probabilities
        assert np.abs(probs - reference).max() <= 1e-4, name


def test_the_ray_predictor_reads_containers_from_its_bytes_column(media, fixture_checkpoint, labels_csv):
    pytest.importorskip("pyarrow", reason="pyarrow (installed with ray[data]) builds the predictor's columns")
    from panns_infer.integrations.ray import PannsPredictor

    predictor = PannsPredictor(str(fixture_checkpoint("Cnn6")), labels=str(labels_csv), device="cpu", top_k=3)
    names = ["aac.m4a", "opus.webm", "wmav2.wma"]
    out = predictor({"bytes": np.array([media[n].read_bytes() for n in names], dtype=object)})
    assert out["error"].to_pylist() == [None] * 3
    assert out["labels"].to_pylist() == [predictor.tagger.tag(str(media[n]), top_k=3).labels for n in names]
