"""Transfer learning: a PANNs network as a PyTorch backbone, and a classifier on top of it.

:class:`PannsBackbone` wraps any clip-level checkpoint as an ``nn.Module`` that maps a
waveform batch ``(B, N)`` at the checkpoint's sample rate to embeddings ``(B, E)`` (the
penultimate layer, what :meth:`panns_infer.AudioTagger.embed` returns) or to per-time-step
features ``(B, T', C)`` (``output="frames"``). The log-mel front end is inside and
differentiable, so gradients reach the waveform; its STFT and mel matrices stay fixed.

:class:`AudioClassifier` puts a new head on a backbone. A frozen backbone (the default)
keeps its weights, keeps no gradients and stays in eval mode (batch-norm statistics do not
drift) even when the classifier is put in training mode; :meth:`AudioClassifier.unfreeze`
makes every weight trainable for full fine-tuning.

>>> import torch
>>> from panns_infer.models import build_model
>>> backbone = PannsBackbone(build_model("Cnn6"))      # or "Cnn14", a .pth path, a URL
>>> model = AudioClassifier(backbone, num_classes=3)
>>> model(torch.zeros(2, 32000)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, Optional, Union, cast

import numpy as np
import torch
from torch import nn

from .checkpoint import load_model
from .errors import InvalidArgumentError, InvalidAudioError, UnsupportedOperationError
from .models import PannsModel
from .models.cnn import CNN_CONFIGS, Cnn
from .registry import DEFAULT_CHECKPOINT, Checkpoint

__all__ = ["PannsBackbone", "AudioClassifier", "FRAME_ARCHITECTURES", "resolve_model"]

log = logging.getLogger("panns_infer")

#: Architectures that support ``output="frames"`` (the plain CNN family and its variants).
FRAME_ARCHITECTURES: tuple[str, ...] = tuple(CNN_CONFIGS)

_OUTPUTS = ("embedding", "frames")
_FIXED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")  # STFT / mel matrices: never trained
_UNUSED_PREFIXES = {  # parameters the output does not depend on: kept frozen so they get no gradients
    "embedding": ("fc_audioset.", "att_block."),
    "frames": ("fc1.", "fc_audioset.", "att_block."),
}

CheckpointLike = Union[str, os.PathLike, Checkpoint, PannsModel, Mapping]


def resolve_model(checkpoint: CheckpointLike = DEFAULT_CHECKPOINT, *, arch: Optional[str] = None,
                  sha256: Optional[str] = None, offline: Optional[bool] = None,
                  progress: Optional[bool] = None) -> PannsModel:
    """Turn a checkpoint reference into a loaded network, in eval mode on the CPU.

    Accepts what :class:`panns_infer.AudioTagger` accepts: a registry name (downloaded once
    into the cache), a released file name, a path, an http(s) URL (give ``sha256``), a
    :class:`~panns_infer.registry.Checkpoint`, plus an in-memory state dict or an already
    built :class:`~panns_infer.models.PannsModel` (returned as is).

    Raises:
        UnknownModelError: a bare name that is neither in the registry nor an existing file.
        CheckpointNotFoundError: a path that does not exist.
        CheckpointError: (or a subclass) an unsafe, unreadable or mismatching file.

    >>> from panns_infer.models import build_model
    >>> resolve_model(build_model("Cnn10")).arch
    'Cnn10'
    >>> resolve_model("Cnn14").embedding_size           # doctest: +SKIP
    2048
    """
    from . import hub  # only needed when something may be downloaded

    if isinstance(checkpoint, PannsModel):
        return checkpoint
    if isinstance(checkpoint, Mapping):
        return load_model(checkpoint, arch=arch)
    if not isinstance(checkpoint, (Checkpoint, str, os.PathLike)):
        raise InvalidArgumentError(
            f"checkpoint must be a name, path, URL, state dict or PannsModel, got {type(checkpoint).__name__}")
    path, entry = hub.resolve_checkpoint(checkpoint, sha256=sha256, offline=offline, progress=progress)
    return load_model(path, arch=arch or (entry.arch if entry else None),
                      filename=entry.filename if entry else None)


def _frame_ratio(model: PannsModel) -> int:
    """STFT frames per trunk time step of a CNN-family model (16 for Cnn6/10, 32 for Cnn14)."""
    cfg = cast(Cnn, model).config  # callers checked the family
    return 2 ** (len(cfg.channels) - 1) * cfg.last_pool[0]


def _cnn_blocks(model: PannsModel, logmel: torch.Tensor) -> torch.Tensor:
    """Run a CNN-family model's conv blocks on a log-mel ``(B, 1, T, M)`` -> ``(B, C, T', F')``."""
    x = logmel
    for i in range(1, len(cast(Cnn, model).config.channels) + 1):  # callers checked the family
        x = getattr(model, f"conv_block{i}")(x)
    return x


