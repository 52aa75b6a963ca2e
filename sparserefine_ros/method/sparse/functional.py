"""Pure-PyTorch sparse convolutions (CPU and CUDA): gather, GEMM, scatter over cached maps.

Weights use the layouts of ``torch.nn.functional.conv2d`` (out, in, kh, kw) and
``conv_transpose2d`` (in, out, kh, kw), so a sparse layer equals its dense counterpart on a
masked image and weights move between the two unchanged. Autograd differentiates through the
gathers and index-adds, so no custom backward is needed.
"""

from __future__ import annotations

import torch

from .maps import FIXED_SHAPE, down_map, submanifold_map
from .tensor import SharedRows, SparseTensor

# When one gather + one GEMM (im2col) beats one small gather/GEMM/scatter per kernel offset, on
# the 2-core target CPU (one 3x3 conv, 2048x1024, clustered sites, 16 channels; AMD EPYC,
# `sparserefine bench --fractions 0.005 0.02 0.1 --threads N --repeats 5`, ms per-offset/im2col):
# - 1 thread: 2.5/2.2 at 0.5 %, 8.8/11.0 at 2 %, 115/164 at 10 %: per-offset wins from about
#   1 % (between the points measured) on.
# - 2 threads: 2.1/1.0, 11.2/7.8, 85/88: the GEMM uses both cores, the per-offset scatter-adds
#   do not.
# im2col moves 9 rows per site, pad rows included; per-offset moves only real pairs.
PER_OFFSET_MIN_DENSITY = 0.01  # single-threaded CPU switch point


