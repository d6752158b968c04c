"""One rule for long inputs across every entry point (tag, embed, framewise, infer, timeline):
by default each gives the whole input's result; with windows, each combines the windows'
clip outputs by the tagger's ``aggregate``, probabilities and embeddings alike."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_fixtures
from panns_infer import AudioTagger

pytestmark = requires_fixtures

NAMES = [f"class {i}" for i in range(527)]
_TAGGERS: dict = {}


@pytest.fixture(scope="module")
def make(fixture_checkpoint):
    def get(arch, **options):
        key = (arch, tuple(sorted(options.items())))
        if key not in _TAGGERS:
            _TAGGERS[key] = AudioTagger(fixture_checkpoint(arch), arch=arch, device="cpu", labels=NAMES, **options)
        return _TAGGERS[key]

    yield get
    _TAGGERS.clear()


def _signal(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * 32000)) * 0.05
    burst = rng.integers(0, len(x) - 32000)
    x[burst:burst + 32000] += 0.5 * np.sin(2 * np.pi * 700 * np.arange(32000) / 32000)  # one loud second
    return x.astype(np.float32)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(seconds=st.floats(10.5, 21.0), seed=st.integers(0, 1000), aggregate=st.sampled_from(["max", "mean"]))
def test_windows_combine_by_one_rule_in_every_entry_point(make, seconds, seed, aggregate):
    tagger = make("Cnn6", window=10.0, whole_up_to=0, aggregate=aggregate)
    x = _signal(seconds, seed)
    spans = tagger._engine.spans(len(x))
    assert len(spans) > 1
    reduce = np.max if aggregate == "max" else np.mean
    alone = tagger.infer([x[a:b] for a, b in spans])  # each window is one pass
    raw = tagger.infer(x)
    assert isinstance(raw, dict)  # one input, one result
    np.testing.assert_allclose(raw["clipwise_output"], reduce([o["clipwise_output"] for o in alone], axis=0),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(raw["embedding"], reduce([o["embedding"] for o in alone], axis=0),
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal(tagger.tag(x).probabilities, raw["clipwise_output"])
    np.testing.assert_array_equal(tagger.embed(x), raw["embedding"])


@settings(max_examples=3, deadline=None, derandomize=True)
@given(seconds=st.floats(10.5, 16.0), seed=st.integers(0, 1000), aggregate=st.sampled_from(["max", "mean"]))
def test_framewise_clip_scores_follow_the_same_rule(make, seconds, seed, aggregate):
    tagger = make("Cnn14_DecisionLevelMax", window=10.0, whole_up_to=0, aggregate=aggregate)
    x = _signal(seconds, seed)
    raw = tagger.infer(x)
    fw = tagger.framewise(x)
    np.testing.assert_array_equal(fw.clipwise, raw["clipwise_output"])
    np.testing.assert_array_equal(tagger.tag(x).probabilities, raw["clipwise_output"])
    np.testing.assert_array_equal(fw.probabilities, raw["framewise_output"])


def test_by_default_every_entry_point_gives_the_whole_input_result(make):
    """40 s through the default (chunked past 30 s) and through one pass agree in all entry
    points; timeline segments are clips of their own."""
    chunked = make("Cnn6")
    one_pass = make("Cnn6", whole_up_to=float("inf"))
    x = _signal(40.0, 1)
    assert chunked._engine.chunked(len(x)) and not one_pass._engine.chunked(len(x))
    want = one_pass.infer(x)
    got = chunked.infer(x)
    np.testing.assert_allclose(got["clipwise_output"], want["clipwise_output"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["embedding"], want["embedding"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(chunked.tag(x).probabilities, got["clipwise_output"])
    np.testing.assert_array_equal(chunked.embed(x), got["embedding"])
    timeline = chunked.timeline(x, segment=4.0, hop=4.0)
    np.testing.assert_allclose(timeline.probabilities[2], chunked.tag(x[8 * 32000:12 * 32000]).probabilities,
                               rtol=0, atol=1e-6)
