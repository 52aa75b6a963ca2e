"""Selection geometry: which full-resolution pixels a choice at the dense resolution covers,
nearest-neighbour expansion, and windows gathered around selected sites."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch


@dataclass
class Selection:
    """Pixels chosen for refinement: chosen at the dense resolution, listed at full resolution.

    ``rows``/``cols`` give the low-resolution row/column of each full-resolution row/column
    (nearest-neighbour upsampling, ``floor(i * h / H)``), so each low-resolution pixel stands
    for a block of full-resolution ones and full-resolution views of low-res maps are plain
    gathers: neither the full-resolution logits nor, unless asked for, the full-resolution
    entropy and mask are ever materialised.
    """

    low_entropy: torch.Tensor  # (B, h, w) float32
    low_classes: torch.Tensor  # (B, h, w) class_dtype(C): the dense prediction
    low_mask: torch.Tensor  # (B, h, w) bool
    coords: torch.Tensor  # (N, 3) int64 [batch, y, x] at full resolution, raster order
    rows: torch.Tensor  # (H,) int64
    cols: torch.Tensor  # (W,) int64

    @property
    def entropy(self) -> torch.Tensor:
        """(B, H, W) float32: the low-res entropy repeated over each block."""
        return self.upsample(self.low_entropy)

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: the selected pixels."""
        return self.upsample(self.low_mask)

    def num_selected(self) -> torch.Tensor:
        """(B,) int64: selected full-resolution pixels per image."""
        return torch.bincount(self.coords[:, 0], minlength=self.low_mask.shape[0])

    def upsample(self, low: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour upsampling of a (B, h, w) map to (B, H, W)."""
        return _nearest(low, self.rows, self.cols)

    @classmethod
    def from_mask(
        cls,
        low_entropy: torch.Tensor,
        low_classes: torch.Tensor,
        low_mask: torch.Tensor,
        full_size: Sequence[int],
    ) -> Selection:
        """The selection of the dense pixels ``low_mask`` (B, h, w), listed at ``full_size``."""
        height, width = int(full_size[0]), int(full_size[1])
        low_h, low_w = low_mask.shape[-2:]
        rows, cols = nearest_indices((height, width), (low_h, low_w), low_mask.device)
        coords = expand_blocks(
            torch.nonzero(low_mask), block_spans(rows, low_h), block_spans(cols, low_w),
            (height, width),
        )  # fmt: skip
        return cls(low_entropy, low_classes, low_mask, coords, rows, cols)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Selection:
        return Selection(
            *(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self))
        )


def _nearest(low: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    (batch, low_h, low_w), height, width = low.shape, rows.shape[0], cols.shape[0]
    if height % low_h == 0 and width % low_w == 0:
        # Whole factors (``rows`` = i // fy): broadcast copies, columns then whole rows (1.6x
        # faster than one 5-D copy, which is 7x faster than two gathers).
        fy, fx = height // low_h, width // low_w
        wide = low[:, :, :, None].expand(batch, low_h, low_w, fx).reshape(batch, low_h, width)
        return wide[:, :, None].expand(batch, low_h, fy, width).reshape(batch, height, width)
    return low.index_select(1, rows).index_select(2, cols)


def nearest_indices(
    full_size: Sequence[int], low_size: Sequence[int], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The low-resolution row of each full-resolution row and the same for columns:
    nearest-neighbour upsampling, ``floor(i * h / H)``."""
    (height, width), (low_h, low_w) = full_size, low_size
    rows = torch.arange(int(height), device=device) * low_h // int(height)
    cols = torch.arange(int(width), device=device) * low_w // int(width)
    return rows, cols


def upsample_nearest(low: torch.Tensor, full_size: Sequence[int]) -> torch.Tensor:
    """A (B, h, w) map at (B, H, W), as the pipeline upsamples dense predictions."""
    return _nearest(low, *nearest_indices(full_size, low.shape[-2:], low.device))


def block_spans(index: torch.Tensor, low_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a nearest-upsampling index map (full -> low, non-decreasing): where each low-res row
    (or column) starts at full resolution and how many full-res rows it covers."""
    sizes = torch.bincount(index, minlength=low_size)
    return torch.cumsum(sizes, 0) - sizes, sizes


def expand_blocks(
    low_coords: torch.Tensor,
    row_blocks: tuple[torch.Tensor, torch.Tensor],
    col_blocks: tuple[torch.Tensor, torch.Tensor],
    full_size: tuple[int, int],
) -> torch.Tensor:
    """Full-resolution coordinates (N, 3) [batch, y, x], raster order, of the blocks covered by
    low-resolution pixels ``low_coords`` (n, 3) [batch, row, col]."""
    (row_start, row_size), (col_start, col_size) = row_blocks, col_blocks
    height, width = full_size
    b, r, c = (v[:, None, None] for v in low_coords.unbind(1))
    dy = torch.arange(int(row_size.max()), device=low_coords.device)[None, :, None]
    dx = torch.arange(int(col_size.max()), device=low_coords.device)[None, None, :]
    inside = (dy < row_size[r]) & (dx < col_size[c])
    keys = torch.sort(((b * height + row_start[r] + dy) * width + col_start[c] + dx)[inside]).values
    return torch.stack((keys // (height * width), keys // width % height, keys % width), dim=1)


def gather_patches(
    maps: torch.Tensor, b: torch.Tensor, y: torch.Tensor, x: torch.Tensor, size: int
) -> torch.Tensor:
    """(N, size * size * C) values of ``maps`` (B, C, H, W) in the ``size`` x ``size`` window
    around each site ``(b, y, x)``, window position by position (C values each); positions
    outside the map repeat its edge.

    Maps stored channels-last (camera images: HWC arrays viewed as CHW) are read as one row of
    C values per pixel, 2-3x faster than indexing across the strided channel dimension."""
    pixels = maps.permute(0, 2, 3, 1)
    if pixels.is_contiguous():
        flat = window_rows(maps.shape[2:], b, y, x, size).flatten()
        return pixels.reshape(-1, maps.shape[1]).index_select(0, flat).view(b.shape[0], -1)
    rows, cols = _window(maps.shape[2:], y, x, size)
    return maps[b[:, None], :, rows, cols].flatten(1)  # (N, size * size, C) -> (N, size²C)


def window_rows(
    map_size: Sequence[int], b: torch.Tensor, y: torch.Tensor, x: torch.Tensor, size: int
) -> torch.Tensor:
    """(N, size * size) rows of a channels-last (B * H * W, C) view of maps of ``map_size``
    (H, W) in the ``size`` x ``size`` window around each site, as ``gather_patches`` reads
    them (edges repeated)."""
    rows, cols = _window(map_size, y, x, size)
    return (b[:, None] * int(map_size[0]) + rows) * int(map_size[1]) + cols


def _window(map_size: Sequence[int], y: torch.Tensor, x: torch.Tensor, size: int):
    radius = size // 2
    steps = torch.arange(-radius, radius + 1, device=y.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    rows = (y[:, None] + dy.flatten()).clamp_(0, int(map_size[0]) - 1)
    cols = (x[:, None] + dx.flatten()).clamp_(0, int(map_size[1]) - 1)
    return rows, cols


def source_positions(
    index: torch.Tensor, low_size: int, full_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbours and weight of full-resolution rows (or columns) ``index`` in the low-res map,
    as ``F.interpolate(mode="bilinear", align_corners=False)`` places pixel centres."""
    source = ((index.to(torch.float32) + 0.5) * (low_size / full_size) - 0.5).clamp_(min=0.0)
    first = source.floor().long().clamp_(max=low_size - 1)
    return first, (first + 1).clamp_(max=low_size - 1), source - first


def bilinear_at(
    maps: torch.Tensor, b: torch.Tensor, y: torch.Tensor, x: torch.Tensor, full_size: Sequence[int]
) -> torch.Tensor:
    """(N, C) values of low-resolution ``maps`` (B, C, h, w) bilinearly upsampled to
    ``full_size`` at the full-resolution sites ``(b, y, x)``: what upsampling the whole map
    would give there, from four gathers of rows of C values per site (the map is copied
    channels-last first unless it is already: a pass over the small map, then each corner is
    one row; 3x faster on the CPU than indexing across the strided channels)."""
    height, width = maps.shape[2:]
    y0, y1, wy = source_positions(y, height, int(full_size[0]))
    x0, x1, wx = source_positions(x, width, int(full_size[1]))
    wy, wx = wy[:, None], wx[:, None]
    rows = channel_rows(maps)
    base = b * height

    def corner(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return rows.index_select(0, (base + row) * width + col)

    top = torch.lerp(corner(y0, x0), corner(y0, x1), wx)
    return torch.lerp(top, torch.lerp(corner(y1, x0), corner(y1, x1), wx), wy)


def channel_rows(maps: torch.Tensor) -> torch.Tensor:
    """(B * h * w, C) rows of C values of maps (B, C, h, w), one per pixel: a view if the maps
    are channels-last, else a copy in that order."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
