"""Exact chunked inference: chunk plans, receptive fields, and chunked == whole for every
architecture (the plain network on the full signal), with small chunks so that multi-chunk
cases need only a few seconds of audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_fixtures
from panns_infer import AudioTagger
from panns_infer.chunks import ChunkCutter, ChunkPlan, StepAssembler, iter_chunks
from panns_infer.models import build_model, list_architectures

NAMES = [f"class {i}" for i in range(527)]
# the largest networks, or those with the widest receptive fields, run in the slow set
HEAVY = {"ResNet38", "ResNet54", "MobileNetV2", "Res1dNet31", "Res1dNet51", "LeeNet24", "Wavegram_Cnn14"}
ARCHS = [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a for a in list_architectures()]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 400), block=st.integers(1, 97), step=st.sampled_from([1, 4, 10]),
       core_steps=st.integers(1, 5), margin_steps=st.integers(0, 4))
def test_chunks_keep_every_step_once_with_their_margins(n, block, step, core_steps, margin_steps):
    plan = ChunkPlan(step, core_steps * step, margin_steps * step)
    x = np.arange(n, dtype=np.float32)
    chunks = list(iter_chunks((x[i:i + block] for i in range(0, n, block)), plan))
    kept = 0
    for k, c in enumerate(chunks):
        np.testing.assert_array_equal(c.samples, x[c.start:c.start + len(c.samples)])
        assert c.start % step == 0
        first = c.start + c.keep_from * step
        assert first == kept  # contiguous, no step twice, none left out
        assert c.start == 0 or c.keep_from * step >= plan.margin
        assert c.last == (k == len(chunks) - 1)
        if c.last:
            assert c.start + len(c.samples) == n and c.keep_to is None
        else:
            assert len(c.samples) == c.keep_to * step + plan.margin  # the margin after, nothing more
            kept = c.start + c.keep_to * step
    assert chunks[-1].start + len(chunks[-1].samples) == n
    assert len(chunks) == 1 or len(chunks[0].samples) == plan.core + plan.margin


def test_an_empty_stream_gives_no_chunk():
    plan = ChunkPlan(step=10, core=30, margin=10)
    assert list(iter_chunks([], plan)) == []
    assert list(iter_chunks([np.zeros(0, np.float32)] * 3, plan)) == []


def test_a_chunk_is_cut_as_soon_as_its_last_needed_sample_arrives():
    """An interior chunk needs its kept steps plus the margin after them: the push that brings
    exactly that many samples gives it (a live stream's rows wait no longer than that)."""
    cutter = ChunkCutter(ChunkPlan(step=10, core=30, margin=10))
    assert cutter.push(np.zeros(39, np.float32)) == []
    assert [(c.start, len(c.samples)) for c in cutter.push(np.zeros(1, np.float32))] == [(0, 40)]
    assert cutter.push(np.zeros(29, np.float32)) == []
    assert [(c.start, len(c.samples)) for c in cutter.push(np.zeros(1, np.float32))] == [(20, 50)]


class _Reach:
    def __init__(self, jump: int, margin: int) -> None:
        self.jump, self.margin = jump, margin


class _ShortReachModel:
    """A network whose minimum input is longer than its receptive field reaches."""

    min_samples = 25_000

    def time_reach(self) -> _Reach:
        return _Reach(jump=10_240, margin=10_240)


def test_the_margin_covers_the_minimum_input_in_whole_steps():
    plan = ChunkPlan.for_model(_ShortReachModel(), 100_000)  # type: ignore[arg-type]
    assert plan == ChunkPlan(step=10_240, core=92_160, margin=30_720)
    assert isinstance(plan.margin, int)


def _randomised(arch: str) -> torch.nn.Module:
    model = build_model(arch)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=gen) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_a_sample_changes_only_the_steps_its_derived_reach_names(arch):
    """Perturb one sample: the steps that change are within the receptive field derived from
    the layers (and the step under the sample does change, so the test can fail)."""
    model = _randomised(arch)
    reach = model.time_reach()
    n = model.target_length(2 * reach.margin + 6 * reach.jump)
    x = torch.from_numpy((np.random.default_rng(0).standard_normal(n) * 0.1).astype(np.float32))
    positions = [reach.margin + 2 * reach.jump + 7, n // 2 + 1]
    # each signal is its own batch of one: a matrix product may round a row differently by its
    # place in the batch (the tail of a blocked product), which is not a change the sample made
    signals = [x]
    for t in positions:
        signals.append(x.clone())
        signals[-1][t] += 0.5
    with torch.inference_mode():
        steps = [model.step_outputs(s[None]) for s in signals]
    key = "features" if "features" in steps[0] else "segmentwise_output"
    out = [s[key][0] for s in steps]
    for row, t in enumerate(positions, start=1):
        changed = np.flatnonzero((out[row] - out[0]).abs().amax(dim=1).numpy() > 0)
        first = -(-(t - reach.hi) // reach.jump)  # steps i with i*jump + lo <= t <= i*jump + hi
        last = (t - reach.lo) // reach.jump
        assert changed.size and changed.min() >= first and changed.max() <= last, (arch, t, changed)
        assert t // reach.jump in changed


@pytest.fixture(scope="module")
def plain(fixture_checkpoint):
    """``plain(arch) -> (tagger, plan)``: the plain network (no fast path), cut into chunks
    keeping three steps each."""
    made = {}

    def get(arch):
        if arch not in made:
            path = fixture_checkpoint(arch)
            probe = build_model(arch)
            step = probe.time_reach().jump
            tagger = AudioTagger(path, arch=arch, device="cpu", labels=NAMES, optimize=False,
                                 whole_up_to=3 * step / probe.sample_rate)
            made[arch] = tagger, tagger._engine.plan
        return made[arch]

    return get


@requires_fixtures
@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_equals_the_whole_network_on_the_full_signal(plain, arch):
    tagger, plan = plain(arch)
    assert plan.core == 3 * plan.step
    model = tagger.model
    rate = tagger.sample_rate
    lengths = {
        "shorter than one chunk": plan.core + plan.margin - 5,
        "one sample past a chunk boundary": plan.core + plan.margin + 1,
        "an interior chunk, an odd Wavegram length": 2 * plan.core + plan.margin + 321,
    }
    rng = np.random.default_rng(3)
    for what, n in lengths.items():
        x = (rng.standard_normal(n) * 0.1).astype(np.float32)
        x[n // 3: n // 3 + 400] += 0.8  # a click near a chunk edge
        assert tagger._engine.chunked(n)
        got = tagger.infer(x, sample_rate=rate)
        with torch.inference_mode():
            want = {k: v[0].numpy() for k, v in model(torch.from_numpy(x)[None]).items()}
        assert np.abs(got["clipwise_output"] - want["clipwise_output"]).max() <= 1e-5, what
        if "embedding" in want:
            scale = max(1.0, float(np.abs(want["embedding"]).max()))
            assert np.abs(got["embedding"] - want["embedding"]).max() <= 1e-5 * scale, what
        else:
            assert got["framewise_output"].shape == want["framewise_output"].shape, what
            assert np.abs(got["framewise_output"] - want["framewise_output"]).max() <= 1e-5, what


def _adversarial(seconds: float, rate: int = 32000) -> np.ndarray:
    """Noise, digital silence, a full-scale square wave, DC, clicks on the 0.32 s grid, tones."""
    rng = np.random.default_rng(11)
    n = int(seconds * rate)
    x = rng.standard_normal(n) * 0.05
    t = np.arange(n) / rate
    part = n // 6
    x[part:2 * part] = 0.0
    x[2 * part:2 * part + rate * 5] = np.sign(np.sin(2 * np.pi * 441 * t[:rate * 5]))
    x[3 * part:3 * part + rate * 3] += 0.5
    x[4 * part:5 * part] += 0.3 * np.sin(2 * np.pi * (200 + 50 * t[:part]) * t[:part])
    x[::10240] += 0.9  # a click at every step boundary, where chunks start
    return np.clip(x, -1, 1).astype(np.float32)


@requires_fixtures
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["Cnn14", "Cnn14_DecisionLevelMax"])
def test_default_settings_equal_panns_inference_on_the_whole_recording(fixture_checkpoint, arch, tmp_path,
                                                                       monkeypatch):
    """100 s of adversarial audio through the default tagger (fast path, 30 s chunks) against
    the reference network run once on the whole signal."""
    import shutil

    from conftest import FIXTURES

    home = tmp_path / "home"
    (home / "panns_data").mkdir(parents=True)
    shutil.copy(FIXTURES / "class_labels_indices.csv", home / "panns_data" / "class_labels_indices.csv")
    monkeypatch.setenv("HOME", str(home))
    reference = pytest.importorskip("panns_inference.models", reason="panns_inference is not installed")
    path = fixture_checkpoint(arch, layout="plain")
    net = getattr(reference, arch)(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50,
                                   fmax=14000, classes_num=527)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
    net.eval()
    x = _adversarial(100.0)
    with torch.inference_mode():
        want = {k: v[0].numpy() for k, v in net(torch.from_numpy(x)[None]).items()}
    tagger = AudioTagger(path, arch=arch, device="cpu", labels=NAMES)
    assert tagger._engine.chunked(len(x))
    got = tagger.infer(x)
    assert np.abs(got["clipwise_output"] - want["clipwise_output"]).max() <= 1e-4
    if "embedding" in want:
        assert np.abs(got["embedding"] - want["embedding"]).max() <= 1e-3
    else:
        assert got["framewise_output"].shape == want["framewise_output"].shape
        assert np.abs(got["framewise_output"] - want["framewise_output"]).max() <= 1e-4


@requires_fixtures
def test_chunks_batched_in_one_pass_give_the_same_result(plain):
    """On a GPU several equal-length chunks share a forward pass; the result does not change."""
    tagger, plan = plain("Cnn10")
    x = (np.random.default_rng(4).standard_normal(6 * plan.core + plan.margin + 99) * 0.1).astype(np.float32)
    one = tagger.infer(x)
    tagger._engine.chunks_per_pass = 3
    try:
        batched = tagger.infer(x)
    finally:
        tagger._engine.chunks_per_pass = 1
    for key in one:
        assert np.abs(one[key] - batched[key]).max() <= 1e-5


@pytest.mark.parametrize("dtype", [np.float64, np.int16])
def test_cut_chunks_are_float32_whatever_was_pushed(dtype):
    cutter = ChunkCutter(ChunkPlan(step=10, core=30, margin=10))
    x = np.arange(95).astype(dtype)
    chunks = cutter.push(x[:60]) + cutter.push(x[60:]) + cutter.finish()
    assert len(chunks) == 3
    for c in chunks:
        assert c.samples.dtype == np.float32
        np.testing.assert_array_equal(c.samples, x[c.start:c.start + len(c.samples)].astype(np.float32))


def test_a_finished_cutter_refuses_more_samples_and_gives_no_second_last_chunk():
    cutter = ChunkCutter(ChunkPlan(step=10, core=30, margin=10))
    cutter.push(np.zeros(25, np.float32))
    assert len(cutter.finish()) == 1
    assert cutter.finish() == []
    with pytest.raises(ValueError, match=r"^this ChunkCutter has finished$"):
        cutter.push(np.zeros(1, np.float32))


def test_steps_of_many_chunks_are_pooled_in_float64():
    """A long recording's mean over steps accumulates in float64: in float32, 2**24 + 1 rounds
    back to 2**24, and a thousand small steps after one large one would vanish."""
    model = build_model("Cnn6").eval()
    assembler = StepAssembler(model, ["embedding"])
    width = model.fc1.in_features
    assembler.add({"features": torch.full((1, 1, width), 2.0 ** 24)})
    for _ in range(1000):
        assembler.add({"features": torch.ones(1, 1, width)})
    got = assembler.finish()["embedding"]
    pooled = torch.full((1, width), 2.0 ** 24 + (2.0 ** 24 + 1000) / 1001, dtype=torch.float64)
    with torch.inference_mode():
        want = model.finish({"pooled": pooled.float()})["embedding"][0].numpy()
    np.testing.assert_array_equal(got, want)
