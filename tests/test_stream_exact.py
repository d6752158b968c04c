"""Live audio in exact chunks: rows final after the receptive-field delay, equal to the whole recording's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import FIXTURES, requires_fixtures

RATE = 32000
SED = ["Cnn14_DecisionLevelMax", "Cnn14_DecisionLevelAtt"]
# Rows equal the whole signal's to float32 rounding. They are not bit-identical: the frame
# head's matrix products round differently with the number of steps in one pass (a chunk
# holds 13, the whole signal 129), by up to 1.2e-6 on these probabilities (20 ulp near 0.5).
TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def plain_tagger(fixture_checkpoint, labels_csv):
    """``plain_tagger(arch)``: the plain network (no fast path), so that its whole-signal
    forward pass is the reference the stream must equal."""
    from panns_infer import AudioTagger

    made: dict = {}

    def get(arch):
        if arch not in made:
            made[arch] = AudioTagger(fixture_checkpoint(arch), arch=arch, labels=labels_csv, device="cpu",
                                     optimize=False)
        return made[arch]

    return get


def _signal(seconds: float) -> np.ndarray:
    """The fixtures' recordings, a click on the step grid and a loud tone: events to find."""
    w = np.load(FIXTURES / "goldens" / "waveforms_32000.npz")
    x = np.tile(np.concatenate([w["real_7s"], w["synth_10s"]]), 8)[:int(seconds * RATE)].astype(np.float32)
    x[::10240] += 0.5
    n = len(x) // 3
    tone = x[n:n + 3 * RATE]
    tone += 0.4 * np.sin(2 * np.pi * 880 * np.arange(len(tone)) / RATE).astype(np.float32)
    return np.clip(x, -1, 1)


def _blocks(x: np.ndarray, boundary: int) -> list[np.ndarray]:
    """Irregular blocks: 1 sample, 317 samples, 1 s, and one block straddling ``boundary``."""
    out, at, sizes = [], 0, [1, 317, RATE]
    while at < len(x):
        size = sizes[len(out) % 3]
        if at < boundary < at + 4 * RATE:  # the next block runs from here across the boundary
            size = boundary - at + 777
        out.append(x[at:at + size])
        at += size
    return out


def _stream(tagger, blocks, **options):
    """Run a stream; each update with the samples that had arrived before its block and with it."""
    seen = {"before": 0, "after": 0}

    def source():
        for b in blocks:
            seen["before"] = seen["after"]
            seen["after"] += len(b)
            yield b

    return [(u, seen["before"], seen["after"]) for u in tagger.stream(source(), **options)]


@requires_fixtures
@pytest.mark.parametrize("arch, hop_seconds, hop", [(SED[0], 1.0, 30720),
                                                    pytest.param(SED[1], 2.0, 61440, marks=pytest.mark.slow)])
