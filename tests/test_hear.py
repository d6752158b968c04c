"""Tests for panns_infer.hear, the HEAR 2021 API.

``test_hearvalidator_accepts_the_module`` runs the official ``hearvalidator`` when it is
installed. Because it is usually not, the other tests check every rule that hear-validator
(hearbenchmark/hear-validator, ``hearvalidator/validate.py``, both the 2021.0.2 release and the
later repository version) checks, named in ``test_validator_rules_for_timestamp_embeddings``
and ``test_validator_rules_for_scene_embeddings``.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import load_goldens, requires_fixtures
from panns_infer import AudioTagger, hear
from panns_infer.errors import InvalidArgumentError, InvalidAudioError, OfflineError, UnsupportedOperationError
from panns_infer.hear import HEAR_SAMPLE_RATES, HearModel, _Resampler
from panns_infer.models import build_model


@pytest.fixture(scope="module")
def cnn6_path(fixture_checkpoint):
    return fixture_checkpoint("Cnn6")


@pytest.fixture(scope="module")
def cnn6(cnn6_path):
    return hear.load_model(str(cnn6_path))


def _noise(n_sounds: int, n_samples: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n_sounds, n_samples, generator=gen) * 2 - 1  # white noise in [-1, 1], as HEAR does


# --- the official validator, when installed --------------------------------------------------------


@requires_fixtures
def test_hearvalidator_accepts_the_module(cnn6_path, monkeypatch):
    try:
        import hearvalidator.validate  # noqa: F401  (imports tensorflow at module level)
    except ModuleNotFoundError as exc:
        if exc.name == "hearvalidator":
            pytest.skip("hearvalidator is not installed (pip install hearvalidator --no-deps to run this check)")
        if exc.name != "tensorflow":
            raise
        # hearvalidator needs tensorflow only for TF models (isinstance(model, tf.Module), tf.device);
        # a torch model never reaches that code, so a stand-in module lets its torch checks run.
        stub = types.ModuleType("tensorflow")
        stub.Module = type("Module", (), {})
        monkeypatch.setitem(sys.modules, "tensorflow", stub)
        monkeypatch.delitem(sys.modules, "hearvalidator.validate", raising=False)
    validate = importlib.import_module("hearvalidator.validate")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate.ValidateModel("panns_infer.hear", str(cnn6_path), device="cpu")()  # raises ModelError on a fault
    assert not [w for w in caught if "50ms" in str(w.message)]  # timestamps are <= 50 ms apart


# --- every rule hear-validator checks --------------------------------------------------------------


@requires_fixtures
@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0, 2.0])
def test_validator_rules_for_timestamp_embeddings(cnn6, seconds):
    """Rules: load_model returns a torch.nn.Module that accepts .to(device); sample_rate is one of
    16000/22050/44100/48000; scene_embedding_size and timestamp_embedding_size are ints;
    get_timestamp_embeddings on (2, int(seconds * sample_rate)) white noise returns float32
    embeddings with 3 dimensions and 2-D timestamps; n_sounds rows; embeddings.shape[:2] ==
    timestamps.shape; embeddings.shape[2] == timestamp_embedding_size; intervals regular within
    1 ms (1e-3 ms in the 2021.0.2 release); interval <= 50 ms (a warning there); first timestamp
    <= the interval (a warning); last timestamp >= duration - 2 intervals (an error),
    >= duration - 1 interval and >= duration - 50 ms (warnings); last timestamp <= duration."""
    model = cnn6
    assert isinstance(model, nn.Module) and model.to("cpu") is model
    assert model.sample_rate in HEAR_SAMPLE_RATES
    assert type(model.scene_embedding_size) is int and type(model.timestamp_embedding_size) is int
    n = int(seconds * model.sample_rate)
    emb, ts = hear.get_timestamp_embeddings(_noise(2, n), model)
    assert emb.dtype == torch.float32 and emb.ndim == 3 and ts.ndim == 2
    assert emb.shape[0] == 2 and emb.shape[:2] == ts.shape
    assert emb.shape[2] == model.timestamp_embedding_size
    diff = np.diff(ts.numpy())
    avg = diff.mean()
    assert np.abs(diff - avg).max() < 1e-3
    assert diff.max() <= 50.0
    duration = 1000 * n / model.sample_rate
    assert ts.min() <= avg
    assert ts.max() >= duration - avg and ts.max() >= duration - 50
    assert ts.max() <= duration
    assert torch.isfinite(emb).all()


@requires_fixtures
def test_validator_rules_for_scene_embeddings(cnn6):
    """Rules: get_scene_embeddings on (4, int(2.74 * sample_rate)) white noise (8 x 3.74 s in
    2021.0.2) returns float32, 2 dimensions, n_sounds rows, scene_embedding_size columns."""
    emb = hear.get_scene_embeddings(_noise(4, int(2.74 * cnn6.sample_rate)), cnn6)
    assert emb.dtype == torch.float32 and emb.ndim == 2
    assert emb.shape == (4, cnn6.scene_embedding_size)


def test_module_exposes_the_hear_api():
    for name in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings"):
        assert callable(getattr(hear, name))


def test_empty_path_loads_the_default_cnn14():
    with pytest.raises(OfflineError, match="Cnn14_mAP=0.431.pth"):
        hear.load_model("", offline=True)


# --- what the embeddings are -----------------------------------------------------------------------


@requires_fixtures
def test_scene_embeddings_equal_audio_tagger_embed(cnn6_path):
    _, _, waves = load_goldens("Cnn6")
    wave = waves["real_7s"][:3 * 32000]  # the real recording's first 3 s
    ref = AudioTagger(cnn6_path, device="cpu").embed(wave)
    tol = 1e-5 * float(np.abs(ref).max())
    native = hear.load_model(str(cnn6_path), sample_rate=32000)  # no resampling
    np.testing.assert_allclose(hear.get_scene_embeddings(torch.from_numpy(wave)[None], native)[0].numpy(),
                               ref, rtol=0, atol=tol)
    # at HEAR's 48 kHz: audio upsampled with resampy, downsampled inside the model
    import resampy

    wave48 = resampy.resample(wave, 32000, 48000, filter="kaiser_best").astype(np.float32)
    at48 = hear.load_model(str(cnn6_path))
    assert at48.sample_rate == 48000
    emb48 = hear.get_scene_embeddings(torch.from_numpy(wave48)[None], at48)[0].numpy()
    np.testing.assert_allclose(emb48, ref, rtol=0, atol=1e-3 * float(np.abs(ref).max()))


def test_sixteen_khz_network_runs_at_its_own_rate():
    model = HearModel(build_model("Cnn14_16k"))
    assert model.sample_rate == 16000 and model.resampler is None
    assert model.timestamp_hop_ms == 40.0 and model.timestamp_embedding_size == 2048


@requires_fixtures
def test_timestamps_point_at_the_events(cnn6):
    """A 40 ms noise burst changes the embeddings around its own time, not half a window off."""
    rate = cnn6.sample_rate
    rng = np.random.default_rng(0)
    centres = (0.7, 1.5, 2.33)
    audio = np.tile((0.001 * rng.standard_normal(3 * rate)).astype(np.float32), (len(centres) + 1, 1))
    for row, centre in enumerate(centres, start=1):  # row 0 stays quiet
        c, w = int(centre * rate), int(0.02 * rate)
        audio[row, c - w:c + w] += (0.5 * rng.standard_normal(2 * w)).astype(np.float32)
    emb, ts = hear.get_timestamp_embeddings(torch.from_numpy(audio), cnn6)
    for row, centre in enumerate(centres, start=1):
        change = (emb[row] - emb[0]).norm(dim=1)
        centroid = float((change * ts[0]).sum() / change.sum())
        assert abs(centroid - 1000 * centre) < 25  # a window is 160 ms; an off-centre error is >= 75 ms


@requires_fixtures
def test_finer_hops_interleave_the_coarse_sequence(cnn6_path):
    audio = _noise(2, 40_000, seed=3)
    runs = {hop: hear.get_timestamp_embeddings(audio, hear.load_model(str(cnn6_path), sample_rate=32000,
                                                                       timestamp_hop_ms=hop))
            for hop in (160.0, 80.0, 40.0)}
    fine, fine_ts = runs[40.0]
    for hop, step in ((80.0, 2), (160.0, 4)):
        emb, ts = runs[hop]
        torch.testing.assert_close(fine[:, ::step][:, :emb.shape[1]], emb, rtol=0, atol=1e-5)
        torch.testing.assert_close(fine_ts[:, ::step][:, :ts.shape[1]], ts)
        assert np.diff(ts[0].numpy()).max() == hop


@requires_fixtures
def test_batching_does_not_change_results(cnn6_path):
    model = hear.load_model(str(cnn6_path), batch_size=2)
    audio = _noise(3, 30_000, seed=1)
    scene = hear.get_scene_embeddings(audio, model)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    for i in range(3):
        one = audio[i:i + 1]
        scale = float(scene[i].abs().max())
        torch.testing.assert_close(hear.get_scene_embeddings(one, model)[0], scene[i], rtol=0, atol=1e-5 * scale)
        e1, t1 = hear.get_timestamp_embeddings(one, model)
        torch.testing.assert_close(e1[0], emb[i], rtol=0, atol=1e-5 * float(emb[i].abs().max()))
        assert torch.equal(t1[0], ts[i])


@requires_fixtures
@pytest.mark.parametrize("samples, stamps", [(1, [0.0]), (10, [0.0]), (2000, [0.0, 40.0]), (9600, [0.0, 40.0,
                                                                                                 80.0, 120.0,
                                                                                                 160.0, 200.0])])
def test_very_short_clips(cnn6, samples, stamps):
    audio = _noise(3, samples)
    scene = hear.get_scene_embeddings(audio, cnn6)
    emb, ts = hear.get_timestamp_embeddings(audio, cnn6)
    assert scene.shape == (3, 512) and torch.isfinite(scene).all()
    assert emb.shape == (3, len(stamps), 512) and torch.isfinite(emb).all()
    assert ts[0].tolist() == stamps


def test_inputs_are_checked_and_converted():
    model = hear.load_model(build_model("Cnn6"))
    with pytest.raises(InvalidAudioError, match="n_sounds"):
        hear.get_scene_embeddings(torch.zeros(100), model)
    with pytest.raises(InvalidAudioError, match="floating"):
        hear.get_timestamp_embeddings(torch.zeros(1, 100, dtype=torch.int16), model)
    with pytest.raises(InvalidAudioError, match="no samples"):
        hear.get_scene_embeddings(torch.zeros(2, 0), model)
    with pytest.raises(InvalidArgumentError, match="load_model"):
        hear.get_scene_embeddings(torch.zeros(1, 100), build_model("Cnn6"))
    out = hear.get_scene_embeddings(torch.zeros(2, 4800, dtype=torch.float64), model)
    assert out.dtype == torch.float32
    assert hear.get_scene_embeddings(torch.zeros(0, 4800), model).shape == (0, 512)


def test_options_are_checked():
    with pytest.raises(InvalidArgumentError, match=r"160\.0, 80\.0, 40\.0, 20\.0, 10\.0"):
        hear.load_model(build_model("Cnn6"), timestamp_hop_ms=50)
    with pytest.raises(UnsupportedOperationError, match="CNN-family"):
        hear.load_model(build_model("MobileNetV1"))
    with pytest.raises(InvalidArgumentError, match="sample_rate"):
        hear.load_model(build_model("Cnn6"), sample_rate=0)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        hear.load_model(build_model("Cnn6"), batch_size=0)


# --- the resampler ---------------------------------------------------------------------------------


@pytest.mark.parametrize("orig, new", [(48000, 32000), (44100, 32000), (22050, 32000), (16000, 32000)])
def test_resampler_keeps_the_band_the_networks_use(orig, new):
    t = np.arange(orig) / orig
    resampler = _Resampler(orig, new)
    for freq in (440.0, 5000.0, 0.42 * min(orig, new)):  # flat up to 84% of the lower Nyquist
        out = resampler(torch.from_numpy(np.sin(2 * np.pi * freq * t).astype(np.float32))[None])[0].numpy()
        assert len(out) == -(-orig * new // orig)
        ideal = np.sin(2 * np.pi * freq * np.arange(len(out)) / new)
        inner = slice(new // 20, -new // 20)  # away from the edges, where the signal stops
        np.testing.assert_allclose(out[inner], ideal[inner], atol=1e-4)


def test_resampler_removes_what_would_alias():
    x = np.sin(2 * np.pi * 20000 * np.arange(48000) / 48000).astype(np.float32)  # above 16 kHz
    out = _Resampler(48000, 32000)(torch.from_numpy(x)[None])[0].numpy()
    assert np.abs(out[1600:-1600]).max() < 1e-4
    assert _Resampler(48000, 32000)(torch.ones(1, 1)).shape == (1, 1)
