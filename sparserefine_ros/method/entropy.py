"""Prediction entropy and the choice of pixels to refine."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def entropy(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Natural-log entropy ``-sum_c p_c ln p_c`` of ``softmax(logits)`` along ``dim``.

    Computed from ``log_softmax`` so saturated logits give 0, not NaN (``0 * log 0``).
    Maximum is ``ln C`` (2.944 for Cityscapes' 19 classes).
    """
    log_probs = F.log_softmax(logits, dim=dim)
    return -(log_probs.exp() * log_probs).sum(dim=dim)


def class_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer type of class maps: uint8 up to 256 classes (a 2048x1024 map is 2 MB
    to copy off the GPU and publish, not int64's 16 MB), else int32."""
    return torch.uint8 if num_classes <= 256 else torch.int32


def class_map(logits: torch.Tensor) -> torch.Tensor:
    """Argmax class map (B, h, w) ``class_dtype`` of logits (B, C, h, w).

    The argmax runs over a contiguous last dimension: on the CPU 2.7x faster than over NCHW's
    strided channels (37 vs 100 ms for 19x512x1024), same result.
    """
    classes = logits.permute(0, 2, 3, 1).contiguous().argmax(dim=-1)
    return classes.to(class_dtype(logits.shape[1]))


def pixel_statistics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (B, h, w) float32 and class map of dense logits (B, C, h, w): everything the
    method reads at every dense pixel, in one function so that ``torch.compile`` fuses it into
    one pass over the logits (eagerly it is six)."""
    return entropy(logits), class_map(logits)


def select_uncertain(
    entropy: torch.Tensor,
    tau: float,
    max_fraction: float | None = None,
    areas: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean mask of the pixels to refine: ``entropy > tau``, optionally within a budget.

    ``entropy`` is (B, ...) with one image per leading index. With ``max_fraction`` in (0, 1],
    the kept pixels of each image cover at most ``ceil(max_fraction * total area)``: those of
    highest entropy, ties going to the lower flat (raster) index, so the result is deterministic.
    ``areas`` (the shape of one image) says how many output pixels each entry stands for, 1 by
    default: a low-resolution pixel covers a block of full-resolution ones, and is kept or
    dropped whole. The budget bounds the refinement cost of a frame whatever the scene.
    """
    mask = entropy > tau
    if max_fraction is None:
        return mask
    if not 0.0 < max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    flat_mask = mask.reshape(mask.shape[0], -1)
    flat_entropy = entropy.reshape(flat_mask.shape)
    if areas is None:
        areas = torch.ones(flat_mask.shape[1], dtype=torch.int64, device=entropy.device)
    elif areas.numel() != flat_mask.shape[1] or int(areas.min()) < 1:
        raise ValueError(f"areas must be >= 1, one per pixel of an image: {tuple(areas.shape)}")
    areas = areas.reshape(-1).long()
    budget = math.ceil(max_fraction * int(areas.sum()))
    most_entries = budget // int(areas.min()) + 1  # enough entries to overflow the budget
    for image in range(flat_mask.shape[0]):
        keep, values = flat_mask[image], flat_entropy[image]
        if int(areas[keep].sum()) <= budget:
            continue
        # The entropy at which the budget overflows, from the top few entries only (a partial
        # selection, not a sort of the image): everything above it stays, and of the entries
        # equal to it those first in raster order that still fit.
        count = min(int(keep.sum()), most_entries)
        top, index = torch.topk(torch.where(keep, values, -math.inf), count)
        cut = top[int((torch.cumsum(areas[index], 0) <= budget).sum())]
        above = keep & (values > cut)
        ties = keep & (values == cut)
        room = budget - int(areas[above].sum())
        flat_mask[image] = above | (ties & (torch.cumsum(areas * ties, 0) <= room))
    return flat_mask.reshape(mask.shape)
