"""AudioTagger: inputs, results, batching, short clips, the Wavegram length trap, options."""

from __future__ import annotations

import numpy as np
import pytest
import resampy
import torch

from conftest import requires_fixtures
from panns_infer import AudioTagger, Framewise, Tags
from panns_infer.errors import (
    CheckpointNotFoundError,
    DeviceError,
    InvalidArgumentError,
    LabelsError,
    OfflineError,
    UnknownModelError,
    UnsupportedOperationError,
)
from panns_infer.models.wavegram import wavegram_logmel_valid_length

pytestmark = requires_fixtures
NAMES = [f"class {i}" for i in range(527)]


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def cnn14(fixture_checkpoint, labels_csv):
    return AudioTagger(fixture_checkpoint("Cnn14"), device="cpu", labels=labels_csv)


@pytest.fixture(scope="module")
def sed(fixture_checkpoint):
    return AudioTagger(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth"),
                       device="cpu", labels=NAMES)


@pytest.fixture(scope="module")
def wavegram_logmel(fixture_checkpoint):
    return AudioTagger(fixture_checkpoint("Wavegram_Logmel_Cnn14"), device="cpu", labels=NAMES)


def test_results_shapes_and_types(cnn14):
    x = _noise(32000)
    tags = cnn14.tag(x, top_k=5)
    assert isinstance(tags, Tags) and len(tags.labels) == 5 and tags.probabilities.shape == (527,)
    assert tags.labels[0] == cnn14.labels[int(tags.probabilities.argmax())]
    assert np.all(np.diff(tags.scores) <= 0)
    assert tags.to_dict()["labels"] == tags.labels and "probabilities" in tags.to_dict(full=True)
    assert cnn14.embed(x).shape == (2048,)
    assert cnn14.embed(np.stack([x, x])).shape == (2, 2048)
    many = cnn14.tag(torch.from_numpy(np.stack([x, x])))
    assert isinstance(many, list) and len(many) == 2
    assert cnn14.tag([x], top_k=0)[0].labels == []


def test_batching_never_changes_a_result(cnn14):
    clips = [_noise(n, seed=n) for n in (32000, 75_040, 32000, 5_000, 100_001, 9_920, 75_040)]
    alone = [cnn14.embed(c) for c in clips]
    together = cnn14.embed(clips)
    probs_alone = np.stack([cnn14.tag(c).probabilities for c in clips])
    probs_together = np.stack([t.probabilities for t in cnn14.tag(clips)])
    assert np.abs(together - np.stack(alone)).max() <= 1e-5
    assert np.abs(probs_together - probs_alone).max() <= 1e-5


@pytest.mark.parametrize("n", [1, 2, 100, 512, 513, 4_800, 9_919])
def test_clips_shorter_than_the_minimum_are_zero_padded(cnn14, n):
    x = _noise(n, seed=n)
    got = cnn14.tag(x).probabilities
    padded = np.zeros(9_920, dtype=np.float32)
    padded[:n] = x
    assert np.isfinite(got).all() and got.min() >= 0 and got.max() <= 1
    np.testing.assert_array_equal(got, cnn14.tag(padded).probabilities)


@pytest.mark.parametrize("n", [9_920, 9_921, 10_240])
def test_minimum_length_and_above_are_not_padded(cnn14, n):
    assert cnn14.model.target_length(n) == n


