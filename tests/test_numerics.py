"""panns_infer.numerics: torch's process-global precision switches around forward passes, with
threads. The switches exist on CPU builds too (they change nothing there), so the scopes are
forced to manage them and a slowed "forward" records what it sees."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from panns_infer import numerics
from panns_infer.numerics import SWITCHES, NumericsError, precision_scope

CPU = torch.device("cpu")


def switches() -> dict:
    return {name: read() for name, (read, _) in SWITCHES.items()}


@pytest.fixture(autouse=True)
def _restore_switches():
    """Whatever a test does, the process gets its switches back."""
    before = switches()
    yield
    for name, value in before.items():
        SWITCHES[name][1](value)


def slow_forward(seen: list, seconds: float = 0.05):
    """A forward pass that looks at the switches at its start and end, sleeping between."""
    def forward():
        seen.append(switches())
        time.sleep(seconds)
        seen.append(switches())
    return forward


def test_fp32_never_runs_while_a_concurrent_tf32_pass_is_in_force():
    torch.backends.cuda.matmul.allow_tf32 = False
    user = switches()
    seen: dict = {"fp32": [], "tf32": []}
    errors: list = []
    start = threading.Barrier(8)

    def worker(precision: str) -> None:
        try:
            start.wait()
            for _ in range(5):
                with precision_scope(CPU, precision, managed=True) as scope:
                    scope.run(slow_forward(seen[precision], 0.005))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=("fp32" if i % 2 else "tf32",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(seen["fp32"]) == len(seen["tf32"]) == 40
    assert all(not s["matmul_allow_tf32"] and not s["cudnn_enabled"] for s in seen["fp32"])
    assert all(s["matmul_allow_tf32"] and s["cudnn_enabled"] and s["cudnn_allow_tf32"] for s in seen["tf32"])
    assert switches() == user  # the user's values, not the last pass's


def test_the_users_values_come_back_whatever_they_were():
    for value in (True, False):
        torch.backends.cuda.matmul.allow_tf32 = value
        torch.backends.cudnn.benchmark = not value
        user = switches()
        for precision in numerics.PRECISIONS:
            with precision_scope(CPU, precision, managed=True) as scope:
                scope.run(lambda: None)
            assert switches() == user, precision


def test_a_switch_flipped_by_user_code_during_an_fp32_pass_reruns_it_and_stays_flipped():
    """The user's thread sets TF32 on while our fp32 pass runs: the pass runs again with TF32
    off, and after it the user's new value is in force (not the one saved before)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    seen: list = []
    calls = []

    def forward():
        calls.append(1)
        seen.append(switches()["matmul_allow_tf32"])
        if len(calls) == 1:  # the user's code, concurrently, in the middle of the first pass
            flipper = threading.Thread(target=lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", True))
            flipper.start()
            flipper.join()
        return len(calls)

    with precision_scope(CPU, "fp32", managed=True) as scope:
        assert scope.run(forward) == 2
    assert seen == [False, False]
    assert torch.backends.cuda.matmul.allow_tf32 is True


def test_a_change_after_the_last_pass_is_the_users_to_keep():
    """A switch the user sets between our last pass and the scope's end keeps their value (a
    value equal to the one the pass set cannot be told apart: the saved one comes back)."""
    torch.backends.cudnn.enabled = False
    torch.backends.cuda.matmul.allow_tf32 = False
    with precision_scope(CPU, "tf32", managed=True) as scope:
        scope.run(lambda: None)
        torch.backends.cudnn.allow_tf32 = False  # the user, between our pass and the scope's end
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.enabled is False and torch.backends.cuda.matmul.allow_tf32 is False


def test_switches_flipped_under_every_attempt_raise_a_typed_error():
    def forward():
        torch.backends.cuda.matmul.allow_tf32 = True

    with pytest.raises(NumericsError, match="changed by other code"), \
            precision_scope(CPU, "fp32", managed=True) as scope:
        scope.run(forward)
    assert isinstance(NumericsError("x"), RuntimeError)


def test_on_the_cpu_nothing_is_touched():
    torch.backends.cuda.matmul.allow_tf32 = True
    with precision_scope(CPU, "fp32") as scope:
        assert scope.run(lambda: torch.backends.cuda.matmul.allow_tf32) is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_stays_exact_next_to_a_tf32_thread():
    a = torch.randn(2048, 2048, device="cuda")
    b = torch.randn(2048, 2048, device="cuda")
    exact = (a.double() @ b.double()).float()
    torch.backends.cuda.matmul.allow_tf32 = False
    stop = threading.Event()

    def tf32_user():
        while not stop.is_set():
            with precision_scope(torch.device("cuda"), "tf32") as scope:
                scope.run(lambda: (a @ b).sum().item())

    other = threading.Thread(target=tf32_user)
    other.start()
    try:
        for _ in range(20):
            with precision_scope(torch.device("cuda"), "fp32") as scope:
                got = scope.run(lambda: a @ b)
            assert float((got - exact).abs().max()) < 1e-2  # TF32 errs by ~1e-1 here
    finally:
        stop.set()
        other.join()
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_a_stream_of_tf32_passes_does_not_starve_an_fp32_one():
    """Two threads keep overlapping tf32 passes going (so some pass is always inside); an
    fp32 pass still gets its turn, and new tf32 passes wait behind it."""
    stop = threading.Event()

    def tf32_stream():
        while not stop.is_set():
            with precision_scope(CPU, "tf32", managed=True) as scope:
                scope.run(time.sleep, 0.01)

    streams = [threading.Thread(target=tf32_stream) for _ in range(2)]
    for t in streams:
        t.start()
    try:
        time.sleep(0.05)
        entered = threading.Event()

        def fp32_pass():
            with precision_scope(CPU, "fp32", managed=True) as scope:
                assert scope.run(lambda: torch.backends.cuda.matmul.allow_tf32) is False
                entered.set()

        worker = threading.Thread(target=fp32_pass)
        worker.start()
        assert entered.wait(5), "the fp32 pass never got in"
        worker.join()
    finally:
        stop.set()
        for t in streams:
            t.join()
