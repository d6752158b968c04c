"""The ways the CPU fast path computes one convolution (+ ReLU) with folded weights.

Each is a form of the same sums, chosen per layer by :func:`panns_infer.fast.choose_method`:

* :class:`Linear`: a matrix product with weights packed once for oneDNN (or ``torch.addmm``);
* :func:`conv_gemm`: im2col and matrix products, a few time rows at a time (the first 1 -> C layer);
* :func:`conv_gemm_columns`, :func:`conv_gemm_narrow`, :func:`conv_gemm_padded`: maps at most
  ``kernel // 2 + 1`` bins wide (Cnn14's last block), where every output bin sees every
  input bin;
* :func:`conv_winograd`: Winograd F(2x2, 3x3) for 3x3 layers with many channels.

>>> conv_gemm(torch.ones(1, 2, 3, 3), Linear(torch.ones(1, 18), None), 3)[0, 0]
tensor([[ 8., 12.,  8.],
        [12., 18., 12.],
        [ 8., 12.,  8.]])
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

__all__ = ["Linear", "PACKED_LINEAR", "conv_gemm", "conv_gemm_columns", "conv_gemm_narrow", "conv_gemm_padded",
           "conv_winograd", "narrow_matrix", "winograd_linears"]

# GEMM-based convolutions copy their patches in chunks of at most this many floats (64 MB).
_CHUNK_FLOATS = 16 * 1024 * 1024
# Winograd works on chunks of about this many input floats (8 MB) at a time.
_WINOGRAD_CHUNK_FLOATS = 2 * 1024 * 1024


def _packed_linear_works() -> bool:
    """Whether this torch build has oneDNN's pre-packed linear (``torch.ops.mkldnn``), and it
    computes a known product."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 3), 1)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 3), packed, None, "none", [], "")
        return bool(torch.equal(out, torch.full((1, 2), 3.0)))
    except Exception:  # not built with oneDNN (or the private op changed): use addmm
        return False


PACKED_LINEAR = _packed_linear_works()


class Linear:
    """``x @ weight.T + bias`` (optionally ReLU'd) for a fixed float32 ``weight`` of shape
    ``(N, K)``.

    With oneDNN available the weight is reordered once into oneDNN's blocked layout and each
    product runs through its packed-weight kernel: on this 2-core AVX-512 machine that reached
    300-450 GFLOP/s for every shape Cnn14 needs, where ``torch.addmm`` (MKL, which takes its
    AVX2 path on AMD processors) reached 90-210. Otherwise ``torch.addmm``.

    >>> lin = Linear(torch.eye(3)[:2] * 2, torch.tensor([1.0, -9.0]))
    >>> lin(torch.tensor([[1.0, 2.0, 3.0]]))
    tensor([[ 3., -5.]])
    >>> lin(torch.tensor([[1.0, 2.0, 3.0]]), relu=True)
    tensor([[3., 0.]])
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        weight = weight.detach().float().contiguous()
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.packed = PACKED_LINEAR
        if self.packed:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, 256)
        else:
            self.weight_t = weight.t()

    def __call__(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "relu" if relu else "none", [], "")
        out = torch.mm(x, self.weight_t) if self.bias is None else torch.addmm(self.bias, x, self.weight_t)
        return out.relu_() if relu else out


def _pad_nhwc(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Logical NCHW ``x`` -> zero-padded contiguous NHWC ``(B, top + H + bottom, left + W + right, C)``."""
    return F.pad(x.permute(0, 2, 3, 1), (0, 0, left, right, top, bottom)).contiguous()


