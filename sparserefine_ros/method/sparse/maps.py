"""Neighbour and down/up maps of a sparse tensor, built once per level from a dense index grid.

A dense int32 grid holding each active site's row (or a pad value) turns every neighbour lookup
into one gather; on the 2-core CPU of the target machines that was 5-9x faster than sorting the
coordinates and using ``searchsorted``. The grid costs 4 bytes per grid site (8 MiB for one
2048x1024 image) and is freed once the map is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .tensor import SparseTensor

# Cache key set by ``build_fixed_maps``: the maps of this input have shapes fixed by its number
# of sites, and convolutions must not take data-dependent paths (the per-offset gather).
FIXED_SHAPE = "fixed_shape"

# Kernel offset k of a 3x3 kernel is (ky, kx) = divmod(k, 3), i.e. (dy, dx) = (ky - 1, kx - 1):
# the layout of torch.nn.functional.conv2d weights, so weights compare one to one.
_CENTER = 4


@dataclass
class SubmanifoldMap:
    """For each site and each of the 9 offsets of a 3x3 kernel, the row of the neighbour.

    ``neighbours`` is (N, 9) int64; an inactive neighbour holds N, the row of a zero pad row
    appended to the features, so the one-GEMM path needs no masking.
    """

    neighbours: torch.Tensor
    _pairs: list[tuple[int, torch.Tensor, torch.Tensor]] | None = field(default=None, repr=False)

    @property
    def num_sites(self) -> int:
        return self.neighbours.shape[0]

    def pairs(self) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(offset, input rows, output rows) for every non-centre offset with active pairs."""
        if self._pairs is None:
            pairs = []
            for k in range(9):
                if k == _CENTER:
                    continue
                column = self.neighbours[:, k]
                out_rows = torch.nonzero(column < self.num_sites).squeeze(1)
                if out_rows.numel():
                    pairs.append((k, column[out_rows], out_rows))
            self._pairs = pairs
        return self._pairs


@dataclass(frozen=True)
class DownMap:
    """The stride-2 link between a level (fine) and the next one (coarse).

    Coarse sites are ``unique(fine // 2)`` in raster order on a grid of ``ceil(H/2) x ceil(W/2)``
    (the result of ``conv2d`` on the fine grid zero-padded to even size). ``table`` (Nc, 4) holds
    the fine row at each 2x2 kernel offset ``ky * 2 + kx`` of a coarse site (Nf where there is
    none); ``fine_index`` is ``parent * 4 + offset`` for every fine site, which the transposed
    convolution uses to go back to exactly the fine sites (``fine_coords``, in their order).
    """

    fine_coords: torch.Tensor
    fine_shape: tuple[int, int]
    coarse_coords: torch.Tensor
    coarse_shape: tuple[int, int]
    table: torch.Tensor
    fine_index: torch.Tensor


def submanifold_map(x: SparseTensor) -> SubmanifoldMap:
    """The 3x3 neighbour map of ``x``'s level, from its cache or built and cached."""
    return _cached(x, "subm", _build_submanifold_map)


def down_map(x: SparseTensor) -> DownMap:
    """The map from ``x``'s level to the next coarser one, from its cache or built and cached."""
    return _cached(x, "down", _build_down_map)


def _cached(x: SparseTensor, kind: str, build):
    """One map per (kind, level) in the cache ``x`` shares with every tensor of its input."""
    key = (kind, x.stride)
    if key not in x.cache:
        x.cache[key] = build(x)
    return x.cache[key]


def _build_submanifold_map(x: SparseTensor) -> SubmanifoldMap:
    height, width = x.spatial_shape
    num_sites = x.num_sites
    device = x.coords.device
    # One-site border so every offset of every site indexes inside the grid.
    padded_h, padded_w = height + 2, width + 2
    grid = torch.full(
        (x.batch_size * padded_h * padded_w,), num_sites, dtype=torch.int32, device=device
    )
    b, y, xx = x.coords.unbind(1)
    base = (b * padded_h + y + 1) * padded_w + xx + 1
    grid[base] = torch.arange(num_sites, dtype=torch.int32, device=device)
    offsets = torch.tensor(
        [dy * padded_w + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], device=device
    )
    neighbours = grid[base[:, None] + offsets[None, :]].long()
    return SubmanifoldMap(neighbours)


