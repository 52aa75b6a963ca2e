"""Pure-PyTorch 2D sparse convolution (CPU and CUDA) with a registry for accelerated backends."""

from .backend import (
    DEFAULT_BACKEND,
    SparseConvBackend,
    available_backends,
    get_backend,
    register_backend,
)
from .functional import PER_OFFSET_MIN_DENSITY, down_conv2x2, submanifold_conv3x3, up_conv2x2
from .maps import build_maps, distinct_cells
from .modules import DownConv2d, SparseBatchNorm, SparseReLU, SubmanifoldConv2d, UpConv2d
from .tensor import SharedRows, SparseTensor

__all__ = [
    "DEFAULT_BACKEND",
    "PER_OFFSET_MIN_DENSITY",
    "DownConv2d",
    "SharedRows",
    "SparseBatchNorm",
    "SparseConvBackend",
    "SparseReLU",
    "SparseTensor",
    "SubmanifoldConv2d",
    "UpConv2d",
    "available_backends",
    "build_maps",
    "distinct_cells",
    "down_conv2x2",
    "get_backend",
    "register_backend",
    "submanifold_conv3x3",
    "up_conv2x2",
]
