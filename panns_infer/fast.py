"""Inference-only CPU optimisations of a loaded network, with the same outputs.

:func:`optimize` turns a CNN-family model (Cnn6, Cnn10, Cnn14 and its variants, clip- and
decision-level) into a module that computes the same outputs faster on a CPU in float32:

* eval-mode batch norm is folded into the preceding convolution (``w * s``, ``beta - mean * s``
  with ``s = gamma / sqrt(var + eps)``); ``bn0`` stays an affine op on the log-mel, because the
  first convolution zero-pads *after* it, so it cannot be folded exactly;
* each convolution runs the method :func:`choose_method` picks for its shape (measured per
  layer with ``bench/profile_layers.py``):

  - the first 1 -> C convolution, which oneDNN runs at a few GFLOP/s, is a small matrix
    product of the 3x3 (or 5x5) patches of the log-mel, written channels-last;
  - on a map only two bins wide (Cnn14's last block, where oneDNN reaches a third of the
    matrix-product rate) each convolution is one matrix product per kernel column over the
    whole batch's time patches, with the layer's own weights and no tap that reads the
    frequency padding;
  - 3x3 layers with many channels run as Winograd F(2x2, 3x3): 16 multiplications per
    input channel for a 2x2 output tile where direct convolution needs 36, on tiles
    transformed a few rows at a time while they are in cache;
  - the wide maps of the first blocks run through oneDNN's direct convolution, channels-last;

* every matrix product goes through oneDNN with its weights packed once (:class:`Linear`),
  at up to twice the rate of ``torch.addmm`` here;
* batches run in cache-sized slices up to the two-bin blocks, which take the whole batch.

The power spectrogram is the model's own DFT-as-convolution, the reference's arithmetic, so
that the log-mel is the reference's bit for bit. It has to be: on tonal or sparse spectra
(a tone, a chord, a sweep) most STFT bins hold power at the level of the DFT's float32
rounding, and the log turns two different roundings of the same sum into a visible change.
Measured on a tone between FFT bins with Cnn14 (probability / embedding deviation from the
reference network): the reference's convolution 3.9e-6 / 2.6e-5 (the rest of the fast path);
an FFT 3.2e-4 / 2.2e-3; the same DFT as one packed matrix product over frames 1.3e-4 /
8.1e-4; that product in float64 9.8e-5 / 6.1e-4. Any other order of the same sums breaks the
1e-4 contract, however accurate. The FFT (:func:`fft_power`, ~8 ms less per 10 s clip on 2
cores) stays as an explicit opt-in, ``spectrogram="fft"``, for those who trade that deviation for speed.

Direct and GEMM convolutions compute the same sums in another order; Winograd's transforms
only add, subtract and halve. Past the log-mel, activations are dense, so these orders change
outputs by float32 rounding only (~1e-6 on probabilities, on every signal family of the
differential tests, tones included). The
result shares the model's mel filter bank, ``bn0`` and head modules (and so its head code);
the convolutions' folded, transformed and packed weights are its own.

>>> from panns_infer.models import build_model
>>> model = build_model("Cnn10").eval()
>>> fast = optimize(model)
>>> x = torch.randn(1, 32000)
>>> bool((fast(x)["clipwise_output"] - model(x)["clipwise_output"]).abs().max() < 1e-5)
True
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Union, cast

import torch
from torch import nn
from torch.nn import functional as F

from .conv_methods import (
    Linear,
    conv_gemm,
    conv_gemm_columns,
    conv_gemm_narrow,
    conv_gemm_padded,
    conv_winograd,
    narrow_matrix,
    winograd_linears,
)
from .errors import InvalidArgumentError
from .frontend import AMIN, SPECTROGRAMS, SpectrogramMethod, check_spectrogram, fft_power, is_hann_dft
from .models.blocks import ConvBlock, ConvBlock5x5, PannsModel
from .models.cnn import Cnn

__all__ = ["optimize", "supports", "choose_method", "held_bytes", "FastCnn", "FastConv", "Linear", "METHODS",
           "SPECTROGRAMS"]

logger = logging.getLogger("panns_infer")

# 3x3 layers from at least this many input channels to twice as many outputs run as
# Winograd F(2x2, 3x3) (see choose_method).
WINOGRAD_MIN_CHANNELS = 128
# Batches run in slices of at most this many frames (two 10 s clips) up to the two-bin blocks:
# measured on Cnn14 at batch 8, slices of 2 clips ran 12.9 clips/s, of 4 11.1 and the whole
# batch 10.8 (the activations of a slice stay in cache from one layer to the next).
_SLICE_FRAMES = 2048
# The leading direct-convolution blocks run on slices of the batch whose first activation
# map holds at most this many floats (16 MB, half this machine's L3 cache).
_LEAD_SLICE_FLOATS = 4 * 1024 * 1024


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
    # batch norms from checkpoints track running statistics: neither is None
    running_mean, running_var = cast(torch.Tensor, bn.running_mean), cast(torch.Tensor, bn.running_var)
    with torch.no_grad():
        scale = bn.weight.double() / torch.sqrt(running_var.double() + bn.eps)
        # The weights are scaled in float32 (one rounding): a float64 copy of Cnn14's largest
        # layer would be a 300 MB temporary.
        weight = conv.weight * scale.float()[:, None, None, None]
        bias = bn.bias.double() - running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
    return weight, bias.float()


def choose_method(kernel: int, cin: int, cout: int, width: int) -> str:
    """How :class:`FastConv` runs a ``kernel`` x ``kernel`` convolution from ``cin`` to
    ``cout`` channels on maps ``width`` bins wide (measured with ``bench/profile_layers.py``;
    the same choice won at batch 1 and 8, except on two-bin maps where Winograd is ~15%
    faster at batch 8 and ~20% slower at batch 1, and needs a third more weight memory):

    * ``"columns"``: maps at most ``kernel // 2 + 1`` bins wide (Cnn14's last block, 70% of
      its weights): one product per kernel column, with the layer's own weights, skipping
      the taps that read the frequency padding. The alternatives: ``"narrow"`` skips them
      too but needs a third more weight memory (every output bin has its own copy of the
      shared taps); ``"padded"`` holds the layer's weights and multiplies the padding taps
      (half as much work again). On Cnn14's last block at batch 1 and 8, 2 threads, columns
      took 0.63-0.76x padded's time and 0.82-1.02x narrow's;
    * ``"gemm"``: the first 1 -> C layer, which oneDNN runs at a few GFLOP/s;
    * ``"winograd"``: 3x3 layers from 128 or more to 256 or more channels (1.2-1.9x oneDNN);
    * ``"onednn_cl"``: the rest (the wide maps of the first blocks, where Winograd's
      transforms cost more than they save).

    >>> choose_method(3, 1, 64, 64), choose_method(3, 64, 64, 64), choose_method(3, 512, 512, 8)
    ('gemm', 'onednn_cl', 'winograd')
    """
    if width <= kernel // 2 + 1:
        return "columns"
    if cin == 1:
        return "gemm"
    if kernel == 3 and cin >= WINOGRAD_MIN_CHANNELS and cout >= 2 * WINOGRAD_MIN_CHANNELS:
        return "winograd"
    return "onednn_cl"


METHODS = ("onednn", "onednn_cl", "gemm", "winograd", "columns", "narrow", "padded")


class FastConv(nn.Module):
    """One convolution with folded batch norm and its ReLU, run one of :data:`METHODS` (by
    default :func:`choose_method`'s) with the weights that method needs, derived once.

    Output is logical NCHW, channels-last or contiguous depending on the method.
    """

    form: Any  # the method's weights: one Linear (narrow, gemm, padded), a list (columns, Winograd)
    weight: torch.Tensor  # buffers of the oneDNN methods
    bias: torch.Tensor

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, width: int, method: Optional[str] = None,
                 *, release: bool = False) -> None:
        super().__init__()
        self.kernel = conv.kernel_size[0]
        self.out_channels = conv.out_channels
        self.method = method or choose_method(self.kernel, conv.in_channels, conv.out_channels, width)
        if self.method not in METHODS:
            raise InvalidArgumentError(f"unknown method {method!r}; one of {METHODS}")
        if self.method == "narrow" and width > self.kernel // 2 + 1:  # taps would fall outside the kernel
            raise InvalidArgumentError(f"narrow needs a map at most {self.kernel // 2 + 1} bins wide, not {width}")
        if self.method == "winograd" and self.kernel != 3:
            raise InvalidArgumentError(f"winograd needs a 3x3 kernel, not {self.kernel}x{self.kernel}")
        weight, bias = fold_batch_norm(conv, bn)
        if release:  # free the original weights at once: at most one layer's are held twice
            conv.to_empty(device="meta")
            bn.to_empty(device="meta")
        if self.method == "narrow":
            matrix = narrow_matrix(weight, width)
            del weight
            self.form = Linear(matrix, bias.repeat(width))
        elif self.method in ("gemm", "padded"):  # taps ordered (kh, kw, c)
            self.form = Linear(weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1), bias)
        elif self.method == "winograd":
            self.form = winograd_linears(weight, bias)
        elif self.method == "columns":  # one (Cout, kh * C) matrix per kernel column, taps ordered (kh, c)
            self.form = [Linear(weight[:, :, :, q].permute(0, 2, 1).reshape(conv.out_channels, -1),
                                bias if q == self.kernel // 2 else None) for q in range(self.kernel)]
        else:
            fmt = torch.channels_last if self.method == "onednn_cl" else torch.contiguous_format
            self.register_buffer("weight", weight.contiguous(memory_format=fmt))
            self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "narrow":
            return conv_gemm_narrow(x, self.form, self.kernel)
        if self.method == "gemm":
            return conv_gemm(x, self.form, self.kernel)
        if self.method == "columns":
            return conv_gemm_columns(x, self.form, self.kernel)
        if self.method == "padded":
            return conv_gemm_padded(x, self.form, self.kernel)
        if self.method == "winograd":
            return conv_winograd(x, self.form)
        fmt = torch.channels_last if self.method == "onednn_cl" else torch.contiguous_format
        return F.relu_(F.conv2d(x.contiguous(memory_format=fmt), self.weight, self.bias, padding=self.kernel // 2))


class FastBlock(nn.Module):
    """A :class:`ConvBlock` or :class:`ConvBlock5x5` with folded batch norm and fast convs."""

    def __init__(self, block: Union[ConvBlock, ConvBlock5x5], width: int, *, release: bool = False) -> None:
        super().__init__()
        self.pool = block.pool
        pairs = [(block.conv1, block.bn1)] + ([(block.conv2, block.bn2)] if isinstance(block, ConvBlock) else [])
        convs = [FastConv(conv, bn, width, release=release) for conv, bn in pairs]
        self.convs = nn.ModuleList(convs)
        self.out_channels = convs[0].out_channels  # the first convolution's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x if self.pool == (1, 1) else F.avg_pool2d(x, self.pool)


class FastCnn(Cnn):
    """A :class:`Cnn` whose trunk runs :class:`FastBlock` s; everything else (STFT and mel
    filter bank, ``bn0``, head layers and head code) is the wrapped model's, shared, not
    copied. With ``spectrogram="fft"`` the power spectrogram is computed by FFT instead when
    the model's STFT kernels are the standard ones."""

    window: torch.Tensor  # buffers of the front end: the FFT's window, or the reference's DFT kernels
    dft: torch.Tensor
    mel_used: torch.Tensor

    def __init__(self, model: Cnn, *, release: bool = False, spectrogram: SpectrogramMethod = "reference") -> None:
        check_spectrogram(spectrogram)
        nn.Module.__init__(self)
        for name in ("arch", "config", "min_samples", "has_framewise", "embedding_size",
                     "frontend_config", "classes"):
            setattr(self, name, getattr(model, name))
        widths = {}
        width = model.frontend_config.mel_bins
        for name, child in model.named_children():
            if isinstance(child, (ConvBlock, ConvBlock5x5)):
                widths[name] = width
                width = width // child.pool[1]
        # The deepest blocks hold most of the weights: built first, while few fast forms exist,
        # the transient copies of their largest layers (dense and packed) never coincide with
        # all the other forms (Cnn14 with release=True: peak RSS while building 886 -> ~780 MB).
        # widths names the conv blocks only
        built = {name: FastBlock(cast(Union[ConvBlock, ConvBlock5x5], child), widths[name], release=release)
                 for name, child in reversed(list(model.named_children())) if name in widths}
        blocks = []
        for name, child in model.named_children():
            if name in widths:
                blocks.append(built[name])
            else:
                self.add_module(name, child)
        self.blocks = nn.ModuleList(blocks)
        # The leading blocks run oneDNN's direct convolution on large maps; they are ~1.5x
        # faster one cache-sized slice of the batch at a time (the later, Winograd and GEMM,
        # blocks prefer the whole batch).
        self.lead = 0
        while self.lead < len(blocks) and all(c.method in ("gemm", "onednn_cl") for c in blocks[self.lead].convs):
            self.lead += 1
        # The blocks on two-bin maps (the Cnn14 family's block 6, most of the weights) run on the
        # whole batch at once: their weights are read once per batch instead of once per slice,
        # and their activations are small.
        self.tail = len(blocks)
        two_bin = ("columns", "narrow", "padded")
        while self.tail > self.lead and all(c.method in two_bin for c in blocks[self.tail - 1].convs):
            self.tail -= 1
        cfg = self.frontend_config
        self.fft = spectrogram == "fft" and is_hann_dft(model.spectrogram_extractor, model.frontend_config)
        if self.fft:
            self.register_buffer("window", torch.hann_window(cfg.window_size, periodic=True))
        else:
            # The reference's DFT convolution, real and imaginary kernels as one convolution,
            # for the bins the mel filter bank uses (2..447 of 513 at 32 kHz): each output
            # channel is the same sum as in the reference, bit for bit (checked against
            # panns_inference), at ~13% less work.
            mel_w = model.logmel_extractor.melW.detach()
            used = mel_w.ne(0).any(dim=1).nonzero()[:, 0]
            lo, hi = (int(used.min()), int(used.max()) + 1) if len(used) else (0, 1)
            stft = model.spectrogram_extractor.stft
            dft = torch.cat([stft.conv_real.weight[lo:hi], stft.conv_imag.weight[lo:hi]])
            self.register_buffer("dft", dft.detach())
            self.register_buffer("mel_used", mel_w[lo:hi].contiguous())
        self.eval()

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # inference only: batch norm is folded, GEMMs write in place
            return super().forward(waveform)

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.frontend_config
        if self.fft:
            x = self.logmel_extractor(fft_power(waveform, self.window, cfg.hop_size))
        else:
            pad = cfg.window_size // 2
            padded = F.pad(waveform[:, None, :], (pad, pad), mode="reflect")
            out = F.conv1d(padded, self.dft, stride=cfg.hop_size)  # (B, 2 bins, T)
            bins = self.dft.shape[0] // 2
            # real * real + imag * imag as the reference rounds it: each square, then their sum
            out.mul_(out)
            power = torch.add(out[:, :bins], out[:, bins:]).transpose(1, 2)[:, None]
            # the mel sums add non-negative terms: any order agrees to float32 rounding
            x = torch.matmul(power, self.mel_used).clamp_(min=AMIN).log10_().mul_(10.0)
        return self.bn0(x.transpose(1, 3)).transpose(1, 3)

    def trunk(self, waveform: torch.Tensor) -> tuple[torch.Tensor, int]:
        frames = self.frontend_config.frames(waveform.shape[-1])
        x = _in_slices(self._front, waveform, max(1, _SLICE_FRAMES // frames))
        return self._run(x, self.blocks[self.tail:]).contiguous(), frames

    def _front(self, waveform: torch.Tensor) -> torch.Tensor:
        """The log-mel front end and the blocks before :attr:`tail`, on one slice of the batch."""
        x = self.logmel(waveform)
        if self.lead:
            _, _, frames, mels = x.shape
            step = max(1, _LEAD_SLICE_FLOATS // (frames * mels * cast(FastBlock, self.blocks[0]).out_channels))
            x = _in_slices(lambda part: self._run(part, self.blocks[:self.lead]), x, step)
        return self._run(x, self.blocks[self.lead:self.tail])

    @staticmethod
    def _run(x: torch.Tensor, blocks) -> torch.Tensor:
        for block in blocks:
            x = block(x)
        return x


def _in_slices(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, step: int) -> torch.Tensor:
    """``fn(x)``, computed ``step`` items of the batch at a time and joined."""
    if step >= x.shape[0]:
        return fn(x)
    return torch.cat([fn(x[i:i + step]) for i in range(0, x.shape[0], step)])


def held_bytes(model: nn.Module) -> int:
    """Bytes of the tensors ``model`` holds: its parameters and buffers (each storage once,
    none on the meta device) and the weights of its :class:`FastConv` forms.

    >>> from panns_infer.models import build_model
    >>> model = build_model("Cnn6").eval()
    >>> held_bytes(model) == sum(t.numel() * t.element_size() for t in model.state_dict().values())
    True
    """
    seen: set = set()
    total = 0

    def add(t: Optional[torch.Tensor]) -> None:
        nonlocal total
        if t is None or t.device.type == "meta":
            return
        key = id(t) if t.is_mkldnn else t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += (t.numel() if t.is_mkldnn else t.untyped_storage().nbytes() // t.element_size()) * t.element_size()

    for t in list(model.parameters()) + list(model.buffers()):
        add(t)
    for mod in model.modules():
        form = getattr(mod, "form", None) if isinstance(mod, FastConv) else None
        for lin in form if isinstance(form, list) else [form] if form is not None else []:
            add(lin.weight if lin.packed else lin.weight_t)
            add(lin.bias)
    return total


def optimize(model: PannsModel, *, release: bool = False, spectrogram: SpectrogramMethod = "reference") -> PannsModel:
    """A faster CPU float32 module computing ``model``'s outputs, or ``model`` itself when
    there is no fast path for its architecture.

    Args:
        model: a network from :func:`panns_infer.models.build_model`, on the CPU. Batch norm
            is folded with its running statistics, so the result is for inference only.
        release: free each of ``model``'s conv blocks (move it to the meta device) as soon as
            its fast copy exists, so that the weights are never held twice; ``model`` then
            only lends its front end and head to the result and can no longer run itself.
            By default ``model`` is left unchanged.
        spectrogram: ``"reference"`` (default) computes the power spectrogram with the
            model's own DFT-as-convolution, so outputs equal the reference's on every kind
            of sound; ``"fft"`` uses :func:`fft_power` (~8 ms less per 10 s clip on 2 cores), which
            moves probabilities by up to ~3e-4 and embeddings by ~2e-3 on tonal audio (a
            model whose STFT kernels are not the standard ones keeps its convolution).

    Raises:
        InvalidArgumentError: for a ``spectrogram`` not in :data:`SPECTROGRAMS`.

    Returns:
        A module with the same ``forward`` contract (and ``arch``, ``sample_rate``,
        ``target_length`` ...) as ``model``.

    >>> from panns_infer.models import build_model
    >>> model = build_model("MobileNetV1")
    >>> optimize(model) is model
    True
    """
    check_spectrogram(spectrogram)
    if not supports(model):
        return model
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        return model
    fast = FastCnn(cast(Cnn, model), release=release, spectrogram=spectrogram)  # supports(model): a Cnn
    logger.debug("optimize: %s runs with folded batch norm and GEMM convolutions", model.arch)
    return fast
