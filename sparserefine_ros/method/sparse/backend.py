"""Registry of sparse convolution implementations behind one interface.

Only ``"torch"`` (pure PyTorch, CPU and CUDA, always available) is implemented. Extension point:
an accelerated backend (spconv on CUDA, TorchSparse) registers a ``SparseConvBackend`` with
``register_backend``. Its three ops must take and return ``SparseTensor``, use the weight
layouts documented in ``functional``, give the same output sites in the same order as the torch
backend (the UNet concatenates skips row by row), and may keep their own maps in the tensor's
``cache`` under their own keys. Then checkpoints move between backends unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from . import functional
from .tensor import SparseTensor

ConvOp = Callable[[SparseTensor, torch.Tensor, "torch.Tensor | None"], SparseTensor]


class SparseConvBackend(NamedTuple):
    submanifold_conv3x3: ConvOp
    down_conv2x2: ConvOp
    up_conv2x2: ConvOp


DEFAULT_BACKEND = "torch"

_BACKENDS: dict[str, SparseConvBackend] = {
    DEFAULT_BACKEND: SparseConvBackend(
        functional.submanifold_conv3x3, functional.down_conv2x2, functional.up_conv2x2
    )
}


def register_backend(name: str, backend: SparseConvBackend) -> None:
    if name in _BACKENDS:
        raise ValueError(f"sparse conv backend {name!r} is already registered")
    _BACKENDS[name] = backend


def get_backend(name: str) -> SparseConvBackend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown sparse conv backend {name!r}; available: {available_backends()} "
            "(spconv and TorchSparse are not bundled: register them with register_backend)"
        ) from None


def available_backends() -> list[str]:
    return sorted(_BACKENDS)