class PannsBackbone(nn.Module):
    """A PANNs network as a feature extractor: waveform ``(B, N)`` in, features out.

    Args:
        checkpoint: a registry name (``"Cnn14"``), a released file name, a path, an http(s)
            URL, a :class:`~panns_infer.registry.Checkpoint`, a state dict, or an already
            loaded :class:`~panns_infer.models.PannsModel` (used in place, not copied).
        trainable: False (default) freezes every weight; True makes them trainable. See
            :meth:`freeze` and :meth:`unfreeze`.
        output: ``"embedding"`` -> ``(B, E)``, the clip embedding, equal to
            :meth:`AudioTagger.embed` in eval mode; ``"frames"`` -> ``(B, T', C)``, the
            last conv block averaged over frequency, before the clip pooling (CNN family
            only: :data:`FRAME_ARCHITECTURES`). One step covers :attr:`frame_hop` samples
            (320 ms for Cnn14, 160 ms for Cnn6/Cnn10 at 32 kHz); see :meth:`frame_times`.
        spec_augment: a :class:`~panns_infer.augment.SpecAugment` applied to the log-mel
            after ``bn0`` while the backbone is in training mode (log-mel models only).
        arch: architecture name, to override detection from the state dict.
        sha256, offline, progress: as for :class:`panns_infer.AudioTagger`.

    Inputs shorter than the network's minimum are zero-padded to it, as in
    :class:`~panns_infer.AudioTagger`. The backbone starts in eval mode.

    Frozen means: ``requires_grad`` is False on every parameter, the forward pass keeps no
    graph (unless the input itself requires grad), and the wrapped network stays in eval
    mode when :meth:`train` is called, so batch-norm statistics do not change. SpecAugment
    still follows :meth:`train`/:meth:`eval`. Unfrozen, every parameter the output depends
    on is trainable; the STFT/mel matrices and the unused AudioSet classifier never are.

    Raises:
        UnsupportedOperationError: ``output="embedding"`` on a decision-level checkpoint,
            ``output="frames"`` outside the CNN family, or ``spec_augment`` on a model
            without a log-mel front end.
        InvalidArgumentError: an unknown ``output`` or a ``spec_augment`` that is no module.

    Example:
        >>> import torch
        >>> from panns_infer.models import build_model
        >>> frames = PannsBackbone(build_model("Cnn10"), output="frames")
        >>> frames(torch.zeros(1, 32000)).shape              # 101 STFT frames // 16 = 6 steps
        torch.Size([1, 6, 512])
        >>> PannsBackbone("Cnn14")(torch.zeros(4, 32000)).shape   # doctest: +SKIP
        torch.Size([4, 2048])
    """

    def __init__(self, checkpoint: CheckpointLike = DEFAULT_CHECKPOINT, *, trainable: bool = False,
                 output: str = "embedding", spec_augment: Optional[nn.Module] = None,
                 arch: Optional[str] = None, sha256: Optional[str] = None, offline: Optional[bool] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__()
        if output not in _OUTPUTS:
            raise InvalidArgumentError(f"output must be one of {_OUTPUTS}, got {output!r}")
        model = resolve_model(checkpoint, arch=arch, sha256=sha256, offline=offline, progress=progress)
        if output == "embedding" and model.embedding_size is None:
            raise UnsupportedOperationError(
                f"{model.arch} is a decision-level model without an embedding; use a clip-level "
                "checkpoint such as 'Cnn14', or output='frames'")
        if output == "frames" and not isinstance(model, Cnn):
            raise UnsupportedOperationError(
                f"output='frames' is implemented for the CNN family ({', '.join(FRAME_ARCHITECTURES)}), "
                f"not for {model.arch}; use output='embedding'")
        if spec_augment is not None:
            if not isinstance(spec_augment, nn.Module):
                raise InvalidArgumentError(f"spec_augment must be an nn.Module such as SpecAugment(), "
                                           f"got {type(spec_augment).__name__}")
            if not (hasattr(model, "logmel_extractor") and isinstance(getattr(model, "bn0", None), nn.Module)):
                raise UnsupportedOperationError(
                    f"{model.arch} has no log-mel front end, so SpecAugment cannot be applied; "
                    "use a log-mel model (Cnn*, ResNet*, MobileNet*, Wavegram_Logmel_Cnn14)")
        self.model = model
        self.output = output
        self.spec_augment = spec_augment
        if output == "embedding":
            self.output_size: int = int(cast(int, model.embedding_size))  # not None: checked above
        else:  # "frames": a Cnn, checked above
            self.output_size = int(cast(Cnn, model).config.channels[-1])
        unused = _FIXED_PREFIXES + _UNUSED_PREFIXES[output]
        self._trainable_names = [n for n, _ in model.named_parameters() if not n.startswith(unused)]
        self._trainable = bool(trainable)
        self._apply_trainable()
        self.eval()
        log.debug("PannsBackbone(%s, output=%r, trainable=%s, spec_augment=%s)", model.arch, output,
                  self._trainable, spec_augment is not None)

    # -- properties ------------------------------------------------------------------------------

    @property
    def arch(self) -> str:
        """Architecture name of the wrapped network."""
        return self.model.arch

    @property
    def sample_rate(self) -> int:
        """The sample rate inputs must have, in Hz."""
        return self.model.sample_rate

    @property
    def trainable(self) -> bool:
        """Whether the backbone's weights are trainable (see :meth:`freeze`/:meth:`unfreeze`)."""
        return self._trainable

    @property
    def frame_hop(self) -> int:
        """Samples between two ``output="frames"`` steps (CNN family)."""
        if self.output != "frames":
            raise UnsupportedOperationError("frame_hop is defined for output='frames' only")
        return _frame_ratio(self.model) * self.model.frontend_config.hop_size

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, output={self.output!r}, trainable={self.trainable}"

    # -- freezing --------------------------------------------------------------------------------

    def _apply_trainable(self) -> None:
        names = set(self._trainable_names) if self._trainable else set()
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in names)
        self.train(self.training)

    def freeze(self) -> PannsBackbone:
        """Make every weight untrainable and keep the network in eval mode; returns ``self``.

        >>> from panns_infer.models import build_model
        >>> b = PannsBackbone(build_model("Cnn6"), trainable=True).freeze()
        >>> any(p.requires_grad for p in b.parameters())
        False
        """
        self._trainable = False
        for param in self.model.parameters():
            param.grad = None
        self._apply_trainable()
        return self

    def unfreeze(self) -> PannsBackbone:
        """Make the weights trainable (not the fixed STFT/mel matrices); returns ``self``.

        >>> from panns_infer.models import build_model
        >>> b = PannsBackbone(build_model("Cnn6")).unfreeze()
        >>> b.model.conv_block1.conv1.weight.requires_grad, b.model.logmel_extractor.melW.requires_grad
        (True, False)
        """
        self._trainable = True
        self._apply_trainable()
        return self

    def train(self, mode: bool = True) -> PannsBackbone:
        """Set training mode; a frozen backbone's network stays in eval mode regardless.

        >>> from panns_infer.models import build_model
        >>> b = PannsBackbone(build_model("Cnn6")).train()
        >>> b.training, b.model.training
        (True, False)
        """
        if not isinstance(mode, bool):
            raise InvalidArgumentError(f"training mode is expected to be boolean, got {mode!r}")
        self.training = mode
        self.model.train(mode and self._trainable)
        if self.spec_augment is not None:
            self.spec_augment.train(mode)
        return self

    # -- forward ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _augmenting(self) -> Iterator[None]:
        """While training with SpecAugment, hook it onto ``bn0``'s output for one forward pass.

        The hook exists only inside this backbone's forward, so the wrapped network used on its
        own is never augmented, and copies (``deepcopy``, DataParallel replicas) hook their own.
        """
        if not (self.training and self.spec_augment is not None):
            yield
            return
        augment = self.spec_augment

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            # bn0 sees the log-mel as (B, mel, T, 1); SpecAugment wants (B, 1, T, mel)
            return augment(output.transpose(1, 3)).transpose(1, 3)

        handle = self.model.bn0.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def _frames(self, waveform: torch.Tensor) -> torch.Tensor:
        num_samples = waveform.shape[-1]
        target = self.model.target_length(num_samples)
        if target != num_samples:
            waveform = nn.functional.pad(waveform, (0, target - num_samples))
        x = _cnn_blocks(self.model, self.model.logmel(waveform))  # (B, C, T', F')
        return x.mean(dim=3).transpose(1, 2)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, N)`` at :attr:`sample_rate` -> ``(B, E)`` or ``(B, T', C)``.

        Raises:
            InvalidAudioError: not a 2-D floating-point tensor with samples.

        >>> import torch
        >>> from panns_infer.models import build_model
        >>> PannsBackbone(build_model("Cnn6"))(torch.zeros(2, 16000)).shape
        torch.Size([2, 512])
        """
        if not isinstance(waveform, torch.Tensor) or waveform.dim() != 2 or waveform.shape[-1] == 0:
            shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise InvalidAudioError(f"PannsBackbone expects a waveform tensor (batch, samples) with samples > 0, "
                                    f"got {shape}")
        if not waveform.is_floating_point():
            raise InvalidAudioError(f"waveform must be floating point in [-1, 1], got {waveform.dtype}")
        grad = torch.is_grad_enabled() and (self._trainable or waveform.requires_grad)
        with torch.set_grad_enabled(grad), self._augmenting():
            if self.output == "embedding":
                return self.model(waveform)["embedding"]
            return self._frames(waveform)

    def frame_times(self, *args: Any, num_frames: Optional[int] = None,
                    num_samples: Optional[int] = None) -> np.ndarray:
        """Centres (seconds) of the ``output="frames"`` steps; give exactly one keyword.

        Args:
            num_frames: the number of steps ``T'`` of an output ``(B, T', C)``: the centres of
                steps ``0 .. T' - 1``.
            num_samples: the length of an input in samples: the centres of the steps the
                backbone gives for it.

        Step ``j`` pools STFT frames ``j*R .. j*R + R - 1`` (``R`` = 16 or 32), so its centre
        is ``(j*R + (R - 1) / 2) * hop / sample_rate``. Inputs shorter than the network's
        minimum are padded, so their steps may lie past the end of the input.

        Raises:
            InvalidArgumentError: a positional count (which would be ambiguous), both or
                neither keyword, or a negative count.
            UnsupportedOperationError: the backbone's output is not ``"frames"``.

        >>> from panns_infer.models import build_model
        >>> backbone = PannsBackbone(build_model("Cnn14"), output="frames")
        >>> backbone.frame_times(num_samples=32000)
        array([0.155, 0.475, 0.795])
        >>> backbone.frame_times(num_frames=2)
        array([0.155, 0.475])
        """
        if args or (num_frames is None) == (num_samples is None):
            got = f"a positional {args[0]!r}" if args else ("both" if num_frames is not None else "neither")
            raise InvalidArgumentError(
                f"frame_times takes exactly one of num_frames= (the T' of an output) or num_samples= "
                f"(the input's length); got {got}")
        cfg, ratio = self.model.frontend_config, _frame_ratio(self.model)
        if self.output != "frames":
            raise UnsupportedOperationError("frame_times is defined for output='frames' only")
        count = num_frames if num_frames is not None else num_samples
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            name = "num_frames" if num_frames is not None else "num_samples"
            raise InvalidArgumentError(f"{name} must be a non-negative integer, got {count!r}")
        if num_frames is not None:
            steps = int(num_frames)
        else:
            steps = cfg.frames(self.model.target_length(int(count))) // ratio
        return (np.arange(steps) * ratio + (ratio - 1) / 2) * cfg.hop_size / cfg.sample_rate


class AudioClassifier(nn.Module):
    """A new classification head on a :class:`PannsBackbone`; returns logits.

    Args:
        backbone: the feature extractor.
        num_classes: number of output classes (>= 1).
        head: a module mapping ``backbone.output_size`` features to ``num_classes`` logits;
            default ``nn.Linear(backbone.output_size, num_classes)``. With
            ``output="frames"`` the default head is applied to every step: ``(B, T', K)``.

    The state dict (``backbone.model.*`` and ``head.*``) holds only tensors: save it with
    ``torch.save(model.state_dict(), path)`` and load it into a freshly built classifier of
    the same architecture with ``load_state_dict(torch.load(path, weights_only=True))``;
    the backbone of that fresh classifier may start from untrained weights
    (``PannsBackbone(build_model("Cnn14"))``), nothing needs downloading.

    Example:
        >>> import torch
        >>> from panns_infer.models import build_model
        >>> clf = AudioClassifier(PannsBackbone(build_model("Cnn6")), num_classes=4)
        >>> [n for n, p in clf.named_parameters() if p.requires_grad]      # frozen backbone
        ['head.weight', 'head.bias']
        >>> clf.unfreeze().backbone.trainable
        True
    """

    def __init__(self, backbone: PannsBackbone, num_classes: int, *, head: Optional[nn.Module] = None) -> None:
        super().__init__()
        if not isinstance(backbone, PannsBackbone):
            raise InvalidArgumentError(f"backbone must be a PannsBackbone, got {type(backbone).__name__}; "
                                       "wrap a checkpoint with PannsBackbone(checkpoint)")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise InvalidArgumentError(f"num_classes must be a positive integer, got {num_classes!r}")
        if head is not None and not isinstance(head, nn.Module):
            raise InvalidArgumentError(f"head must be an nn.Module, got {type(head).__name__}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.head = head if head is not None else nn.Linear(backbone.output_size, num_classes)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``(B, N)`` -> logits ``(B, num_classes)`` (``(B, T', K)`` for frames).

        >>> import torch
        >>> from panns_infer.models import build_model
        >>> AudioClassifier(PannsBackbone(build_model("Cnn6")), 5)(torch.zeros(1, 8000)).shape
        torch.Size([1, 5])
        """
        return self.head(self.backbone(waveform))

    def freeze(self) -> AudioClassifier:
        """Freeze the backbone (the head stays trainable); returns ``self``.

        >>> from panns_infer.models import build_model
        >>> clf = AudioClassifier(PannsBackbone(build_model("Cnn6"), trainable=True), 2).freeze()
        >>> clf.backbone.trainable
        False
        """
        self.backbone.freeze()
        return self

    def unfreeze(self) -> AudioClassifier:
        """Make the backbone trainable too, for full fine-tuning; returns ``self``.

        >>> from panns_infer.models import build_model
        >>> AudioClassifier(PannsBackbone(build_model("Cnn6")), 2).unfreeze().backbone.trainable
        True
        """
        self.backbone.unfreeze()
        return self