def test_framewise_rows_follow_the_input_length(sed):
    for n in (1, 5_000, 9_920, 32_000, 32_319):
        fw = sed.framewise(_noise(n, seed=n))
        assert isinstance(fw, Framewise)
        assert fw.probabilities.shape == (n // 320 + 1, 527)
        assert fw.frame_hop == pytest.approx(0.01)
        assert fw.times[-1] == pytest.approx((n // 320) * 0.01)
        assert np.isfinite(fw.probabilities).all()


def test_framewise_and_embed_are_refused_where_the_model_has_none(cnn14, sed):
    with pytest.raises(UnsupportedOperationError, match="Cnn14_DecisionLevelMax"):
        cnn14.framewise(_noise(32000))
    with pytest.raises(UnsupportedOperationError, match="no embedding"):
        sed.embed(_noise(32000))
    assert sed.embedding_size is None


# Lengths around the Wavegram-Logmel trap: N = 320q + r fails in the reference iff q is odd
# and r <= 315. Cover odd and even q, and the residues on both sides of 316.
_SWEEP = [320 * q + r for q in (31, 32, 33, 34, 101) for r in (0, 1, 5, 160, 314, 315, 316, 317, 319)]


def _branch_steps(model, n: int) -> tuple[int, int]:
    x = torch.zeros(1, n)
    with torch.inference_mode():
        return model.wavegram(x).shape[2], model.conv_block1(model.logmel(x)).shape[2]


def test_wavegram_rule_matches_the_branches(wavegram_logmel):
    """The documented rule equals the real branch arithmetic at every residue that matters."""
    model = wavegram_logmel.model
    for n in _SWEEP + list(range(10_230, 10_245)):
        wave, mel = _branch_steps(model, max(n, 10_236))
        agree = wave == mel
        assert agree == (wavegram_logmel_valid_length(max(n, 10_236)) == max(n, 10_236)), n
        target = model.target_length(n)
        assert target >= n and target - max(n, 10_236) <= 316
        assert _branch_steps(model, target)[0] == _branch_steps(model, target)[1]


def test_wavegram_logmel_runs_at_every_length(wavegram_logmel):
    clips = [_noise(n, seed=n) for n in _SWEEP + [1, 10_235, 32_320]]
    probs = [t.probabilities for t in wavegram_logmel.tag(clips)]
    for n, p in zip(_SWEEP, probs):
        assert np.isfinite(p).all() and 0 <= p.min() and p.max() <= 1, n
    # A failing length gives the result of its documented zero-padding.
    x = clips[-1]
    padded = np.concatenate([x, np.zeros(32_636 - 32_320, dtype=np.float32)])
    np.testing.assert_allclose(probs[-1], wavegram_logmel.tag(padded).probabilities, rtol=0, atol=1e-5)


def test_wavegram_cnn14_short_clips(fixture_checkpoint):
    tagger = AudioTagger(fixture_checkpoint("Wavegram_Cnn14"), device="cpu", labels=NAMES)
    for n in (1, 10_235, 10_236, 32_320):
        assert np.isfinite(tagger.tag(_noise(n)).probabilities).all()


def test_other_sample_rates_are_resampled_with_kaiser_best(cnn14):
    x = _noise(22050, seed=3)
    expected = cnn14.tag(resampy.resample(x, 22050, 32000, filter="kaiser_best")).probabilities
    # Our resampler reimplements kaiser_best (summing in float64, where resampy rounds to float32
    # at every step): samples agree to ~1e-6 (tests/test_fast.py), probabilities to ~1e-6 too.
    np.testing.assert_allclose(cnn14.tag(x, sample_rate=22050).probabilities, expected, atol=1e-5)


def test_files_and_arrays_mixed(cnn14, tmp_path):
    import soundfile

    x = _noise(48000, seed=4)
    path = tmp_path / "clip.wav"
    soundfile.write(path, x, 32000, subtype="FLOAT")
    from_file, from_array = cnn14.tag([str(path), x])
    assert from_file.source == str(path) and from_array.source is None
    np.testing.assert_allclose(from_file.probabilities, from_array.probabilities, rtol=0, atol=1e-6)


def test_labels_options(fixture_checkpoint, tmp_path, labels_csv):
    path = fixture_checkpoint("Cnn14")
    assert AudioTagger(path, labels=labels_csv).labels[0] == "Speech"
    with pytest.raises(LabelsError, match="3 labels given"):
        AudioTagger(path, labels=["a", "b", "c"])
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name\n0,x\n")
    with pytest.raises(LabelsError, match="header"):
        AudioTagger(path, labels=bad)


def test_tags_are_named_offline_with_an_empty_cache(fixture_checkpoint, monkeypatch):
    from panns_infer import hub, registry

    monkeypatch.setattr(registry, "LABELS_URL", "https://nonexistent.invalid/class_labels_indices.csv")
    offline = AudioTagger(fixture_checkpoint("Cnn14"), device="cpu", offline=True)
    tags = offline.tag(_noise(32000), top_k=3)
    assert len(offline.labels) == 527 and offline.labels[:2] == ["Speech", "Male speech, man speaking"]
    assert set(tags.labels) <= set(offline.labels)
    assert not (hub.cache_dir() / "labels").exists()


def test_device_and_option_errors(fixture_checkpoint):
    path = fixture_checkpoint("Cnn14")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            AudioTagger(path, device="cuda")
        assert AudioTagger(path, device="auto").device.type == "cpu"
    with pytest.raises(DeviceError):
        AudioTagger(path, device="tpu")
    with pytest.raises(InvalidArgumentError):
        AudioTagger(path, batch_size=0)
    with pytest.raises(InvalidArgumentError):
        AudioTagger(path, labels=NAMES).tag(_noise(100), top_k=-1)


def test_checkpoint_resolution_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        AudioTagger(str(tmp_path / "missing.pth"))
    with pytest.raises(CheckpointNotFoundError):
        AudioTagger("some/dir/Cnn14_mAP=0.431.pth")
    with pytest.raises(UnknownModelError, match="Supported checkpoints"):
        AudioTagger("Cnn15")
    with pytest.raises(OfflineError):
        AudioTagger("Cnn14", offline=True)


def test_timeline_tags_consecutive_segments(cnn14):
    x = _noise(32000 * 5, seed=9)
    tl = cnn14.timeline(x, segment=2.0, hop=1.0)
    assert tl.probabilities.shape == (4, 527)
    np.testing.assert_allclose(tl.starts, [0, 1, 2, 3]) and np.testing.assert_allclose(tl.ends, [2, 3, 4, 5])
    for k in range(4):
        whole = cnn14.tag(x[32000 * k: 32000 * (k + 2)]).probabilities
        assert np.abs(tl.probabilities[k] - whole).max() <= 1e-5
    events = tl.events(threshold=0.5)
    assert all(0 <= e.onset < e.offset <= 5.0 for e in events)
    short = cnn14.timeline(_noise(1000), segment=2.0, hop=1.0)
    assert short.probabilities.shape == (1, 527) and short.ends[0] == pytest.approx(1000 / 32000)
    with pytest.raises(InvalidArgumentError):
        cnn14.timeline(x, segment=1.0, hop=2.0)


def test_precision_options(fixture_checkpoint):
    path = fixture_checkpoint("Cnn14")
    with pytest.raises(InvalidArgumentError, match="one of"):
        AudioTagger(path, device="cpu", precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="needs a CUDA device"):
            AudioTagger(path, device="cpu", precision="fp16")


def test_a_loaded_tagger_never_reads_its_checkpoint_again(fixture_checkpoint, tmp_path):
    path = tmp_path / "Cnn14_DecisionLevelMax.pth"
    path.write_bytes(fixture_checkpoint("Cnn14_DecisionLevelMax", name="Cnn14_DecisionLevelMax.pth").read_bytes())
    tagger = AudioTagger(path, device="cpu", labels=NAMES)  # the fast path: plain conv weights freed
    wave = _noise(32000 * 3, seed=5)
    before = tagger.framewise(wave).probabilities
    path.write_bytes(b"not a checkpoint any more")
    path.unlink()
    model = tagger.model
    assert not any(p.is_meta for p in model.parameters())
    assert model.has_framewise and model.arch == "Cnn14_DecisionLevelMax"
    with torch.inference_mode():
        direct = model(torch.from_numpy(wave)[None])["clipwise_output"][0].numpy()
    np.testing.assert_array_equal(tagger.framewise(wave).probabilities, before)
    np.testing.assert_array_equal(tagger.tag(wave, top_k=0).probabilities, direct)
    assert tagger.log_mel(wave).shape[1] == 64
