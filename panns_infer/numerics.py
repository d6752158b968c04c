"""The numerics of a forward pass on CUDA, set through torch's process-global switches without
letting concurrent threads, or the user's own code, change what a pass computes.

``torch.backends.cuda.matmul.allow_tf32`` and the cuDNN flags are process-wide, not per
thread. Setting and restoring them around each forward pass, as a plain context manager
would, breaks with threads: a ``tf32`` pass in one thread switches TF32 on under a
concurrent ``fp32`` pass (silently inexact), and whichever pass restores last leaves its
own saved value behind for the rest of the program. So here:

* every pass enters :func:`precision_scope`, which holds one process-wide condition: passes
  of the same precision share the switches (a count of passes inside), a pass of another
  precision waits until the last of them has left (and new passes of the first precision
  wait behind it), so ``fp32`` never runs while a ``tf32`` setting is in force;
* the user's values are saved when the first pass enters and put back when the last one
  leaves, except a switch the user changed meanwhile, whose new value is kept;
* code outside this module (the user's) can still flip a switch while a pass runs; the scope
  notices (:meth:`Scope.run` compares the switches after each call), records the user's new
  value, sets its own again and runs the call once more, so an ``fp32`` result is never one
  computed in TF32.

On the CPU none of these switches affects the result and the scope does nothing.

>>> with precision_scope(torch.device("cpu"), "fp32") as scope:
...     scope.run(lambda x: x + 1, 1)
2
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Optional

import torch

from .errors import PannsError

__all__ = ["PRECISIONS", "precision_scope", "Scope", "SWITCHES"]

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


def _matmul_tf32() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32)


def _set_matmul_tf32(value: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = value


def _cudnn(name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    return (lambda: getattr(torch.backends.cudnn, name)), (lambda value: setattr(torch.backends.cudnn, name, value))


# name -> (read, write) of each process-global switch a precision sets
SWITCHES: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "matmul_allow_tf32": (_matmul_tf32, _set_matmul_tf32),
    "cudnn_enabled": _cudnn("enabled"),
    "cudnn_allow_tf32": _cudnn("allow_tf32"),
    "cudnn_benchmark": _cudnn("benchmark"),
}

# What each precision needs. fp32 runs convolutions without cuDNN: with TF32 off, cuDNN
# picked FFT kernels 2.5x slower than PyTorch's own float32 GEMM path on an H200 (batch 8),
# and with TF32 on, probabilities moved by ~2e-3.
_SETTINGS: dict[str, dict[str, Any]] = {
    "fp32": {"matmul_allow_tf32": False, "cudnn_enabled": False, "cudnn_allow_tf32": False},
    "tf32": {"matmul_allow_tf32": True, "cudnn_enabled": True, "cudnn_allow_tf32": True},
    "fp16": {"matmul_allow_tf32": False, "cudnn_enabled": True, "cudnn_benchmark": True},
    "bf16": {"matmul_allow_tf32": False, "cudnn_enabled": True, "cudnn_benchmark": True},
}

# A call is repeated at most this often when other code keeps flipping the switches under it.
_MAX_RUNS = 8


class NumericsError(PannsError, RuntimeError):
    """Other code kept changing torch's global precision switches during a forward pass."""


class _State:
    """The process-wide bookkeeping: which precision is in force, for how many passes, and
    the user's values to put back."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.mode: Optional[str] = None
        self.count = 0
        self.saved: dict[str, Any] = {}
        self.waiting: dict[str, int] = dict.fromkeys(PRECISIONS, 0)
        self.turn: Optional[str] = None  # the precision that waited and goes next

    def may_enter(self, precision: str) -> bool:
        """Nobody inside and it is this precision's turn (or nobody's), or passes of the same
        precision inside and none of another waiting (so a stream of ``tf32`` passes cannot
        starve an ``fp32`` one)."""
        if not self.count:
            return self.turn in (None, precision)
        return self.mode == precision and not any(n for m, n in self.waiting.items() if m != precision)


_STATE = _State()


class Scope:
    """Handle of a pass inside :func:`precision_scope`; :meth:`run` makes its calls."""

    def __init__(self, precision: str, managed: bool) -> None:
        self.precision = precision
        self.managed = managed

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, repeated if a switch was changed from outside while it ran (the
        kernels it launched may have read the changed value).

        Raises:
            NumericsError: the switches changed during every one of several attempts.
        """
        if not self.managed:
            return fn(*args)
        for _ in range(_MAX_RUNS):
            out = fn(*args)
            with _STATE.cond:
                if _reassert(self.precision):
                    return out
        raise NumericsError(f"torch's precision switches ({', '.join(_SETTINGS[self.precision])}) were changed "
                            f"by other code during {_MAX_RUNS} forward passes in a row; a {self.precision} "
                            "result cannot be guaranteed. Do not change them while inference runs.")


def _reassert(precision: str) -> bool:
    """Under the lock: whether every switch still has ``precision``'s value. A switch that does
    not is the user's change: remember it as the value to put back, and set ours again."""
    intact = True
    for name, value in _SETTINGS[precision].items():
        read, write = SWITCHES[name]
        current = read()
        if current != value:
            intact = False
            _STATE.saved[name] = current
            write(value)
    return intact


@contextlib.contextmanager
def precision_scope(device: torch.device, precision: str, *, managed: Optional[bool] = None) -> Iterator[Scope]:
    """Set ``precision``'s switches for the passes made inside (through :meth:`Scope.run`).

    Args:
        device: where the passes run; the switches are managed on CUDA only.
        precision: one of :data:`PRECISIONS`.
        managed: manage the switches whatever the device (tests use it on CPU builds, where
            the switches exist but change nothing).

    >>> with precision_scope(torch.device("cpu"), "fp32", managed=True) as scope:
    ...     scope.run(lambda: torch.backends.cuda.matmul.allow_tf32)
    False
    """
    if managed is None:
        managed = device.type == "cuda"
    if not managed:
        yield Scope(precision, False)
        return
    settings = _SETTINGS[precision]
    with _STATE.cond:
        if not _STATE.may_enter(precision):
            _STATE.waiting[precision] += 1
            try:
                _STATE.cond.wait_for(lambda: _STATE.may_enter(precision))
            finally:
                _STATE.waiting[precision] -= 1
        if not _STATE.count:
            _STATE.mode = precision
            _STATE.turn = None
            _STATE.saved = {name: SWITCHES[name][0]() for name in settings}
            for name, value in settings.items():
                SWITCHES[name][1](value)
        _STATE.count += 1
    try:
        if precision in ("fp16", "bf16"):
            dtype = torch.float16 if precision == "fp16" else torch.bfloat16
            with torch.autocast(device.type, dtype=dtype):  # per thread
                yield Scope(precision, True)
        else:
            yield Scope(precision, True)
    finally:
        with _STATE.cond:
            _STATE.count -= 1
            if not _STATE.count:
                for name, value in settings.items():
                    read, write = SWITCHES[name]
                    if read() == value:  # else the user set it since: their value stays
                        write(_STATE.saved[name])
                others = [m for m, n in _STATE.waiting.items() if n and m != _STATE.mode]
                _STATE.turn = others[0] if others else None
                _STATE.mode = None
                _STATE.cond.notify_all()
