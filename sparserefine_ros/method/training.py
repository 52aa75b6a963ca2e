"""Training of the refiner and ensembler over a frozen dense model, as in the reference.

Loss: cross-entropy of the sparse logits plus cross-entropy of the fused logits, over the
selected pixels only (pixels labelled ``ignore_index`` excluded). AdamW (lr 3e-4, weight decay
0.05) with a cosine schedule. Data loading and augmentation are the caller's.

``distill`` adds what the reference does not have: the dense model's own prediction at full
resolution as a teacher. Most of the dense model's errors inside the selection are errors it
also makes at full resolution, which no small refiner can fix and which drown the signal in
the labels; what the low resolution loses (where a boundary runs, a thin pole) is what the
full-resolution prediction has, and a refiner can learn it from the full-resolution image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .selection import bilinear_at
from .sparserefine import DenseModel, RefineOutput, SparseRefine

IGNORE_INDEX = 255

Teacher = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DenseTargets:
    """The frozen dense model's outputs for one batch, computed beforehand (the model does not
    change while the refiner trains, so a trainer may run it once per image and keep them)."""

    low_logits: torch.Tensor  # (B, C, h', w') at the output stride, as ``run_dense`` gives them
    teacher: Teacher | None = None  # selected coords (N, 3) -> full-resolution logits (N, C)


@dataclass
class StepMetrics:
    """One batch's loss terms and accuracies over its selected, labelled pixels.

    Accuracies are NaN when no selected pixel has a valid label (then no update is made).
    """

    loss: float
    loss_sparse: float
    loss_fused: float
    num_selected: int
    num_valid: int
    acc_dense: float
    acc_sparse: float
    acc_fused: float
    acc_teacher: float  # the full-resolution dense prediction's (NaN without a teacher)
    gate_mean: float
    stepped: bool


def sparserefine_loss(
    output: RefineOutput,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    teacher_logits: torch.Tensor | None = None,
    distill: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, sparse, fused) mean cross-entropies over the selected pixels with valid labels.

    ``labels`` is (B, H, W) at full resolution. With ``teacher_logits`` (N, C) at the selected
    pixels, each term is ``(1 - distill)`` times the cross-entropy with the labels plus
    ``distill`` times the cross-entropy with the teacher's probabilities. With no valid pixel
    all three are 0.
    """
    if not 0.0 <= distill <= 1.0 or (distill > 0.0) != (teacher_logits is not None):
        raise ValueError(f"distill must be in [0, 1], > 0 exactly with a teacher: {distill}")
    target = _selected_labels(output, labels)
    valid = target != ignore_index
    num_valid = valid.sum().clamp(min=1)
    teacher = None if teacher_logits is None else F.softmax(teacher_logits[valid], dim=1)

    def term(logits: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
        if teacher is not None:
            soft = F.cross_entropy(logits[valid], teacher, reduction="sum")
            loss = (1.0 - distill) * loss + distill * soft
        return loss / num_valid

    sparse, fused = term(output.sparse_logits), term(output.logits)
    return sparse + fused, sparse, fused


def train_step(
    dense_model: DenseModel | DenseTargets,
    model: SparseRefine,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ignore_index: int = IGNORE_INDEX,
    distill: float = 0.0,
) -> StepMetrics:
    """One update of ``model`` on uint8 RGB ``images`` (B, 3, H, W) and ``labels`` (B, H, W).

    The dense model runs without gradients in eval mode (frozen, BatchNorm statistics included);
    with ``distill`` > 0 also at full resolution, as the teacher (module docstring). Given
    ``DenseTargets`` instead of a model, their logits and teacher are used.
    A batch with no selected labelled pixel makes no update (and does not advance the schedule);
    under DDP that holds for the global batch, and a rank with nothing to learn from still joins
    the gradient all-reduce with zero gradients, so the ranks stay in step.
    """
    model.train()
    output, labels, teacher = _forward(dense_model, model, images, labels, distill > 0.0)
    losses = sparserefine_loss(output, labels, ignore_index, teacher, distill)
    loss = losses[0]
    metrics = _metrics(output, labels, losses, ignore_index, teacher)
    num_valid = metrics.num_valid
    if dist.is_available() and dist.is_initialized():
        total = torch.tensor([num_valid], device=loss.device)
        dist.all_reduce(total)
        num_valid = int(total)
        if not metrics.num_valid:  # maybe not even connected to the weights: reach them all
            loss = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
    if num_valid:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        metrics.stepped = True
    return metrics


@torch.no_grad()
def eval_step(
    dense_model: DenseModel | DenseTargets,
    model: SparseRefine,
    images: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
) -> StepMetrics:
    """``train_step``'s metrics in eval mode, without an update (label loss only)."""
    model.eval()
    output, labels, _ = _forward(dense_model, model, images, labels, False)
    return _metrics(output, labels, sparserefine_loss(output, labels, ignore_index), ignore_index)


def make_optimizer(
    model: nn.Module, lr: float = 3e-4, weight_decay: float = 0.05
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters with the reference's defaults."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps: {warmup_steps}, {total_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _forward(
    dense: DenseModel | DenseTargets,
    model: SparseRefine,
    images: torch.Tensor,
    labels: torch.Tensor,
    with_teacher: bool,
) -> tuple[RefineOutput, torch.Tensor, torch.Tensor | None]:
    """The refinement of ``images``, the labels on its device and, ``with_teacher``, the dense
    model's full-resolution logits at the selected pixels."""
    if labels.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
    device = model.mean.device
    with torch.no_grad():
        if isinstance(dense, DenseTargets):
            full, low_logits, teacher_at = images.to(device), dense.low_logits, dense.teacher
            low_logits = low_logits.to(device, torch.float32)
        else:
            if isinstance(dense, nn.Module):
                dense.eval()
            full, low = model.preprocess(images.to(device))
            low_logits = model.run_dense(dense, low)

            def teacher_at(coords: torch.Tensor) -> torch.Tensor:
                native = model.run_dense(dense, model.normalize(full))
                return bilinear_at(native, *coords.unbind(1), full.shape[-2:])

    output = model(full, low_logits)
    teacher = None
    if with_teacher:
        if teacher_at is None:
            raise ValueError("distill > 0 needs a teacher: these DenseTargets have none")
        with torch.no_grad():
            teacher = teacher_at(output.selection.coords)
    return output, labels.to(device, torch.int64), teacher


def _selected_labels(output: RefineOutput, labels: torch.Tensor) -> torch.Tensor:
    b, y, x = output.selection.coords.unbind(1)
    return labels[b, y, x]


@torch.no_grad()
def _metrics(
    output: RefineOutput,
    labels: torch.Tensor,
    losses: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ignore_index: int,
    teacher_logits: torch.Tensor | None = None,
) -> StepMetrics:
    target = _selected_labels(output, labels)
    valid = target != ignore_index
    num_valid = int(valid.sum())

    def accuracy(logits: torch.Tensor | None) -> float:
        if not num_valid or logits is None:
            return math.nan
        return float((logits.argmax(dim=1) == target)[valid].float().mean())

    loss, loss_sparse, loss_fused = (float(t.detach()) for t in losses)
    return StepMetrics(
        loss=loss,
        loss_sparse=loss_sparse,
        loss_fused=loss_fused,
        num_selected=target.numel(),
        num_valid=num_valid,
        acc_dense=accuracy(output.dense_logits),
        acc_sparse=accuracy(output.sparse_logits),
        acc_fused=accuracy(output.logits),
        acc_teacher=accuracy(teacher_logits),
        gate_mean=float(output.gate.mean()) if output.gate.numel() else math.nan,
        stepped=False,
    )
