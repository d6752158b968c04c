"""Export a checkpoint's network to ONNX, checked against PyTorch with onnxruntime.

Needs the optional extra: ``pip install 'panns-infer[onnx]'`` (onnx, onnxscript and
onnxruntime). The exported graph is the plain network (not the CPU fast path, whose packed
oneDNN kernels have no ONNX form), traced with ``torch.onnx.export(dynamo=True)``:

* input ``waveform``: float32 ``(batch, samples)`` mono audio at the model's sample rate
  (32 kHz for most checkpoints), batch and length dynamic;
* outputs named as :meth:`panns_infer.AudioTagger.infer`'s keys: ``clipwise_output``, and
  ``embedding`` or ``framewise_output`` where the architecture has them.

The graph runs inputs of a length the architecture accepts, as the reference does:
``samples >= min_samples`` (:func:`panns_infer.list_models` lists them), and for
Wavegram_Logmel_Cnn14 a length from :func:`input_length`; architectures whose shape arithmetic
the exporter cannot keep symbolic get a fixed input length (see :func:`to_onnx`).
:func:`input_length` gives the length to zero-pad a clip to, the padding
:class:`panns_infer.AudioTagger` applies itself.

>>> from panns_infer.export import to_onnx                                   # doctest: +SKIP
>>> to_onnx("Cnn14", "cnn14.onnx")                                           # doctest: +SKIP
PosixPath('cnn14.onnx')
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import uuid
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .errors import PannsError, UnsupportedOperationError
from .models import PannsModel
from .transfer import resolve_model

__all__ = ["to_onnx", "input_length", "ExportError"]

logger = logging.getLogger("panns_infer")

PathLike = Union[str, os.PathLike]

_EXTRA = "pip install 'panns-infer[onnx]' (onnx, onnxscript, onnxruntime)"
# Largest |difference| allowed between onnxruntime and PyTorch in the export check: the
# project's parity tolerance on probabilities (embeddings: 1e-3, relative to their scale).
CHECK_TOL = 1e-4


class ExportError(PannsError, RuntimeError):
    """The network could not be exported, or the exported graph does not compute its outputs."""


def input_length(model: PannsModel, num_samples: int) -> int:
    """The length a clip of ``num_samples`` is zero-padded to before the exported graph
    (what :class:`panns_infer.AudioTagger` does before the network).

    >>> from panns_infer.models import build_model
    >>> input_length(build_model("Cnn14"), 100), input_length(build_model("Cnn14"), 320_000)
    (9920, 320000)
    """
    return model.target_length(num_samples)


class _Outputs(torch.nn.Module):
    """``model.forward_valid`` with its dict flattened to a tuple in a fixed order."""

    def __init__(self, model: PannsModel, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_valid(waveform)
        return tuple(out[name] for name in self.names)


def to_onnx(checkpoint: Union[PathLike, str], path: PathLike, *, arch: Optional[str] = None,
            samples: Optional[int] = None, check: bool = True, offline: Optional[bool] = None) -> Path:
    """Write ``checkpoint``'s network as an ONNX model to ``path``.

    Args:
        checkpoint: what :class:`panns_infer.AudioTagger` accepts (registry name, file name,
            path or URL).
        path: the ``.onnx`` file to write (weights included). It is written to a temporary
            file beside it and renamed when complete and checked, so an existing file is never
            left half-written.
        arch: override the architecture detected from the state dict.
        samples: a fixed input length (padded up with :func:`input_length`). By default the
            length is dynamic where the exporter can keep the network's shape arithmetic
            symbolic and onnxruntime runs every length (Cnn6/10/14 and the clip-level CNN14
            variants, ResNets, MobileNets); the others (decision-level CNN14s, Wavegrams,
            LeeNets, DaiNet19, Res1dNets: shape arithmetic the exporter specialises) get a
            fixed 10 s input, with a warning.
        check: run the exported graph with onnxruntime on random clips (batch 2; two lengths
            when dynamic) and compare with PyTorch: at most 1e-4 on probabilities, 1e-4 of
            their largest value on embeddings.
        offline: never touch the network (a registry name must then be cached).

    Returns:
        ``path``.

    Raises:
        UnsupportedOperationError: the ``onnx`` extra is not installed.
        ExportError: the exporter failed, or the check found different outputs.
    """
    missing = [name for name in ("onnx", "onnxscript") + (("onnxruntime",) if check else ())
               if importlib.util.find_spec(name) is None]
    if missing:
        raise UnsupportedOperationError(f"ONNX export needs {', '.join(missing)} (the optional extra): {_EXTRA}"
                                        + ("; or pass check=False" if missing == ["onnxruntime"] else ""))
    model = resolve_model(checkpoint, arch=arch, offline=offline).eval()
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.incomplete")
    try:
        if samples is None:
            try:
                names = _export(model, tmp, None)
                if check:
                    _check(model, names, tmp, None)
            except ExportError as exc:
                fixed = input_length(model, 10 * model.sample_rate)
                logger.warning("%s: no ONNX graph with a dynamic input length (%s); exporting a fixed "
                               "input of %d samples", model.arch, _short(exc), fixed)
                samples = fixed
        if samples is not None:
            samples = input_length(model, int(samples))
            names = _export(model, tmp, samples)
            if check:
                _check(model, names, tmp, samples)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    logger.info("exported %s to %s", model.arch, target)
    return target


def _short(exc: BaseException) -> str:
    """The first line of an exporter message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0]
    return text.split(" This is step")[0][:200]


