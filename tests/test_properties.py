"""Property-based tests (hypothesis): any length, rate, dtype and batch gives finite
probabilities in [0, 1], and a clip's result does not depend on what it is batched with.

Bounded for CI: 12 + 8 fixed (derandomized) examples on Cnn6 (a small log-mel network with
a minimum length, so short clips exercise the zero-padding too), about 25 s in all.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import requires_fixtures
from panns_infer import AudioTagger

pytestmark = requires_fixtures

BATCH_TOLERANCE = 1e-5  # README: "within 1e-5 on probabilities"
SETTINGS = dict(deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.uint8]
KINDS = ["noise", "quiet_noise", "zeros", "dc", "impulse", "full_scale_square", "tone"]
RATES = st.one_of(st.sampled_from([8000, 16000, 22050, 32000, 44100, 48000, 96000]),
                  st.integers(min_value=8000, max_value=96000))


@pytest.fixture(scope="module")
def tagger(fixture_checkpoint, labels_csv) -> AudioTagger:
    return AudioTagger(fixture_checkpoint("Cnn6"), device="cpu", labels=labels_csv)


def _signal(kind: str, n: int, seed: int) -> np.ndarray:
    """A float64 signal in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if kind == "noise":
        return np.clip(rng.standard_normal(n) * 0.3, -1, 1)
    if kind == "quiet_noise":
        return rng.standard_normal(n) * 1e-6
    if kind == "zeros":
        return np.zeros(n)
    if kind == "dc":
        return np.full(n, rng.uniform(-1, 1))
    if kind == "impulse":
        x = np.zeros(n)
        x[rng.integers(n)] = 1.0
        return x
    if kind == "full_scale_square":
        return np.where((t // max(1, int(rng.integers(1, 200)))) % 2, 1.0, -1.0)
    return np.sin(2 * np.pi * rng.uniform(20, 4000) / 16000 * t)  # tone


def _as_dtype(x: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return x.astype(dtype)
    if dtype == np.uint8:
        return np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8)
    full = 2.0 ** (8 * dtype.itemsize - 1)
    return np.clip(np.round(x * full), -full, full - 1).astype(dtype)


@st.composite
def batches(draw):
    """``(batch, rate)``: a (rows, n) array of one dtype and kind per row, at one rate."""
    n = draw(st.integers(min_value=1, max_value=70_000))
    rows = draw(st.integers(min_value=1, max_value=3))
    dtype = draw(st.sampled_from(DTYPES))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=rows, max_size=rows))
    seed = draw(st.integers(min_value=0, max_value=2 ** 32 - 1))
    x = np.stack([_as_dtype(_signal(kind, n, seed + i), dtype) for i, kind in enumerate(kinds)])
    return x, draw(RATES)


def _valid(p: np.ndarray) -> bool:
    return p.shape == (527,) and bool(np.isfinite(p).all()) and p.min() >= 0.0 and p.max() <= 1.0


@settings(max_examples=12, **SETTINGS)
@given(batches())
def test_any_batch_gives_finite_probabilities_and_batching_changes_nothing(tagger, case):
    x, rate = case
    together = tagger.tag(x, sample_rate=rate)
    assert isinstance(together, list) and len(together) == len(x)
    for row, tags in zip(x, together):
        assert _valid(tags.probabilities)
        alone = tagger.tag(row, sample_rate=rate).probabilities
        assert np.abs(alone - tags.probabilities).max() <= BATCH_TOLERANCE


@settings(max_examples=8, **SETTINGS)
@given(lengths=st.lists(st.integers(min_value=1, max_value=70_000), min_size=2, max_size=3),
       seed=st.integers(min_value=0, max_value=2 ** 32 - 1), rate=RATES)
def test_a_clip_in_a_list_of_other_lengths_equals_the_clip_alone(tagger, lengths, seed, rate):
    clips = [_signal("noise", n, seed + i).astype(np.float32) for i, n in enumerate(lengths)]
    together = tagger.tag(clips, sample_rate=rate)
    for clip, tags in zip(clips, together):
        assert _valid(tags.probabilities)
        alone = tagger.tag(clip, sample_rate=rate).probabilities
        assert np.abs(alone - tags.probabilities).max() <= BATCH_TOLERANCE