def _same_patches(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """The ``(B, H, W, kernel, kernel, C)`` patches of a 'same' convolution over logical NCHW
    ``x``: a strided view of its zero-padded NHWC copy, taps ordered (kh, kw, c)."""
    b, c, h, w = x.shape
    pad = kernel // 2
    xp = _pad_nhwc(x, pad, pad, pad, pad)
    sb, sh, sw, _ = xp.stride()
    return xp.as_strided((b, h, w, kernel, kernel, c), (sb, sh, sw, sh, sw, 1))


def conv_gemm(x: torch.Tensor, linear: Linear, kernel: int) -> torch.Tensor:
    """'Same' ``kernel`` x ``kernel`` convolution + ReLU as im2col + matrix products, a few
    time rows at a time so that the patch matrix stays in cache.

    Args:
        x: logical ``(B, C, H, W)``, any memory format.
        linear: weights ``(Cout, kernel * kernel * C)``, taps ordered (kh, kw, c).
        kernel: odd kernel size.

    Returns:
        Logical ``(B, Cout, H, W)`` in channels-last memory format.
    """
    b, c, h, w = x.shape
    patches = _same_patches(x, kernel)
    out = torch.empty(b, h, w, linear.out_features, dtype=x.dtype)
    rows = max(1, _CHUNK_FLOATS // (w * kernel * kernel * c))  # time rows per chunk
    for i in range(b):
        for r in range(0, h, rows):
            piece = patches[i, r:r + rows].reshape(-1, kernel * kernel * c)
            out[i, r:r + rows] = linear(piece, relu=True).view(-1, w, linear.out_features)
    return out.permute(0, 3, 1, 2)


def conv_gemm_narrow(x: torch.Tensor, linear: Linear, kernel: int) -> torch.Tensor:
    """'Same' convolution + ReLU on a map whose width is at most ``kernel // 2 + 1``, without
    the taps that read frequency padding: every output bin sees every input bin, so one
    product of ``(B*H, kernel*W*C)`` time patches with a ``(kernel*W*C, W*Cout)`` matrix
    computes all output bins at once.

    Args:
        x: logical ``(B, C, H, W)``.
        linear: weights ``(W * Cout, kernel * W * C)`` from :func:`narrow_matrix`, bias
            repeated per output bin.
        kernel: odd kernel size.

    Returns:
        Logical ``(B, Cout, H, W)`` in channels-last memory format.
    """
    b, c, h, w = x.shape
    pad = kernel // 2
    xp = _pad_nhwc(x, pad, pad, 0, 0)  # (B, H + 2p, W, C): only time is padded
    sb, sh, _, _ = xp.stride()
    patches = xp.as_strided((b, h, kernel, w * c), (sb, sh, sh, 1))
    out = linear(patches.reshape(b * h, kernel * w * c), relu=True)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


def conv_gemm_padded(x: torch.Tensor, linear: Linear, kernel: int) -> torch.Tensor:
    """'Same' convolution + ReLU as one matrix product of the whole batch's patches (frequency
    padding included) with the layer's own ``(Cout, kernel * kernel * C)`` weights: on a map at
    most ``kernel // 2 + 1`` bins wide, the same numbers as :func:`conv_gemm_narrow` from
    three quarters of its weight memory, for half as much work again.

    The padding taps only add exact zeros to each output's running sum, which otherwise sees
    the same products in the same order as "narrow"'s (taps ordered kh, then input bin), so
    the results are equal bit for bit, provided the product's kernel is the one "narrow" gets
    for the same rows: oneDNN treats a single-row product differently from several rows, so
    when "narrow" would multiply one row (one time step of one clip), each output bin is its
    own one-row product here too. That is measured, not promised by oneDNN: equal on Cnn14's
    last-block layers (1024 and 2048 channels; 1, 2, 4 and 16 threads, AVX-512 and AVX2
    kernels), while on layers of 64-512 channels oneDNN splits the two products' sums
    differently and the last bits can differ (float32 rounding).

    Args:
        x: logical ``(B, C, H, W)``.
        linear: weights ``(Cout, kernel * kernel * C)``, taps ordered (kh, kw, c).
        kernel: odd kernel size.

    Returns:
        Logical ``(B, Cout, H, W)`` in channels-last memory format.
    """
    b, c, h, w = x.shape
    patches = _same_patches(x, kernel)
    cout = linear.out_features
    out = torch.empty(b * h, w, cout, dtype=x.dtype)
    if b * h == 1:  # "narrow" would make a single-row product: so does each output bin here
        for j in range(w):
            out[0, j] = linear(patches[0, 0, j].reshape(1, -1), relu=True)[0]
        return out.view(b, h, w, cout).permute(0, 3, 1, 2)
    # Chunks of whole time steps (of every clip in turn), at least two each, so that no chunk
    # is a single-row product.
    chunks = max(1, b * h // max(2, _CHUNK_FLOATS // (w * kernel * kernel * c)))
    bounds = [b * h * i // chunks for i in range(chunks + 1)]
    for r0, r1 in zip(bounds, bounds[1:]):
        cols = torch.empty(r1 - r0, w, kernel, kernel, c, dtype=x.dtype)
        for i in range(r0 // h, (r1 - 1) // h + 1):  # the clips this chunk covers
            t0, t1 = max(r0, i * h) - i * h, min(r1, (i + 1) * h) - i * h
            cols[i * h + t0 - r0: i * h + t1 - r0] = patches[i, t0:t1]
        out[r0:r1] = linear(cols.view((r1 - r0) * w, -1), relu=True).view(r1 - r0, w, cout)
    return out.view(b, h, w, cout).permute(0, 3, 1, 2)


def conv_gemm_columns(x: torch.Tensor, linears: list[Linear], kernel: int) -> torch.Tensor:
    """'Same' convolution + ReLU as one matrix product per column of the kernel: column ``q``
    joins input bin ``i`` to output bin ``i - q + kernel // 2``, so its ``(Cout, kernel * C)``
    taps multiply the time patches of every input bin that has such an output bin, in one
    product, and the products of the columns are added per output bin. Made for maps at most
    ``kernel // 2 + 1`` bins wide: no tap reads the frequency padding ("narrow"'s work) and
    each tap is held once ("padded"'s memory). The sums are grouped by column, so they agree
    with the other methods to float32 rounding, not bit for bit.

    Args:
        x: logical ``(B, C, H, W)``.
        linears: one per kernel column, weights ``(Cout, kernel * C)`` with taps ordered
            (kh, c); the centre column's holds the bias.
        kernel: odd kernel size.

    Returns:
        Logical ``(B, Cout, H, W)``.
    """
    b, c, h, w = x.shape
    pad = kernel // 2
    xp = _pad_nhwc(x, pad, pad, 0, 0)  # (B, H + 2p, W, C): only time is padded
    sb, sh, sw, _ = xp.stride()
    patches = xp.as_strided((w, b, h, kernel, c), (sw, sb, sh, sh, 1))  # one time patch per bin and step
    out = torch.empty(w, b, h, linears[pad].out_features, dtype=x.dtype)
    rows = max(1, _CHUNK_FLOATS // (w * kernel * c))  # steps per product: the patches stay under 64 MB
    if b * h <= rows:
        _columns_product(patches.reshape(w, b * h, kernel * c), linears, out.view(w, b * h, -1))
    else:
        for i in range(b):
            for r in range(0, h, rows):
                part = patches[:, i, r:r + rows]
                _columns_product(part.reshape(w, -1, kernel * c), linears, out[:, i, r:r + rows])
    return out.relu_().permute(1, 3, 2, 0)


def _columns_product(patches: torch.Tensor, linears: list[Linear], out: torch.Tensor) -> None:
    """``out[j] = sum over columns q of patches[j + q - centre] @ taps[q].T`` (+ bias) for the
    ``(W, M, kernel * C)`` time patches of each input bin; ``out`` is ``(W, M, Cout)``."""
    w, m, _ = patches.shape
    centre = len(linears) // 2
    out.copy_(linears[centre](patches.reshape(w * m, -1)).view(w, m, -1))  # every bin: i == j
    for q, linear in enumerate(linears):
        shift = q - centre  # input bin i feeds output bin i - shift
        first, last = max(0, shift), min(w, w + shift)  # input bins with an output bin
        if q != centre and first < last:
            part = linear(patches[first:last].reshape((last - first) * m, -1))
            out[first - shift:last - shift] += part.view(last - first, m, -1)


def narrow_matrix(weight: torch.Tensor, width: int) -> torch.Tensor:
    """``(width * Cout, kernel * width * C)``: row block j holds the taps output bin j applies
    to input bins 0..width-1 (taps ordered kh, input bin, c). Dense: on a map at most
    ``kernel // 2 + 1`` wide every output bin sees every input bin."""
    cout, cin, k, _ = weight.shape
    taps = weight.permute(3, 0, 2, 1)  # (kw, Cout, kh, C)
    mat = weight.new_empty(width, cout, k, width, cin)
    for j in range(width):  # output bin
        for i in range(width):  # input bin
            mat[j, :, :, i, :] = taps[i - j + k // 2]
    return mat.reshape(width * cout, k * width * cin)


# Winograd F(2x2, 3x3) (Lavin & Gray, 2016): a 2x2 output tile is A^T [(G w G^T) * (B^T d B)] A
# for the 4x4 input tile d around it (G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]),
# 16 products per tile where direct convolution needs 36.
# The transforms only add and subtract (G halves), so the results stay within float32 rounding
# of direct convolution (measured 2-6e-6 on unit-scale layer outputs, direct: 1-2e-6); the
# larger F(4x4, 3x3) saves more but multiplies by up to 8 in its transforms and lost ~30x in
# accuracy, so it is not used.
def winograd_linears(weight: torch.Tensor, bias: torch.Tensor) -> list[Linear]:
    """The 16 ``(Cout, Cin)`` matrices ``(G w G^T)[p, q]``, row-major over (p, q), packed one
    at a time (so the transformed weights are never held twice). The bias goes with position
    (1, 1), whose product reaches every output of a tile with weight 1."""
    cout, cin = weight.shape[:2]
    g = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
    taps = weight.reshape(cout, cin, 9)
    # (G w G^T)[p, q] = sum over taps (i, j) of G[p, i] G[q, j] w[:, :, i, j]: exact factors
    return [Linear(torch.matmul(taps, row), bias if i == 5 else None) for i, row in enumerate(torch.kron(g, g))]


def _tile_transform(src: list[torch.Tensor], out: torch.Tensor) -> None:
    """Rows of B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] applied to the
    four views ``src`` (equal shapes), written to ``out[0..3]``."""
    d0, d1, d2, d3 = src
    torch.sub(d0, d2, out=out[0])
    torch.add(d1, d2, out=out[1])
    torch.sub(d2, d1, out=out[2])
    torch.sub(d1, d3, out=out[3])


def _output_transform(m: list[torch.Tensor], out0: torch.Tensor, out1: torch.Tensor) -> None:
    """Rows of A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] applied to four equal-shape tensors."""
    torch.add(m[0], m[1], out=out0).add_(m[2])
    torch.sub(m[1], m[2], out=out1).sub_(m[3])


def conv_winograd(x: torch.Tensor, linears: list[Linear]) -> torch.Tensor:
    """'Same' 3x3 convolution + ReLU by Winograd F(2x2, 3x3), a few tile rows at a time so
    that the transformed tiles stay in cache.

    Args:
        x: logical ``(B, C, H, W)``, any memory format.
        linears: from :func:`winograd_linears`.

    Returns:
        Logical ``(B, Cout, H, W)``, channels-last memory format (a view that drops the odd
        row or column the 2x2 tiles add).
    """
    b, c, h, w = x.shape
    cout = linears[0].out_features
    th, tw = (h + 1) // 2, (w + 1) // 2
    xp = _pad_nhwc(x, 1, 2 * th + 1 - h, 1, 2 * tw + 1 - w)  # (B, 2 th + 2, 2 tw + 2, C)
    out = torch.empty(b, 2 * th, 2 * tw, cout, dtype=x.dtype)
    rows = max(1, _WINOGRAD_CHUNK_FLOATS // (b * xp.shape[2] * c * 2))  # tile rows per chunk
    for r0 in range(0, th, rows):
        n = min(rows, th - r0)
        across = torch.empty(4, b, n, xp.shape[2], c, dtype=x.dtype)  # B^T d over time
        _tile_transform([xp[:, 2 * r0 + k: 2 * (r0 + n) + k: 2] for k in range(4)], across)
        tiles = torch.empty(4, 4, b, n, tw, c, dtype=x.dtype)  # B^T d B
        for p in range(4):
            _tile_transform([across[p][:, :, k: 2 * tw + k: 2] for k in range(4)], tiles[p])
        flat = tiles.view(16, -1, c)
        prod = [lin(flat[i]).view(b, n, tw, cout) for i, lin in enumerate(linears)]
        half = torch.empty(2, 4, b, n, tw, cout, dtype=x.dtype)  # A^T M over time
        for q in range(4):
            _output_transform([prod[4 * p + q] for p in range(4)], half[0, q], half[1, q])
        block = out[:, 2 * r0: 2 * (r0 + n)]
        for a in range(2):
            rows_a = block[:, a::2]
            _output_transform(list(half[a]), rows_a[:, :, 0::2], rows_a[:, :, 1::2])
        block.relu_()
    return out[:, :h, :w].permute(0, 3, 1, 2)
