"""``nn.Module`` layers over ``SparseTensor``; weights shaped like their dense counterparts."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import functional
from .backend import DEFAULT_BACKEND, get_backend
from .tensor import SharedRows, SparseTensor


class _SparseConv(nn.Module):
    """Shared weight handling; the weight has the shape of the dense layer's weight."""

    _op_name: str
    _kernel_size: int
    _transposed: bool = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bias: bool = False,
        backend: str = DEFAULT_BACKEND,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.backend = backend
        self._op = getattr(get_backend(backend), self._op_name)
        channels = (in_channels, out_channels) if self._transposed else (out_channels, in_channels)
        self.weight = nn.Parameter(torch.empty(*channels, self._kernel_size, self._kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv2d``, so sparse and dense layers start alike."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.weight[0, 0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self._op(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}, "
            f"backend={self.backend!r}"
        )


class SubmanifoldConv2d(_SparseConv):
    """3x3 submanifold conv; weight (out, in, 3, 3) as ``nn.Conv2d(in, out, 3, padding=1)``."""

    _op_name = "submanifold_conv3x3"
    _kernel_size = 3

    def forward(self, x: SparseTensor, shared: SharedRows | None = None) -> SparseTensor:
        """``shared``: trailing input channels stored once per group of sites (``SharedRows``);
        the torch backend multiplies them once per group, others get them appended."""
        if shared is None:
            return self._op(x, self.weight, self.bias)
        if self.backend == DEFAULT_BACKEND:
            return functional.submanifold_conv3x3(x, self.weight, self.bias, shared=shared)
        return self._op(shared.expand(x), self.weight, self.bias)


class DownConv2d(_SparseConv):
    """Stride-2 conv; weight (out, in, 2, 2) as ``nn.Conv2d(in, out, 2, stride=2)``."""

    _op_name = "down_conv2x2"
    _kernel_size = 2


class UpConv2d(_SparseConv):
    """Stride-2 transposed conv; weight (in, out, 2, 2) as ``nn.ConvTranspose2d(in, out, 2, 2)``."""

    _op_name = "up_conv2x2"
    _kernel_size = 2
    _transposed = True


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the active sites' features (statistics over sites, not grid cells)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        if self.training and x.num_sites < 2:
            # Batch statistics of one site are undefined; a deep level of a tiny selection can
            # shrink to one site, so fall back to the running statistics instead of failing.
            feats = F.batch_norm(
                x.feats,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
            return x.replace(feats)
        return x.replace(super().forward(x.feats))


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.relu(x.feats))