def test_live_rows_are_final_early_and_equal_the_whole_recording(plain_tagger, arch, hop_seconds, hop):
    from panns_infer.stream_exact import plan_exact_live

    tagger = plain_tagger(arch)
    plan = plan_exact_live(tagger._engine, window=None, hop=hop_seconds)
    step, margin = plan.chunks.step, plan.chunks.margin
    assert (step, margin, plan.hop) == (10240, 51200, hop)   # 0.32 s steps, 1.6 s margin, whole steps
    x = _signal(41.3)
    updates = _stream(tagger, _blocks(x, boundary=12 * hop + margin), window=None, hop=hop_seconds, events=True)
    rows = np.concatenate([u.framewise for u, _, _ in updates])
    offline = tagger.framewise(x)
    with torch.inference_mode():
        whole = {k: v[0].numpy() for k, v in tagger._engine.runner(torch.from_numpy(x)[None]).items()}
    assert rows.shape == offline.probabilities.shape == whole["framewise_output"].shape
    assert np.abs(rows - whole["framewise_output"]).max() <= TOLERANCE
    assert np.abs(rows - offline.probabilities).max() <= TOLERANCE
    final = updates[-1][0]
    assert final.final and final.end == round(len(x) / RATE, 6) and not any(u.final for u, _, _ in updates[:-1])
    assert np.abs(final.tags.probabilities - whole["clipwise_output"]).max() <= TOLERANCE  # window=None: the clip
    # every row is emitted as soon as it is final: before the block that brought it, it had
    # waited less than margin + hop - step samples since its segment's audio ended (at most
    # margin + hop); and never before the margin past it had arrived
    first = 0
    for u, before, after in updates[:-1]:
        assert u.first_frame == first
        for segment in range(first // 32, (first + len(u.framewise)) // 32):
            assert before < (segment + 1) * step + margin + hop - step and after >= (segment + 1) * step + margin
        first += len(u.framewise)
    assert len(updates) >= len(x) // hop - 3
    # events on the final rows equal the offline ones
    online = sorted((e for u, _, _ in updates for e in u.events), key=lambda e: (e.onset, e.label, e.offset))
    expected = offline.events()
    assert expected and [(e.onset, e.offset, e.label) for e in online] == \
        [(e.onset, e.offset, e.label) for e in expected]


@requires_fixtures
def test_rows_emitted_before_the_end_never_change(plain_tagger):
    """A stream cut short emits, before its end, exactly the rows the longer stream emits:
    nothing that arrives later changes a row once it is out."""
    tagger = plain_tagger("Cnn14_DecisionLevelAtt")
    x = _signal(8.0)
    full = [u for u in tagger.stream([x], window=2.0, hop=2.0)]
    cut = [u for u in tagger.stream([x[:int(5.9 * RATE)]], window=2.0, hop=2.0)]
    early = np.concatenate([u.framewise for u in cut if not u.final])
    later = np.concatenate([u.framewise for u in full])
    assert len(early) >= 380 and np.array_equal(early, later[:len(early)])
    tags = [u.tags.probabilities.tobytes() for u in full]
    assert [u.tags.probabilities.tobytes() for u in cut[:-1]] == tags[:len(cut) - 1]


@requires_fixtures
def test_window_tags_pool_the_final_rows_of_the_window(plain_tagger):
    tagger = plain_tagger("Cnn14_DecisionLevelMax")
    x = _signal(8.0)
    updates = list(tagger.stream([x[i:i + 5000] for i in range(0, len(x), 5000)], window=2.0, hop=1.0))
    rows = np.concatenate([u.framewise for u in updates])
    assert len(updates) == 7 and updates[4].start > 0      # a sliding window, not everything so far
    for u in updates:
        a, b = int(round(u.start * 100)), min(len(rows), int(round(u.end * 100)) + (1 if u.final else 0))
        assert np.abs(u.tags.probabilities - rows[a:b].max(axis=0)).max() <= 1e-6   # max pooling of its rows


@requires_fixtures
@pytest.mark.parametrize("seconds", [0.2, 2.0])
def test_streams_shorter_than_one_chunk_equal_offline_at_the_end(plain_tagger, seconds):
    tagger = plain_tagger("Cnn14_DecisionLevelAtt")
    x = _signal(seconds)                                     # 0.2 s: shorter than the network's minimum
    updates = list(tagger.stream((x[i:i + 317] for i in range(0, len(x), 317)), window=None))
    assert len(updates) == 1 and updates[0].final
    offline = tagger.framewise(x)
    assert updates[0].framewise.shape == offline.probabilities.shape
    assert np.abs(updates[0].framewise - offline.probabilities).max() <= TOLERANCE
    assert np.abs(updates[0].tags.probabilities - tagger.tag(x).probabilities).max() <= TOLERANCE


@requires_fixtures
def test_clip_level_tags_and_embedding_at_the_end_equal_offline(fixture_checkpoint, labels_csv):
    from panns_infer import AudioTagger

    tagger = AudioTagger(fixture_checkpoint("Cnn6"), labels=labels_csv, device="cpu")
    x = _signal(6.0)
    updates = list(tagger.stream([x[i:i + 3000] for i in range(0, len(x), 3000)], window=None, hop=0.5,
                                 embeddings=True))
    assert [u.end for u in updates[:2]] == [0.48, 0.96] and updates[-1].final
    assert np.abs(updates[-1].tags.probabilities - tagger.tag(x).probabilities).max() <= 1e-5
    emb = tagger.embed(x)
    emb = getattr(emb, "vector", emb)
    assert np.abs(updates[-1].embedding - np.asarray(emb)).max() <= 1e-4 * max(1.0, float(np.abs(emb).max()))


@requires_fixtures
def test_ctrl_c_inside_the_network_loses_no_rows(plain_tagger, monkeypatch):
    tagger = plain_tagger("Cnn14_DecisionLevelMax")
    engine = tagger._engine
    real, calls = engine.chunk_steps, []

    def interrupted_once(chunks):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(chunks)

    monkeypatch.setattr(engine, "chunk_steps", interrupted_once)
    x = _signal(6.0)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        for u in tagger.stream([x[i:i + RATE] for i in range(0, len(x), RATE)], hop=1.0):
            seen.append(u)
    monkeypatch.setattr(engine, "chunk_steps", real)
    rows = np.concatenate([u.framewise for u in seen])
    received = int(round(seen[-1].end * RATE))  # the stream ends where Ctrl-C came: what had arrived
    assert seen[-1].final and 3 * RATE <= received < len(x)
    offline = tagger.framewise(x[:received]).probabilities
    assert rows.shape == offline.shape and np.abs(rows - offline).max() <= TOLERANCE


@requires_fixtures
@pytest.mark.slow
def test_memory_is_flat_over_an_hour(plain_tagger, monkeypatch):
    import tracemalloc

    tagger = plain_tagger("Cnn14_DecisionLevelMax")
    engine = tagger._engine
    rows = torch.from_numpy(np.random.default_rng(0).random((64, 527)).astype(np.float32))

    def stand_in(chunks):  # a stand-in network: the streaming machinery is what is measured
        out = []
        for c in chunks:
            end = c.keep_to if c.keep_to is not None else (len(c.samples) // 320 + 1) // 32
            index = (np.arange(c.keep_from, end) + c.start // 10240) % 64
            out.append({"segmentwise_output": rows[index][None]})
        return out

    monkeypatch.setattr(engine, "chunk_steps", stand_in)
    second = np.zeros(RATE, dtype=np.float32)
    tracemalloc.start()
    try:
        sizes, count, frames = {}, 0, 0
        for u in tagger.stream((second for _ in range(3600)), window=10.0, hop=1.0, events={"threshold": 0.9}):
            count += 1
            frames += len(u.framewise)
            if count in (600, 3500):
                sizes[count] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert count >= 3700 and frames == 3600 * 100 + 1
    assert sizes[3500] - sizes[600] < 2_000_000, sizes   # bytes: no growth with the stream's length
