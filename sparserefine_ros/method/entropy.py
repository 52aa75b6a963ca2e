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


def select_uncertain(
    entropy: torch.Tensor, tau: float, max_fraction: float | None = None
) -> torch.Tensor:
    """Boolean mask of the pixels to refine: ``entropy > tau``, optionally within a budget.

    ``entropy`` is (B, ...) with one image per leading index. With ``max_fraction`` in (0, 1],
    at most ``ceil(max_fraction * pixels_per_image)`` pixels per image are kept: those of
    highest entropy, ties going to the lower flat (raster) index, so the result is deterministic.
    The budget bounds the refinement cost of a frame whatever the scene.
    """
    mask = entropy > tau
    if max_fraction is None:
        return mask
    if not 0.0 < max_fraction <= 1.0:
        raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
    flat_mask = mask.reshape(mask.shape[0], -1)
    budget = math.ceil(max_fraction * flat_mask.shape[1])
    flat_entropy = entropy.reshape(flat_mask.shape)
    for image in range(flat_mask.shape[0]):
        keep, values = flat_mask[image], flat_entropy[image]
        candidates = values[keep]
        if candidates.numel() <= budget:
            continue
        # The budget-th highest entropy (a selection, not a full sort: 3-4x faster at 2 MP);
        # everything above it stays, and of the pixels equal to it the first in raster order.
        cut = torch.kthvalue(candidates, candidates.numel() - budget + 1).values
        above = keep & (values > cut)
        ties = keep & (values == cut)
        room = budget - int(above.sum())
        flat_mask[image] = above | (ties & (torch.cumsum(ties, 0) <= room))
    return flat_mask.reshape(mask.shape)
