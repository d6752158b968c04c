"""Inference-only CPU optimisations of a loaded network, with the same outputs (issue #7).

:func:`optimize` turns a CNN-family model (Cnn6, Cnn10, Cnn14 and its variants, clip- and
decision-level) into a module that computes the same outputs faster on a CPU in float32:

* eval-mode batch norm is folded into the preceding convolution (``w * s``, ``beta - mean * s``
  with ``s = gamma / sqrt(var + eps)``); ``bn0`` stays an affine op on the log-mel, because the
  first convolution zero-pads *after* it, so it cannot be folded exactly;
* the first 1 -> C convolution, which oneDNN runs at a few GFLOP/s, is a small matrix product
  of the 3x3 (or 5x5) patches of the log-mel, written channels-last;
* on a map only two bins wide (Cnn14's last block, where oneDNN reaches a third of the
  matrix-product rate) each convolution is one matrix product of time patches, without the
  taps that would read the frequency padding (a third of that block's work);
* wide layers on tiny maps (Cnn14 block 5 at batch 1) run as im2col plus one matrix product;
* the other convolutions run through oneDNN, channels-last below 1024 input channels.

Every path computes the same sums in another order, so outputs agree with the unoptimised
model to float32 rounding (~1e-6). The result shares the model's front end and head modules
(and so its head code); only the folded convolution weights are new tensors.

>>> from panns_infer.models import build_model
>>> model = build_model("Cnn10").eval()
>>> fast = optimize(model)
>>> x = torch.randn(1, 32000)
>>> bool((fast(x)["clipwise_output"] - model(x)["clipwise_output"]).abs().max() < 1e-5)
True
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .models.blocks import ConvBlock, ConvBlock5x5, PannsModel
from .models.cnn import Cnn

__all__ = ["optimize", "supports", "FastCnn", "FastConv"]

logger = logging.getLogger("panns_infer")

# GEMM-based convolutions copy their patches in chunks of at most this many floats (64 MB).
_CHUNK_FLOATS = 16 * 1024 * 1024
# Measured with bench/profile_layers.py (2-core x86-64, torch 2.13): im2col + GEMM beats
# oneDNN only on the 1-channel first layer and on wide layers with tiny maps (Cnn14 block 5
# at batch 1); elsewhere its 9x patch copy costs more than it saves. oneDNN is fastest
# channels-last below WIDE_CHANNELS input channels and in NCHW from there on.
WIDE_CHANNELS = 1024
# Wide layers whose output map has at most this many pixels (batch x time x frequency) run
# as im2col + GEMM.
GEMM_MAX_PIXELS = 512


def supports(model: nn.Module) -> bool:
    """Whether :func:`optimize` has a fast path for this model (the CNN family).

    >>> from panns_infer.models import build_model
    >>> supports(build_model("Cnn14")), supports(build_model("MobileNetV1"))
    (True, False)
    """
    return type(model) is Cnn


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (``bn`` in eval mode), float32.

    >>> conv, bn = nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3).eval()
    >>> w, b = fold_batch_norm(conv, bn)
    >>> w.shape, b.shape
    (torch.Size([3, 2, 3, 3]), torch.Size([3]))
    """
    with torch.no_grad():
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        # The weights are scaled in float32 (one rounding): a float64 copy of Cnn14's largest
        # layer would be a 300 MB temporary.
        weight = conv.weight * scale.float()[:, None, None, None]
        bias = bn.bias.double() - bn.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
    return weight, bias.float()


