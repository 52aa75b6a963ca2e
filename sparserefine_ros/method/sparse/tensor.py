"""A 2D sparse tensor: active sites of a (batch, height, width) grid and their features."""

from __future__ import annotations

import torch


class SparseTensor:
    """Features at the active sites of a batch of 2D grids at one resolution level.

    ``coords`` is (N, 3) int64 ``[batch, y, x]`` in the units of this level's grid (a site of a
    stride-``s`` level covers ``s x s`` full-resolution pixels). ``cache`` is shared by every
    tensor derived from the same input, so each level's neighbour map and each down/up map is
    built once and reused by every convolution of that level.
    """

    __slots__ = ("batch_size", "cache", "coords", "feats", "spatial_shape", "stride")

    def __init__(
        self,
        coords: torch.Tensor,
        feats: torch.Tensor,
        batch_size: int,
        spatial_shape: tuple[int, int],
        stride: int = 1,
        cache: dict | None = None,
    ) -> None:
        if coords.dim() != 2 or coords.shape[1] != 3:
            raise ValueError(f"coords must be (N, 3) [batch, y, x], got {tuple(coords.shape)}")
        if coords.dtype != torch.int64:
            raise TypeError(f"coords must be int64, got {coords.dtype}")
        if feats.dim() != 2 or feats.shape[0] != coords.shape[0]:
            raise ValueError(
                f"feats must be (N, C) with N = {coords.shape[0]}, got {tuple(feats.shape)}"
            )
        self.coords = coords
        self.feats = feats
        self.batch_size = int(batch_size)
        self.spatial_shape = (int(spatial_shape[0]), int(spatial_shape[1]))
        self.stride = int(stride)
        self.cache = {} if cache is None else cache

    @property
    def num_sites(self) -> int:
        return self.coords.shape[0]

    @property
    def density(self) -> float:
        """Share of the grid's sites that are active (drives the gather strategy)."""
        height, width = self.spatial_shape
        return self.num_sites / max(1, self.batch_size * height * width)

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """Same sites (and map cache), new features."""
        return SparseTensor(
            self.coords, feats, self.batch_size, self.spatial_shape, self.stride, self.cache
        )

    def __repr__(self) -> str:
        return (
            f"SparseTensor(num_sites={self.num_sites}, channels={self.feats.shape[1]}, "
            f"batch_size={self.batch_size}, spatial_shape={self.spatial_shape}, "
            f"stride={self.stride})"
        )


class SharedRows:
    """Trailing input channels that groups of sites share, stored once per group: site ``i``'s
    channels are ``feats[index[i]]``.

    The refiner's dense context window is the same for every site of one output pixel of the
    dense model (an output pixel covers 8x8 full-resolution pixels at stride 4 and scale 0.5),
    so its product with the stem's weights is computed per pixel, not per site.
    """

    __slots__ = ("feats", "index")

    def __init__(self, feats: torch.Tensor, index: torch.Tensor) -> None:
        if feats.dim() != 2 or index.dim() != 1:
            raise ValueError(
                f"need feats (G, C) and index (N,), got {tuple(feats.shape)}, {tuple(index.shape)}"
            )
        self.feats = feats
        self.index = index

    def expand(self, x: SparseTensor) -> SparseTensor:
        """``x`` with the shared channels appended to every site's own."""
        return x.replace(torch.cat((x.feats, self.feats.index_select(0, self.index)), dim=1))
