"""Parity with the reference implementation: for every architecture with goldens, every
golden case, every checkpoint layout, alone and batched, our outputs equal the reference's
within 1e-4 on probabilities and 1e-3 on embeddings. Tolerances are never widened."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FIXTURES, HAVE_FIXTURES, load_goldens, make_checkpoint_module, requires_fixtures
from panns_infer import AudioTagger
from panns_infer.models import list_architectures

PROB_TOL = 1e-4
EMB_TOL = 1e-3
BATCH_TOL = 1e-5  # probabilities: absolute; embeddings: relative to the vector's largest |value|
LAYOUTS = ("zenodo", "plain", "bare")


def _golden_archs() -> list[str]:
    if not HAVE_FIXTURES:
        return ["(fixtures absent)"]
    have = {p.stem for p in (FIXTURES / "goldens").glob("*.json")}
    return [a for a in list_architectures() if a in have]


def _tolerance(output: str) -> float:
    return EMB_TOL if output == "embedding" else PROB_TOL


def _compare(ours: dict, gold: dict, case: str, outputs: list[str], where: str) -> None:
    for output in outputs:
        expected = gold[f"{case}/{output}"]
        got = ours[output]
        assert got.shape == expected.shape, f"{where} {case}/{output}: shape {got.shape} != {expected.shape}"
        err = float(np.abs(got - expected).max())
        assert err <= _tolerance(output), f"{where} {case}/{output}: max |diff| {err:.3g}"


def assert_batch_invariant(batched: np.ndarray, alone: np.ndarray, output: str, where: str) -> None:
    """Batching may not change a result by more than float32 rounding of another kernel choice:
    1e-5 on probabilities, 1e-5 of the largest magnitude on embeddings (which reach ~25)."""
    scale = max(1.0, float(np.abs(alone).max())) if output == "embedding" else 1.0
    err = float(np.abs(batched - alone).max())
    assert err <= BATCH_TOL * scale, f"{where} {output}: batching changed it by {err:.3g}"


@requires_fixtures
@pytest.mark.parametrize("arch", _golden_archs())
def test_parity_every_case_every_layout_alone_and_batched(arch, tmp_path, labels_csv):
    mc = make_checkpoint_module()
    info, gold, waves = load_goldens(arch)
    cases = {c: v for c, v in info["cases"].items() if "reference_error" not in v}
    assert cases, f"{arch}: no golden case the reference could run"
    _, state = mc.build_state_dict(arch)
    for layout in LAYOUTS:
        path = tmp_path / layout / f"{arch}.pth"  # the name lets detection tell DecisionLevelMax from Cnn14
        path.parent.mkdir()
        mc.save(state, path, layout)
        tagger = AudioTagger(path, device="cpu", labels=labels_csv, batch_size=3)
        assert tagger.arch == arch
        if layout == LAYOUTS[0]:  # alone, once: the layouts hold the same tensors
            alone = {}
            for case, spec in cases.items():
                (alone[case],) = tagger.infer([waves[case]])
                _compare(alone[case], gold, case, spec["outputs"], f"{arch}/{layout} alone")
        # Every layout: a batch mixing lengths and repeating clips, grouped by length.
        order = list(cases) + list(cases)[:2]
        batched = tagger.infer([waves[c] for c in order])
        for case, ours in zip(order, batched):
            _compare(ours, gold, case, cases[case]["outputs"], f"{arch}/{layout} batched")
            for output in cases[case]["outputs"]:
                assert_batch_invariant(ours[output], alone[case][output], output, f"{arch}/{layout} {case}")
        path.unlink()
        del tagger


@requires_fixtures
@pytest.mark.parametrize("arch", ["Cnn14", "Cnn14_DecisionLevelAtt", "Wavegram_Logmel_Cnn14"])
def test_public_api_matches_goldens(arch, fixture_checkpoint, labels_csv):
    info, gold, waves = load_goldens(arch)
    tagger = AudioTagger(fixture_checkpoint(arch, name=f"{arch}.pth"), device="cpu", labels=labels_csv)
    wave = waves["real_7s"]
    tags = tagger.tag(wave, top_k=5)
    err = np.abs(tags.probabilities - gold["real_7s/clipwise_output"]).max()
    assert err <= PROB_TOL
    assert tags.scores[0] == pytest.approx(gold["real_7s/clipwise_output"].max(), abs=PROB_TOL)
    if tagger.embedding_size:
        assert np.abs(tagger.embed(wave) - gold["real_7s/embedding"]).max() <= EMB_TOL
    else:
        fw = tagger.framewise(wave)
        assert np.abs(fw.probabilities - gold["real_7s/framewise_output"]).max() <= PROB_TOL