def _pad_nhwc(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Logical NCHW ``x`` -> zero-padded contiguous NHWC ``(B, H + 2 pad_h, W + 2 pad_w, C)``."""
    return F.pad(x.permute(0, 2, 3, 1), (0, 0, pad_w, pad_w, pad_h, pad_h)).contiguous()


def conv_gemm(x: torch.Tensor, wmat: torch.Tensor, bias: torch.Tensor, kernel: int) -> torch.Tensor:
    """'Same' ``kernel`` x ``kernel`` convolution as im2col + one matrix product per chunk.

    Args:
        x: logical ``(B, C, H, W)``, any memory format.
        wmat: ``(Cout, kernel * kernel * C)``, taps ordered (kh, kw, c).
        bias: ``(Cout,)``.
        kernel: odd kernel size.

    Returns:
        Logical ``(B, Cout, H, W)`` in channels-last memory format.
    """
    b, c, h, w = x.shape
    pad = kernel // 2
    xp = _pad_nhwc(x, pad, pad)
    sb, sh, sw, _ = xp.stride()
    patches = xp.as_strided((b, h, w, kernel, kernel, c), (sb, sh, sw, sh, sw, 1))
    cout = wmat.shape[0]
    out = torch.empty(b, h, w, cout, dtype=x.dtype)
    rows = max(1, _CHUNK_FLOATS // (w * kernel * kernel * c))  # time rows per chunk
    wt = wmat.t()
    for i in range(b):
        for r in range(0, h, rows):
            piece = patches[i, r:r + rows].reshape(-1, kernel * kernel * c)
            torch.addmm(bias, piece, wt, out=out[i, r:r + rows].view(-1, cout))
    return out.permute(0, 3, 1, 2)


def conv_gemm_narrow(x: torch.Tensor, wmat: torch.Tensor, bias: torch.Tensor, kernel: int) -> torch.Tensor:
    """'Same' convolution on a map whose width is at most ``kernel // 2 + 1``, without the
    taps that read frequency padding: every output bin sees every input bin, so one product
    of ``(B*H, kernel*W*C)`` time patches with a ``(kernel*W*C, W*Cout)`` matrix computes all
    output bins at once.

    Args:
        x: logical ``(B, C, H, W)``.
        wmat: ``(W * Cout, kernel * W * C)`` from :func:`_narrow_matrix`.
        bias: ``(W * Cout,)``, the bias repeated per output bin.
        kernel: odd kernel size.

    Returns:
        Logical ``(B, Cout, H, W)`` in channels-last memory format.
    """
    b, c, h, w = x.shape
    pad = kernel // 2
    xp = _pad_nhwc(x, pad, 0)  # (B, H + 2p, W, C): only time is padded
    sb, sh, _, _ = xp.stride()
    patches = xp.as_strided((b, h, kernel, w * c), (sb, sh, sh, 1))
    out = torch.addmm(bias, patches.reshape(b * h, kernel * w * c), wmat.t())
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def _narrow_matrix(weight: torch.Tensor, width: int) -> torch.Tensor:
    """``(width * Cout, kernel * width * C)``: row block j holds the taps output bin j applies
    to input bins 0..width-1 (taps ordered kh, input bin, c)."""
    cout, cin, k, _ = weight.shape
    pad = k // 2
    mat = weight.new_zeros(width, cout, k, width, cin)
    for j in range(width):  # output bin
        for i in range(width):  # input bin
            kw = i - j + pad
            if 0 <= kw < k:
                mat[j, :, :, i, :] = weight[:, :, :, kw].permute(0, 2, 1)
    return mat.reshape(width * cout, k * width * cin)


class FastConv(nn.Module):
    """One convolution with folded batch norm, run the fastest way known for its shape.

    The method follows from the input shape (:meth:`method`; thresholds measured with
    ``bench/profile_layers.py``): maps at most ``kernel // 2 + 1`` bins wide drop their
    padding taps, the first 1 -> C layer and wide layers on tiny maps use im2col + GEMM, the
    rest go through oneDNN (channels-last below :data:`WIDE_CHANNELS` input channels). Output is logical NCHW, channels-last or contiguous depending on the method.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, width: int) -> None:
        super().__init__()
        weight, bias = fold_batch_norm(conv, bn)
        self.kernel = conv.kernel_size[0]
        self.width = width
        self.narrow = width <= self.kernel // 2 + 1
        if self.narrow:  # the frequency width never changes (it is mel_bins / 2**block)
            self.register_buffer("weight", _narrow_matrix(weight, width))
            self.register_buffer("bias", bias.repeat(width))
        else:  # one storage, (Cout, kh, kw, Cin): the channels-last conv weight and the GEMM matrix
            self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
            self.register_buffer("bias", bias)

    def method(self, shape: torch.Size) -> str:
        """``"narrow"``, ``"gemm"``, ``"onednn_cl"`` or ``"onednn"`` for an input of ``shape``."""
        b, c, h, w = shape
        if self.narrow:
            return "narrow"
        if c == 1:
            return "gemm"
        if c >= WIDE_CHANNELS:
            return "gemm" if b * h * w <= GEMM_MAX_PIXELS else "onednn"
        return "onednn_cl"

    def forward(self, x: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        method = method or self.method(x.shape)
        if method == "narrow":
            return conv_gemm_narrow(x, self.weight, self.bias, self.kernel)
        if method == "gemm":
            wmat = self.weight.permute(0, 2, 3, 1).reshape(self.weight.shape[0], -1)
            return conv_gemm(x, wmat, self.bias, self.kernel)
        fmt = torch.contiguous_format if method == "onednn" else torch.channels_last
        return F.conv2d(x.contiguous(memory_format=fmt), self.weight.contiguous(memory_format=fmt),
                        self.bias, padding=self.kernel // 2)


class FastBlock(nn.Module):
    """A :class:`ConvBlock` or :class:`ConvBlock5x5` with folded batch norm and fast convs."""

    def __init__(self, block: nn.Module, width: int, *, release: bool = False) -> None:
        super().__init__()
        self.pool = block.pool
        pairs = [(block.conv1, block.bn1)] + ([(block.conv2, block.bn2)] if isinstance(block, ConvBlock) else [])
        convs = []
        for conv, bn in pairs:
            convs.append(FastConv(conv, bn, width))
            if release:  # free the original weights at once: they are never held twice
                conv.to_empty(device="meta")
                bn.to_empty(device="meta")
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu_(conv(x))
        return x if self.pool == (1, 1) else F.avg_pool2d(x, self.pool)


class FastCnn(Cnn):
    """A :class:`Cnn` whose trunk runs :class:`FastBlock` s; everything else (front end,
    ``bn0``, head layers and head code) is the wrapped model's, shared, not copied."""

    def __init__(self, model: Cnn, *, release: bool = False) -> None:
        nn.Module.__init__(self)
        for name in ("arch", "config", "min_samples", "has_framewise", "embedding_size",
                     "frontend_config", "classes"):
            setattr(self, name, getattr(model, name))
        blocks = []
        width = model.frontend_config.mel_bins
        for name, child in model.named_children():
            if isinstance(child, (ConvBlock, ConvBlock5x5)):
                blocks.append(FastBlock(child, width, release=release))
                width = width // child.pool[1]
            else:
                self.add_module(name, child)
        self.blocks = nn.ModuleList(blocks)
        self.eval()

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # inference only: batch norm is folded, GEMMs write in place
            return super().forward(waveform)

    def trunk(self, waveform: torch.Tensor) -> tuple[torch.Tensor, int]:
        x = self.logmel(waveform)
        frames = x.shape[2]
        for block in self.blocks:
            x = block(x)
        return x.contiguous(), frames


def optimize(model: PannsModel, *, release: bool = False) -> PannsModel:
    """A faster CPU float32 module computing ``model``'s outputs, or ``model`` itself when
    there is no fast path for its architecture.

    Args:
        model: a network from :func:`panns_infer.models.build_model`, on the CPU. Batch norm
            is folded with its running statistics, so the result is for inference only.
        release: free each of ``model``'s conv blocks (move it to the meta device) as soon as
            its fast copy exists, so that the weights are never held twice; ``model`` then
            only lends its front end and head to the result and can no longer run itself.
            By default ``model`` is left unchanged.

    Returns:
        A module with the same ``forward`` contract (and ``arch``, ``sample_rate``,
        ``target_length`` ...) as ``model``.

    >>> from panns_infer.models import build_model
    >>> model = build_model("MobileNetV1")
    >>> optimize(model) is model
    True
    """
    if not supports(model):
        return model
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        return model
    fast = FastCnn(model, release=release)  # type: ignore[arg-type]
    logger.debug("optimize: %s runs with folded batch norm and GEMM convolutions", model.arch)
    return fast
