"""One AudioTagger shared between threads gives the results it gives one call at a time.

Inference only reads the model (eval mode, ``torch.inference_mode``, no state kept between
calls) and the default label list is loaded once under a lock, so sharing is safe. These tests
run four threads at once, released together by a barrier, on different kinds of input
(arrays, batches, files that need resampling, long clips that run as windows, and inputs that
fail) and compare every result with the single-threaded one.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile
import torch

from conftest import requires_fixtures
from panns_infer import AudioTagger
from panns_infer.errors import InvalidAudioError

pytestmark = requires_fixtures

THREADS = 4
ROUNDS = 3
# Same inputs, same batch shapes: only the thread differs. CPU results are bit-identical; on
# CUDA (H200) cuDNN picks kernels per call and results moved by up to 7e-7.
TOLERANCE = {"cpu": 1e-6, "cuda": 1e-5}


def _noise(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def _devices():
    yield "cpu"
    yield pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


@pytest.fixture(scope="module", params=list(_devices()))
def tagger(request, fixture_checkpoint, labels_csv) -> AudioTagger:
    return AudioTagger(fixture_checkpoint("Cnn6"), device=request.param, labels=labels_csv, whole_up_to=0)


def _jobs(folder):
    """One job per thread: a callable on the tagger that returns arrays to compare."""
    wav = folder / "a_44k.wav"
    soundfile.write(wav, _noise(44100, 1), 44100, subtype="FLOAT")
    mono = _noise(32000, 2)
    batch = np.stack([_noise(22000, s) for s in (3, 4, 5)])
    mixed = [_noise(1600, 6), _noise(12 * 32000, 7), str(wav)]  # padded, windowed (> 10 s), resampled file
    nan = np.where(np.arange(8000) == 3, np.nan, _noise(8000, 8))

    def one_clip(t):
        return [t.tag(mono).probabilities, t.embed(mono)]

    def a_batch(t):
        return [tags.probabilities for tags in t.tag(batch)] + [t.embed(batch)]

    def a_list(t):
        return [tags.probabilities for tags in t.tag(mixed)]

    def errors_between_good_calls(t):
        with pytest.raises(InvalidAudioError, match="NaN"):
            t.tag(nan)
        out = [t.tag(str(wav)).probabilities, t.tag(mono[:5000], sample_rate=16000).probabilities]
        with pytest.raises(InvalidAudioError, match="NaN"):
            t.tag([mono, nan])
        return out

    return [one_clip, a_batch, a_list, errors_between_good_calls]


def test_four_threads_share_one_tagger(tagger, tmp_path):
    jobs = _jobs(tmp_path)
    expected = [job(tagger) for job in jobs]  # one at a time, on this thread
    barrier = threading.Barrier(THREADS)

    def worker(job):
        barrier.wait(timeout=60)
        return [job(tagger) for _ in range(ROUNDS)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(worker, jobs, timeout=300))
    for job, want, got in zip(jobs, expected, results):
        for round_result in got:
            assert len(round_result) == len(want)
            for a, b in zip(want, round_result):
                assert a.shape == b.shape and np.isfinite(b).all()
                assert np.abs(a - b).max() <= TOLERANCE[tagger.device.type], job.__name__


def test_the_default_labels_load_once_under_concurrent_first_use(fixture_checkpoint, labels_csv, monkeypatch):
    """Without ``labels=``, the AudioSet list is read on first use; racing threads read it once."""
    from panns_infer import hub
    from panns_infer import tagger as tagger_module

    target = hub.cache_dir() / "labels" / "class_labels_indices.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(labels_csv, target)
    real, calls = tagger_module.read_labels_csv, []

    def slow_read(*args, **kwargs):  # widen the window in which a missing lock would show
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(tagger_module, "read_labels_csv", slow_read)
    shared = AudioTagger(fixture_checkpoint("Cnn6"), device="cpu", offline=True)
    barrier = threading.Barrier(8)

    def first_use(_):
        barrier.wait(timeout=60)
        return shared.labels

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(first_use, range(8), timeout=120))
    assert len(calls) == 1
    assert all(names is seen[0] for names in seen) and len(seen[0]) == 527 and seen[0][0] == "Speech"