def _export(model: PannsModel, dest: Path, samples: Optional[int]) -> list[str]:
    """Trace ``model`` (input length ``samples``, or dynamic) and write it to ``dest``; return
    the output names in graph order."""
    # 10 s: long enough that no traced size is 1 (the exporter would specialise it)
    probe = torch.zeros(2, samples or input_length(model, 10 * model.sample_rate))
    with torch.no_grad():
        names = sorted(model.forward_valid(probe))
    wrapper = _Outputs(model, names).eval()
    dims = {0: torch.export.Dim("batch", min=1)}
    if samples is None:
        dims[1] = torch.export.Dim("samples", min=model.min_samples)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (probe,), str(dest), dynamo=True, input_names=["waveform"],
                              output_names=names, dynamic_shapes={"waveform": dims},
                              external_data=False)  # one self-contained file (< 2 GB for every PANN)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"exporting {model.arch} to ONNX failed: {type(exc).__name__}: {exc}") from exc
    return names


def _check(model: PannsModel, names: list[str], onnx_path: Path, samples: Optional[int]) -> None:
    """Compare onnxruntime with PyTorch on random clips (two lengths unless ``samples``)."""
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(0)
    lengths = [samples] if samples else [input_length(model, int(s * model.sample_rate)) for s in (3.7, 10.0)]
    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        runs = []
        for n in lengths:
            x = torch.randn(2, n, generator=gen) * 0.1
            runs.append((x, session.run(names, {"waveform": x.numpy()})))
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common base
        raise ExportError(f"onnxruntime cannot run the exported {model.arch}: {type(exc).__name__}: {exc}") from exc
    for x, got in runs:
        with torch.no_grad():
            want = model.forward_valid(x)
        for name, value in zip(names, got):
            ref = want[name].numpy()
            scale = max(1.0, float(np.abs(ref).max())) if name == "embedding" else 1.0
            if value.shape != ref.shape:
                raise ExportError(f"the exported {model.arch} gives {name} of shape {value.shape}, "
                                  f"PyTorch {ref.shape}")
            err = float(np.abs(value - ref).max())
            if not err <= CHECK_TOL * scale:
                raise ExportError(f"the exported {model.arch} differs from PyTorch on {name} by {err:.3g} "
                                  f"(allowed {CHECK_TOL * scale:.3g})")