class _GatherRows(torch.autograd.Function):
    """``source[index]`` for a 1-D index: ``index_select`` forward (on the CPU 5x faster than
    advanced indexing, 0.9 vs 4.4 ms for 94k rows of 16 floats), accumulating ``index_put_``
    backward (``index_select``'s own backward, ``index_add_``, was 3x slower on 2 threads)."""

    @staticmethod
    def forward(ctx, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = source.shape[0]
        return source.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        source_grad = grad.new_zeros((ctx.rows, *grad.shape[1:]))
        return source_grad.index_put_((index,), grad, accumulate=True), None


def gather_rows(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (any shape) of ``source`` (R, ...): (*index.shape, ...)."""
    flat = index.reshape(-1)
    if torch.is_grad_enabled() and source.requires_grad:
        rows = _GatherRows.apply(source, flat)
    else:
        rows = source.index_select(0, flat)
    return rows.view(*index.shape, *source.shape[1:])


def default_strategy(x: SparseTensor) -> str:
    """im2col, except on a single CPU thread from ``PER_OFFSET_MIN_DENSITY`` (measured above);
    always im2col on maps of fixed shape (the per-offset pairs have data-dependent sizes)."""
    if x.cache.get(FIXED_SHAPE):
        return "im2col"
    single_cpu_thread = x.feats.device.type == "cpu" and torch.get_num_threads() == 1
    if single_cpu_thread and x.density >= PER_OFFSET_MIN_DENSITY:
        return "per_offset"
    return "im2col"


STRATEGIES = ("per_offset", "im2col")


def submanifold_conv3x3(
    x: SparseTensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    strategy: str | None = None,
    shared: SharedRows | None = None,
) -> SparseTensor:
    """3x3 submanifold convolution (stride 1, padding 1): output sites are the input sites.

    ``strategy`` is ``"per_offset"``, ``"im2col"`` or None for ``default_strategy``; both give
    the same result up to float rounding. ``shared`` holds the trailing input channels that
    groups of sites share (``x.feats`` then holds the leading ones): a narrowing convolution
    multiplies them once per group.
    """
    out_channels, in_channels = weight.shape[:2]
    own = in_channels - (0 if shared is None else shared.feats.shape[1])
    _check_weight(weight, x, (out_channels, in_channels, 3, 3), own)
    if shared is not None and out_channels >= in_channels:
        x, shared = shared.expand(x), None
    if strategy is None:
        strategy = default_strategy(x)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    neighbour_map = submanifold_map(x)
    feats = x.feats
    # (9, in, out): kernel offset k = ky * 3 + kx.
    kernel = weight.permute(2, 3, 1, 0).reshape(9, in_channels, out_channels)
    if out_channels < in_channels:
        # Narrowing (a stem over wide per-site inputs): multiply every site by all 9 kernel
        # taps first, then gather the narrow products; gathering the wide rows cost 3-4x more
        # (217 -> 16 channels at 42k sites).
        taps = kernel.permute(1, 0, 2).reshape(in_channels, 9 * out_channels)
        products = feats @ taps[:own]
        if shared is not None:
            products += gather_rows(shared.feats @ taps[own:], shared.index)
        products = products.view(-1, 9, out_channels)
        if strategy == "im2col":
            padded = torch.cat((products, products.new_zeros(1, 9, out_channels)))
            taps = torch.arange(9, device=feats.device)
            rows = neighbour_map.neighbours * 9 + taps  # row of (site, tap) in padded's (N+1)*9
            out = gather_rows(padded.view(-1, out_channels), rows).sum(dim=1)
        else:
            out = products[:, 4].clone()
            for k, in_rows, out_rows in neighbour_map.pairs():
                out.index_put_((out_rows,), gather_rows(products[:, k], in_rows), accumulate=True)
    elif strategy == "im2col":
        padded = torch.cat((feats, feats.new_zeros(1, in_channels)))
        columns = gather_rows(padded, neighbour_map.neighbours).view(x.num_sites, 9 * in_channels)
        out = columns @ kernel.reshape(9 * in_channels, out_channels)
    else:
        out = feats @ kernel[4]
        for k, in_rows, out_rows in neighbour_map.pairs():
            # index_put_ rather than index_add_: on the 2-core CPU under load, index_add_'s
            # parallel kernel was 10-100x slower (8 vs 78 ms for 30k x 16 rows, 2 threads).
            out.index_put_((out_rows,), gather_rows(feats, in_rows) @ kernel[k], accumulate=True)
    if bias is not None:
        out = out + bias
    return x.replace(out)


def down_conv2x2(
    x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> SparseTensor:
    """Kernel-2 stride-2 convolution to the sites ``unique(coords // 2)`` of the next level."""
    out_channels, in_channels = weight.shape[:2]
    _check_weight(weight, x, (out_channels, in_channels, 2, 2), in_channels)
    link = down_map(x)
    padded = torch.cat((x.feats, x.feats.new_zeros(1, in_channels)))
    columns = gather_rows(padded, link.table).view(link.table.shape[0], 4 * in_channels)
    out = columns @ weight.permute(2, 3, 1, 0).reshape(4 * in_channels, out_channels)
    if bias is not None:
        out = out + bias
    return SparseTensor(
        link.coarse_coords, out, x.batch_size, link.coarse_shape, x.stride * 2, x.cache
    )


def up_conv2x2(
    x: SparseTensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> SparseTensor:
    """Kernel-2 stride-2 transposed convolution back to the finer level's sites, in its order.

    Reuses the map of the ``down_conv2x2`` that produced ``x``'s sites, so the output lines up
    row for row with the finer level's features (UNet skips concatenate directly).
    """
    in_channels, out_channels = weight.shape[:2]
    _check_weight(weight, x, (in_channels, out_channels, 2, 2), in_channels)
    link = x.cache.get(("down", x.stride // 2)) if x.stride >= 2 else None
    if link is None or link.coarse_coords.shape[0] != x.num_sites:
        raise ValueError(
            "up_conv2x2 needs the down map that produced this level: apply it to the output of "
            "down_conv2x2 (same cache)"
        )
    # One GEMM to all 4 kernel offsets of every coarse site, then pick each fine site's row.
    products = x.feats @ weight.permute(0, 2, 3, 1).reshape(in_channels, 4 * out_channels)
    out = gather_rows(products.reshape(-1, out_channels), link.fine_index)
    if bias is not None:
        out = out + bias
    return SparseTensor(
        link.fine_coords, out, x.batch_size, link.fine_shape, x.stride // 2, x.cache
    )


def _check_weight(
    weight: torch.Tensor, x: SparseTensor, expected: tuple[int, ...], in_channels: int
) -> None:
    if tuple(weight.shape) != expected:
        raise ValueError(f"weight shape {tuple(weight.shape)}, expected {expected}")
    if x.feats.shape[1] != in_channels:
        raise ValueError(f"input has {x.feats.shape[1]} channels, weight expects {in_channels}")
