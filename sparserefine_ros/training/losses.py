"""Losses of dense-model training: plain cross-entropy, or OHEM for rare and thin classes, and
distillation from a teacher model's logits.

Road, building and sky cover most pixels and are learnt first; averaged cross-entropy then
spends most of its gradient on pixels the model already gets right. Online hard example mining
(mmsegmentation's ``OHEMPixelSampler``) keeps only the pixels whose true class has probability
below ``thresh``, and at least the hardest ``min_kept`` share of the valid pixels.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sparserefine_ros.labels import IGNORE_INDEX

DENSE_LOSSES = ("ce", "ohem")


def ohem_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    thresh: float = 0.7,
    min_kept: float = 0.125,
) -> torch.Tensor:
    """Cross-entropy (B, C, H, W) vs (B, H, W) over the hard pixels only (see module doc)."""
    pixel_loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = labels != IGNORE_INDEX
    if not bool(valid.any()):
        return pixel_loss.sum() * 0.0  # keeps the graph: every DDP rank joins the step
    with torch.no_grad():
        true_prob = torch.exp(-pixel_loss[valid])
        kept = max(1, min(int(min_kept * true_prob.numel()), true_prob.numel()))
        bound = max(thresh, float(torch.kthvalue(true_prob, kept).values))
    hard = valid & (torch.exp(-pixel_loss.detach()) <= bound)
    return pixel_loss[hard].mean()


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of logits (B, C, H, W) against the teacher's probabilities, over the
    labelled pixels (the teacher says nothing useful where the labels ignore: ego vehicle,
    unlabelled). A teacher's soft targets carry which classes a pixel resembles, where the
    labels carry one: a small model trained from scratch learns faster from them."""
    valid = labels != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0.0  # keeps the graph: every DDP rank joins the step
    soft = -(F.softmax(teacher_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1)
    return soft[valid].mean()


def dense_loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss ``name`` (one of :data:`DENSE_LOSSES`) of logits against train-id labels."""
    if name == "ohem":
        return ohem_cross_entropy(logits, labels)
    if name == "ce":
        return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    raise ValueError(f"unknown dense loss {name!r}: expected one of {', '.join(DENSE_LOSSES)}")