def _build_down_map(x: SparseTensor) -> DownMap:
    height, width = x.spatial_shape
    coarse_h, coarse_w = (height + 1) // 2, (width + 1) // 2
    device = x.coords.device
    num_fine = x.num_sites
    b, y, xx = x.coords.unbind(1)
    flat = (b * coarse_h + y // 2) * coarse_w + xx // 2
    occupied, parent = distinct_cells(flat, x.batch_size * coarse_h * coarse_w)
    fine_index = parent * 4 + (y % 2) * 2 + xx % 2
    table = torch.full((occupied.numel() * 4,), num_fine, dtype=torch.int64, device=device)
    table[fine_index] = torch.arange(num_fine, device=device)
    plane = coarse_h * coarse_w
    coarse_coords = torch.stack(
        (occupied // plane, (occupied % plane) // coarse_w, occupied % coarse_w), dim=1
    )
    return DownMap(
        x.coords,
        x.spatial_shape,
        coarse_coords,
        (coarse_h, coarse_w),
        table.view(-1, 4),
        fine_index,
    )


def distinct_cells(cells: torch.Tensor, num_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(cells, return_inverse=True)`` for cell indices in [0, ``num_cells``): a
    flag per cell of the grid and a running count of them, linear in sites and cells, instead of
    a sort of the sites (100k for a 5 % budget on a 2048x1024 frame)."""
    seen = torch.zeros(num_cells, dtype=torch.bool, device=cells.device)
    seen[cells] = True
    rank = torch.cumsum(seen, 0) - 1
    return torch.nonzero(seen).flatten(), rank.index_select(0, cells)


def build_maps(x: SparseTensor, num_levels: int) -> SparseTensor:
    """Build every map a ``num_levels``-level UNet needs on ``x`` ahead of the forward pass.

    Returns ``x`` unchanged (its cache filled); the forward pass then only computes. Useful to
    time map construction apart from the convolutions.
    """
    return _build_levels(x, num_levels, lambda level, index: down_map(level))


def build_fixed_maps(x: SparseTensor, num_levels: int, first_coarse: int) -> SparseTensor:
    """The maps of ``build_maps`` with shapes that depend on ``x``'s number of sites only, for a
    stage that ``torch.compile(fullgraph=True, dynamic=False)`` compiles as one graph.

    Padding sites lie in a phantom last image (batch index ``x.batch_size - 1``): they are
    computed like real ones but no real site ever reads them. Each coarser level has a fixed
    number of slots, the real coarse sites first, in fine-site order, then padding:
    ``first_coarse`` slots for the first down step (a bound on its real coarse sites, e.g. a
    quarter of the sites when they come in aligned 2x2 blocks), as many as the fine level has
    for the others, plus one padding slot each. Returns ``x`` (its cache filled).
    """
    x.cache[FIXED_SHAPE] = True

    def link(level: SparseTensor, index: int) -> DownMap:
        slots = first_coarse if index == 0 else level.num_sites
        level.cache[("down", level.stride)] = _fixed_down_map(level, slots)
        return level.cache[("down", level.stride)]

    return _build_levels(x, num_levels, link)


def _build_levels(x: SparseTensor, num_levels: int, link_of) -> SparseTensor:
    """Each level's neighbour map, and its down map ``link_of(level, index)`` to the next."""
    level = x
    for index in range(num_levels):
        submanifold_map(level)
        if index + 1 < num_levels:
            link = link_of(level, index)
            level = SparseTensor(
                link.coarse_coords,
                level.feats.new_empty(link.coarse_coords.shape[0], 0),
                level.batch_size,
                link.coarse_shape,
                level.stride * 2,
                level.cache,
            )
    return x


def _fixed_down_map(x: SparseTensor, slots: int) -> DownMap:
    """``_build_down_map`` without ``nonzero``: coarse sites in ``slots + 1`` rows (real ones
    first, then padding), chosen by the first fine site of each occupied coarse cell."""
    height, width = x.spatial_shape
    coarse_h, coarse_w = (height + 1) // 2, (width + 1) // 2
    device = x.coords.device
    num_fine, phantom = x.num_sites, x.batch_size - 1
    b, y, xx = x.coords.unbind(1)
    real = b < phantom
    trash = phantom * coarse_h * coarse_w  # one cell past the real images' cells
    flat = torch.where(real, (b * coarse_h + y // 2) * coarse_w + xx // 2, trash)
    sites = torch.arange(num_fine, device=device)
    first = torch.full((trash + 1,), num_fine, dtype=torch.int64, device=device)
    first = first.scatter_reduce(0, flat, sites, "amin")
    leader = real & (first[flat] == sites)
    padding = slots  # the last row, where every padding fine site's parent lies
    slot = torch.where(leader, torch.cumsum(leader, 0) - 1, padding)
    cell_slot = torch.full((trash + 1,), padding, dtype=torch.int64, device=device)
    cell_slot = cell_slot.scatter(0, torch.where(leader, flat, trash), slot)
    parent = torch.where(real, cell_slot[flat], padding)
    fine_index = parent * 4 + (y % 2) * 2 + xx % 2
    table = torch.full(((slots + 1) * 4,), num_fine, dtype=torch.int64, device=device)
    table = table.scatter(0, fine_index, sites)
    phantom_site = torch.tensor([phantom, 0, 0], device=device)
    coarse = torch.where(leader[:, None], torch.stack((b, y // 2, xx // 2), dim=1), phantom_site)
    coarse_coords = phantom_site.repeat(slots + 1, 1).index_copy(0, slot, coarse)
    return DownMap(
        x.coords,
        x.spatial_shape,
        coarse_coords,
        (coarse_h, coarse_w),
        table.view(-1, 4),
        fine_index,
    )
