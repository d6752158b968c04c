"""Figures of framewise (sound event detection) results.

matplotlib is an optional dependency (``pip install 'panns-infer[plot]'``), imported only when a
figure is drawn. The figure is built with :class:`matplotlib.figure.Figure` and the Agg canvas
directly, never through :mod:`matplotlib.pyplot`: no backend is selected globally, no figure is
kept in pyplot's registry, and nothing opens a window.

The layout follows the PANNs sound event detection demo: the ``top_k`` classes with the largest
framewise maximum, as a heat map of probability against time (one row per class, most probable
on top), under the log-mel spectrogram when one is given.

>>> fw.plot("street.png")  # doctest: +SKIP
PosixPath('street.png')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .errors import InvalidArgumentError, UnsupportedOperationError
from .events import _atomic_open
from .results import top_k_indices

if TYPE_CHECKING:
    from .results import Framewise

__all__ = ["plot_framewise", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'panns-infer[plot]'"
"""What to run when matplotlib is missing."""


def plot_framewise(framewise: "Framewise", path: Union[str, "os.PathLike[str]"], *, top_k: int = 10,
                   logmel: Optional[np.ndarray] = None) -> Path:
    """Draw the ``top_k`` classes' probabilities over time, and save the figure.

    Classes are ranked by their maximum framewise probability (ties keep class order). The file
    format follows the extension of ``path`` (``.png``, ``.pdf``, ``.svg``, or any other format
    matplotlib can write), and the file is written atomically: to a temporary file in the same
    folder, then moved into place.

    Args:
        framewise: the result to draw.
        path: where to save the figure.
        top_k: how many classes to show (fewer if the model has fewer).
        logmel: an optional ``(frames, mels)`` log-mel spectrogram, drawn above with the same
            time axis (frame ``t`` centred at ``t * frame_hop``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        UnsupportedOperationError: matplotlib is not installed (the message says what to install).
        InvalidArgumentError: ``top_k < 1``, a result with no frames, a ``logmel`` that is not 2-D,
            or an extension matplotlib cannot write.

    >>> plot_framewise(fw, "street.svg", top_k=5, logmel=logmel)  # doctest: +SKIP
    PosixPath('street.svg')
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be a positive integer, got {top_k!r}")
    probs = np.asarray(framewise.probabilities)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise InvalidArgumentError(f"nothing to plot: the probabilities have shape {probs.shape}")
    mel = None
    if logmel is not None:
        mel = np.asarray(logmel, dtype=np.float64)
        if mel.ndim != 2 or 0 in mel.shape:
            raise InvalidArgumentError(f"logmel must be a (frames, mels) array, got shape {mel.shape}")
    dest = Path(os.fspath(path))
    fmt = dest.suffix.lower().lstrip(".")

    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(10, 1.5 + 0.3 * min(top_k, probs.shape[1]) + (2.5 if mel is not None else 0)),
                 dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    formats = canvas.get_supported_filetypes()
    if fmt not in formats:
        raise InvalidArgumentError(
            f"cannot save a figure as {str(dest)!r}: the extension must be one of "
            f"{', '.join('.' + f for f in sorted(formats))}")
    _draw(fig, framewise, probs, top_k, mel)
    with _atomic_open(dest, "wb") as f:
        fig.savefig(f, format=fmt)
    return dest


def _matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, or a typed error naming the extra to install."""
    try:
        import matplotlib  # noqa: F401  (checked first: a cached submodule would hide its absence)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UnsupportedOperationError(
            f"plotting needs matplotlib, an optional dependency that is not installed; run: {INSTALL_HINT}"
        ) from exc
    return Figure, FigureCanvasAgg


def _draw(fig: Any, framewise: "Framewise", probs: np.ndarray, top_k: int, mel: Optional[np.ndarray]) -> None:
    hop = float(framewise.frame_hop)
    index = top_k_indices(probs.max(axis=0), top_k)
    names = [str(framewise.class_names[i]) for i in index]
    axes = fig.subplots(2 if mel is not None else 1, 1, sharex=True, squeeze=False)[:, 0]
    title = os.path.basename(os.fspath(framewise.source)) if framewise.source is not None else None

    if mel is not None:
        ax = axes[0]
        image = ax.imshow(mel.T, origin="lower", aspect="auto", interpolation="nearest", cmap="magma",
                          extent=(-hop / 2, (mel.shape[0] - 0.5) * hop, -0.5, mel.shape[1] - 0.5))
        ax.set_ylabel("Mel bin")
        ax.set_title("Log-mel spectrogram" + (f": {title}" if title else ""))
        fig.colorbar(image, ax=ax, label="dB")

    ax = axes[-1]
    image = ax.imshow(probs[:, index].T, origin="upper", aspect="auto", interpolation="nearest",
                      cmap="viridis", vmin=0.0, vmax=1.0,
                      extent=(-hop / 2, (probs.shape[0] - 0.5) * hop, len(index) - 0.5, -0.5))
    ax.set_yticks(np.arange(len(index)))
    ax.set_yticklabels(names)
    ax.set_xlabel("Time (s)")
    ax.set_title(f"Top {len(index)} classes by framewise maximum" + (f": {title}" if title and mel is None else ""))
    fig.colorbar(image, ax=ax, label="probability")
