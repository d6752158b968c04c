"""How far in time each output step of a network looks: receptive-field arithmetic.

Every network here is local in time up to its global pooling: convolutions, eval-mode
batch norm and pooling only combine neighbouring samples. A :class:`Reach` describes the
map from the input samples to one step of some layer: step ``i`` depends on input samples
``[i * jump + lo, i * jump + hi]`` (inclusive), where ``jump`` is the layer's total stride
in samples. Composing the layers of an architecture (each model's ``time_reach()``) gives
the stride of its final time axis and the context a step needs on each side, which is what
exact chunked inference needs (:mod:`panns_infer.chunks`): a chunk whose start is a
multiple of ``jump`` and that extends ``margin`` samples past the steps it keeps computes
those steps exactly as the whole input would.

>>> r = Reach().layer(1024, stride=320, padding=512)    # the STFT: centred 1024-sample frames
>>> r
Reach(jump=320, lo=-512, hi=511)
>>> r = r.conv(3).conv(3).pool(2)                        # a ConvBlock with 2x2 pooling
>>> r.jump, r.lo, r.hi, r.margin
(640, -1152, 1471, 1280)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Reach"]


@dataclass(frozen=True)
class Reach:
    """Step ``i`` of a layer depends on input samples ``[i * jump + lo, i * jump + hi]``.

    Attributes:
        jump: input samples between consecutive steps (the product of the strides so far).
        lo: first input sample of step 0 (negative: it reaches before the input's start).
        hi: last input sample of step 0.
    """

    jump: int = 1
    lo: int = 0
    hi: int = 0

    def layer(self, kernel: int, *, stride: int = 1, padding: int = 0, dilation: int = 1) -> Reach:
        """Followed by a sliding layer (convolution or pooling) along time.

        >>> Reach().layer(3, padding=1)
        Reach(jump=1, lo=-1, hi=1)
        """
        return Reach(self.jump * stride, self.lo - padding * self.jump,
                     self.hi + (dilation * (kernel - 1) - padding) * self.jump)

    def conv(self, kernel: int, *, dilation: int = 1) -> Reach:
        """Followed by a stride-1 convolution with 'same' padding."""
        return self.layer(kernel, padding=dilation * (kernel // 2), dilation=dilation)

    def pool(self, size: int, *, padding: int = 0) -> Reach:
        """Followed by pooling with kernel = stride = ``size`` (1 is the identity)."""
        return self if size == 1 else self.layer(size, stride=size, padding=padding)

    def union(self, *others: Reach) -> Reach:
        """Two branches added or concatenated: the wider span of both (same ``jump``).

        >>> Reach(4, -2, 5).union(Reach(4, -6, 3))
        Reach(jump=4, lo=-6, hi=5)
        """
        for other in others:
            if other.jump != self.jump:
                raise ValueError(f"branches with different steps cannot be joined: {self} and {other}")
        return Reach(self.jump, min(r.lo for r in (self, *others)), max(r.hi for r in (self, *others)))

    @property
    def margin(self) -> int:
        """Context in samples, rounded up to whole steps, that a step needs beyond its own
        ``jump`` samples on either side."""
        need = max(0, -self.lo, self.hi - (self.jump - 1))
        return -(-need // self.jump) * self.jump
