"""Tests for panns_infer.transfer (PannsBackbone, AudioClassifier) and examples/finetune.py."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import load_goldens, requires_fixtures
from panns_infer import AudioTagger
from panns_infer.augment import SpecAugment
from panns_infer.errors import (
    CheckpointNotFoundError,
    InvalidArgumentError,
    InvalidAudioError,
    OfflineError,
    PannsError,
    UnsupportedOperationError,
)
from panns_infer.models import build_model
from panns_infer.transfer import FRAME_ARCHITECTURES, AudioClassifier, PannsBackbone

ROOT = Path(__file__).resolve().parents[1]


def _wave(seconds: float, seed: int = 0, rate: int = 32000) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy((0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32))


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


# --- parity with AudioTagger.embed and the reference ---------------------------------------------


@requires_fixtures
def test_cnn14_embedding_matches_reference_golden(fixture_checkpoint):
    _, outputs, waves = load_goldens("Cnn14")
    wave = waves["real_7s"]
    backbone = PannsBackbone(str(fixture_checkpoint("Cnn14")))
    with torch.no_grad():
        emb = backbone(torch.from_numpy(wave)[None])[0].numpy()
    np.testing.assert_allclose(emb, outputs["real_7s/embedding"], rtol=0, atol=1e-3)
    assert backbone.output_size == 2048


@requires_fixtures
@pytest.mark.parametrize("samples", [100, 20_000])  # shorter than Cnn6's minimum (padded), and longer
def test_embedding_equals_audio_tagger_embed(fixture_checkpoint, samples):
    path = fixture_checkpoint("Cnn6")
    wave = _wave(samples / 32000, seed=samples)
    emb = PannsBackbone(path)(wave[None])[0].detach().numpy()
    ref = AudioTagger(path, device="cpu").embed(wave.numpy())
    np.testing.assert_allclose(emb, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))


# --- freezing ------------------------------------------------------------------------------------


@requires_fixtures
def test_frozen_backbone_is_unchanged_by_a_training_step(fixture_checkpoint):
    model = AudioClassifier(PannsBackbone(fixture_checkpoint("Cnn6")), num_classes=3)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    before = _snapshot(model)
    model.train()
    assert model.training and model.backbone.training
    assert not model.backbone.model.training  # batch norm keeps using its running statistics
    # an optimizer over *all* parameters, with weight decay and momentum, still must not move them
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    logits = model(torch.stack([_wave(0.5, s) for s in range(4)]))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    assert _changed(before, _snapshot(model)) == {"head.weight", "head.bias"}
    assert all(p.grad is None for p in model.backbone.parameters())


@requires_fixtures
def test_unfrozen_backbone_trains_and_updates_batch_norm(fixture_checkpoint):
    path = fixture_checkpoint("Cnn6")
    file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    model = AudioClassifier(PannsBackbone(path), num_classes=3).unfreeze()
    before = _snapshot(model)
    model.train()
    assert model.backbone.model.training
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    logits = model(torch.stack([_wave(0.5, s) for s in range(4)]))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    changed = _changed(before, _snapshot(model))
    assert {"backbone.model.conv_block1.conv1.weight", "backbone.model.fc1.weight",
            "backbone.model.bn0.running_mean", "backbone.model.conv_block4.bn1.running_var",
            "head.weight"} <= changed
    # fixed front-end matrices and the unused AudioSet classifier never train
    assert not any(k.startswith(("backbone.model.logmel_extractor", "backbone.model.spectrogram_extractor",
                                 "backbone.model.fc_audioset")) for k in changed)
    assert model.backbone.model.fc_audioset.weight.grad is None
    # the weights were loaded memory-mapped: training must never write through to the file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == file_hash

    model.freeze()  # and back: frozen again, no gradients kept, network back in eval mode
    assert model.training and not model.backbone.model.training
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())


def test_frozen_forward_keeps_no_graph_but_passes_input_gradients():
    backbone = PannsBackbone(build_model("Cnn6"))
    assert not backbone(_wave(0.3)[None]).requires_grad
    wave = _wave(0.3)[None].requires_grad_()
    backbone(wave).sum().backward()  # the front end is differentiable down to the samples
    assert wave.grad is not None and float(wave.grad.abs().sum()) > 0


# --- outputs -------------------------------------------------------------------------------------


@requires_fixtures
def test_frames_are_the_trunk_before_clip_pooling(fixture_checkpoint):
    path = fixture_checkpoint("Cnn6")
    frames_model = PannsBackbone(path, output="frames")
    emb_model = PannsBackbone(path)
    wave = torch.stack([_wave(2.0, 1), _wave(2.0, 2)])
    with torch.no_grad():
        frames, emb = frames_model(wave), emb_model(wave)
    assert frames.shape == (2, (64000 // 320 + 1) // 16, 512)
    assert frames_model.output_size == 512 and frames_model.frame_hop == 16 * 320
    assert len(frames_model.frame_times(num_samples=64000)) == frames.shape[1]
    np.testing.assert_array_equal(frames_model.frame_times(num_frames=frames.shape[1]),
                                  frames_model.frame_times(num_samples=64000))
    for bad in ({}, {"num_frames": 3, "num_samples": 9}, {"num_frames": -1}, {"num_samples": 2.5}):
        with pytest.raises(InvalidArgumentError):
            frames_model.frame_times(**bad)
    with pytest.raises(InvalidArgumentError, match="positional"):
        frames_model.frame_times(6)  # a frame count or a sample count? refused, not guessed
    # the clip head pools the frames: max + mean over time, fc1, ReLU
    fc1 = frames_model.model.fc1
    pooled = torch.relu(fc1(frames.amax(dim=1) + frames.mean(dim=1)))
    torch.testing.assert_close(pooled, emb, rtol=0, atol=1e-4)
    # with the default head, frames give per-step logits
    assert AudioClassifier(frames_model, 5)(wave).shape == (2, frames.shape[1], 5)


def test_frames_for_every_cnn_family_arch_and_only_those():
    assert set(FRAME_ARCHITECTURES) >= {"Cnn6", "Cnn10", "Cnn14", "Cnn14_16k", "Cnn14_DecisionLevelMax"}
    with pytest.raises(UnsupportedOperationError, match="CNN family") as info:
        PannsBackbone(build_model("MobileNetV1"), output="frames")
    assert isinstance(info.value, PannsError)
    with pytest.raises(UnsupportedOperationError, match="decision-level"):
        PannsBackbone(build_model("Cnn14_DecisionLevelAtt"))
    # a decision-level CNN still has a trunk: frames work
    assert PannsBackbone(build_model("Cnn14_DecisionLevelAtt"), output="frames").output_size == 2048


def test_other_families_give_embeddings():
    backbone = PannsBackbone(build_model("MobileNetV1"))
    assert backbone(_wave(0.5)[None]).shape == (1, 1024)


# --- SpecAugment inside the backbone -------------------------------------------------------------


@requires_fixtures
def test_spec_augment_applies_in_training_mode_only(fixture_checkpoint):
    path = fixture_checkpoint("Cnn6")
    plain = PannsBackbone(path)
    seen = []
    augmented = PannsBackbone(path, spec_augment=SpecAugment(generator=torch.Generator().manual_seed(0)))
    augmented.model.conv_block1.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].clone()))
    wave = torch.stack([_wave(1.0, 3), _wave(1.0, 4)])
    with torch.no_grad():
        ref = plain(wave)
        torch.testing.assert_close(augmented(wave), ref, rtol=0, atol=0)  # eval: untouched
        assert not (seen[-1] == 0).all(dim=3).any()
        out = augmented.train()(wave)  # frozen backbone in train mode: masks, but BN frozen
    masked_frames = (seen[-1] == 0).all(dim=3)  # (B, 1, T): whole frames set to 0 after bn0
    assert masked_frames.any()
    assert not torch.allclose(out, ref, atol=1e-3)
    augmented.eval()
    with torch.no_grad():
        torch.testing.assert_close(augmented(wave), ref, rtol=0, atol=0)
    # the network used alone (outside the backbone's forward) is never augmented
    augmented.train()
    with torch.no_grad():
        torch.testing.assert_close(augmented.model(wave)["embedding"], ref, rtol=0, atol=0)


def test_spec_augment_needs_a_logmel_front_end():
    with pytest.raises(UnsupportedOperationError, match="log-mel"):
        PannsBackbone(build_model("LeeNet11"), spec_augment=SpecAugment())
    with pytest.raises(InvalidArgumentError):
        PannsBackbone(build_model("Cnn6"), spec_augment=lambda x: x)


def test_deep_copied_backbone_augments_its_own_copy():
    backbone = PannsBackbone(build_model("Cnn6"), spec_augment=SpecAugment())
    clone = copy.deepcopy(backbone).train()
    seen = []
    clone.model.conv_block1.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    with torch.no_grad():
        clone(_wave(1.0)[None])
    assert (seen[0] == 0).all(dim=3).any()


# --- saving and loading --------------------------------------------------------------------------


@requires_fixtures
def test_state_dict_round_trip_with_weights_only(fixture_checkpoint, tmp_path):
    model = AudioClassifier(PannsBackbone(fixture_checkpoint("Cnn6")), num_classes=4).unfreeze()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    wave = torch.stack([_wave(0.5, s) for s in range(3)])
    model.train()
    nn.functional.cross_entropy(model(wave), torch.tensor([0, 1, 3])).backward()
    optimizer.step()
    model.eval()
    torch.save(model.state_dict(), tmp_path / "clf.pt")

    fresh = AudioClassifier(PannsBackbone(build_model("Cnn6")), num_classes=4)  # untrained weights
    fresh.load_state_dict(torch.load(tmp_path / "clf.pt", weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(fresh(wave), model(wave), rtol=0, atol=0)


# --- checkpoint references and argument checks ---------------------------------------------------


@requires_fixtures
def test_backbone_from_url(fixture_checkpoint, loopback_server):
    url = loopback_server.serve("/weights/Cnn6_finetuned.pth", fixture_checkpoint("Cnn6").read_bytes())
    assert PannsBackbone(url).arch == "Cnn6"


def test_registry_name_goes_through_the_cache_and_offline_mode():
    with pytest.raises(OfflineError, match="Cnn6"):
        PannsBackbone("Cnn6", offline=True)


def test_bad_references_and_arguments_raise_typed_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        PannsBackbone(str(tmp_path / "missing.pth"))
    with pytest.raises(InvalidArgumentError, match="output"):
        PannsBackbone(build_model("Cnn6"), output="logits")
    backbone = PannsBackbone(build_model("Cnn6"))
    with pytest.raises(InvalidAudioError):
        backbone(torch.zeros(32000))
    with pytest.raises(InvalidAudioError):
        backbone(torch.zeros(2, 32000, dtype=torch.int16))
    with pytest.raises(InvalidArgumentError):
        AudioClassifier(nn.Linear(3, 3), 2)
    with pytest.raises(InvalidArgumentError):
        AudioClassifier(backbone, 0)


def test_custom_head():
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(512, 7))
    model = AudioClassifier(PannsBackbone(build_model("Cnn6")), 7, head=head)
    assert model.head is head
    assert model(_wave(0.2)[None]).shape == (1, 7)


# --- the example ---------------------------------------------------------------------------------


@requires_fixtures
def test_finetune_example_loss_falls(fixture_checkpoint):
    spec = importlib.util.spec_from_file_location("finetune_example", ROOT / "examples" / "finetune.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    lines = []
    results = example.run(str(fixture_checkpoint("Cnn6")), quick=True, seed=0, report=lines.append)
    frozen, full = results["frozen"], results["full"]
    assert frozen["train_loss_after"] < 0.8 * frozen["train_loss_before"]
    assert frozen["train_loss_before"] == pytest.approx(np.log(4), abs=0.1)  # untrained head: chance
    assert np.isfinite(full["losses"]).all() and len(full["losses"]) == 3
    assert any("test accuracy" in line for line in lines)
