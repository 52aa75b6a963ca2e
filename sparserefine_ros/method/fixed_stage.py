"""SparseRefine's sparse stage on tensors of fixed shape.

With a pixel budget, the stage (entropy, selection, neighbour maps, refiner, ensembler, class
map) can run on a fixed number of sites: the budget's worth of dense pixels per image, those
below the threshold kept as padding with their results discarded. Every shape then follows from
the image size and the budget alone, so ``torch.compile(fullgraph=True, dynamic=False)``
compiles the whole stage as one graph: the precondition for CUDA graphs
(``mode="reduce-overhead"``) and fused kernels, where the eager stage launches hundreds of small
kernels and waits on the host for data-dependent sizes. It selects what the eager stage selects
(the highest-entropy dense pixels above ``tau``, within the budget) and gives its classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .entropy import upsampled_statistics
from .selection import upsample_nearest
from .sparse import SparseTensor
from .sparse.maps import build_fixed_maps
from .sparserefine import SparseRefine


@dataclass
class FixedStageOutput:
    """Full-resolution class maps (B, H, W) and the dense-resolution maps behind them."""

    classes: torch.Tensor  # refined
    dense_classes: torch.Tensor  # the dense prediction, upsampled nearest
    low_entropy: torch.Tensor  # (B, h, w) float32
    low_classes: torch.Tensor  # (B, h, w)
    low_mask: torch.Tensor  # (B, h, w) bool: the dense pixels refined


def block_factors(full_size: tuple[int, int], low_size: tuple[int, int]) -> tuple[int, int]:
    """Full-resolution pixels per dense pixel along each axis; the fixed stage needs whole
    numbers (e.g. 2048x1024 at scale 0.5)."""
    (height, width), (low_h, low_w) = full_size, low_size
    if height % low_h or width % low_w:
        raise ValueError(
            f"the fixed-shape stage needs a whole number of full-resolution pixels per dense "
            f"pixel: {width}x{height} over {low_w}x{low_h}"
        )
    return height // low_h, width // low_w


def budget_pixels(model: SparseRefine, full_size: tuple[int, int], low_size) -> int:
    """Dense pixels refined at most per image: the eager selection's budget in whole blocks."""
    if model.max_fraction is None:
        raise ValueError("the fixed-shape stage needs a budget (max_fraction)")
    fy, fx = block_factors(full_size, low_size)
    budget = math.ceil(model.max_fraction * full_size[0] * full_size[1])
    return max(1, min(budget // (fy * fx), low_size[0] * low_size[1]))


def fixed_sparse_stage(
    model: SparseRefine, full: torch.Tensor, low_logits: torch.Tensor
) -> FixedStageOutput:
    """Select, refine and fuse on fixed shapes, from uint8 images ``full`` (B, 3, H, W) and the
    dense logits (B, C, h', w') at the model's output stride; the dense input size must be a
    whole fraction of the images'."""
    batch, _, height, width = full.shape
    low_h, low_w = model.dense_size(height, width)
    fy, fx = block_factors((height, width), (low_h, low_w))
    count = budget_pixels(model, (height, width), (low_h, low_w))
    device = low_logits.device
    low_entropy, low_classes = upsampled_statistics(low_logits, (low_h, low_w), static=True)
    top, index = low_entropy.flatten(1).topk(count, dim=1)  # (B, count)
    chosen = top > model.tau
    # Every chosen dense pixel's block of fy x fx full-resolution sites, in fixed order.
    images = torch.arange(batch, device=device)[:, None, None].expand(batch, count, fy * fx)
    dy = torch.arange(fy, device=device).repeat_interleave(fx)
    dx = torch.arange(fx, device=device).repeat(fy)
    low_y, low_x = (index // low_w)[..., None], (index % low_w)[..., None]
    y, x = low_y * fy + dy, low_x * fx + dx
    real = chosen[..., None].expand_as(y).reshape(-1)
    images, y, x = images.reshape(-1), y.reshape(-1), x.reshape(-1)
    # Padding sites are read from the first image but placed in a phantom one (index B).
    sites = torch.stack((images, y, x), dim=1)
    inputs = model.site_inputs(full, low_logits, sites, share_context=False)
    zero = torch.zeros_like(y)
    placed = torch.stack((torch.where(real, images, batch), torch.where(real, y, zero),
                          torch.where(real, x, zero)), dim=1)  # fmt: skip
    sparse = SparseTensor(placed, inputs.feats, batch + 1, (height, width))
    if model.refiner.uses_maps:
        aligned = fy % 2 == 0 and fx % 2 == 0  # each block splits into whole 2x2 cells
        first_coarse = placed.shape[0] // 4 if aligned else placed.shape[0]
        build_fixed_maps(sparse, len(model.refiner.widths), first_coarse)
    fused, _ = model.ensembler(inputs.dense_logits, model.sparse_logits(sparse, inputs))
    # Class maps: the dense prediction upsampled, the fused one written at the real sites (the
    # padding sites write into one spare element past the end).
    dense_classes = upsample_nearest(low_classes, (height, width))
    spare = batch * height * width
    target = torch.where(real, (images * height + y) * width + x, spare)
    flat = torch.cat((dense_classes.reshape(-1), dense_classes.new_zeros(1)))
    classes = flat.scatter(0, target, fused.argmax(dim=1).to(flat.dtype))[:spare]
    low_target = torch.where(chosen, torch.arange(batch, device=device)[:, None] * low_h * low_w
                             + index, batch * low_h * low_w).reshape(-1)  # fmt: skip
    low_mask = torch.zeros(batch * low_h * low_w + 1, dtype=torch.bool, device=device)
    low_mask = low_mask.scatter(0, low_target, torch.ones_like(low_target, dtype=torch.bool))
    return FixedStageOutput(
        classes.view(batch, height, width),
        dense_classes,
        low_entropy,
        low_classes,
        low_mask[:-1].view(batch, low_h, low_w),
    )
