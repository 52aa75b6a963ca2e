"""Training of the refiner and ensembler over a frozen dense model, as in the reference.

Loss: cross-entropy of the sparse logits plus cross-entropy of the fused logits, over the
selected pixels only (pixels labelled ``ignore_index`` excluded). AdamW (lr 3e-4, weight decay
0.05) with a cosine schedule. Data loading and augmentation are the caller's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from .sparserefine import DenseModel, RefineOutput, SparseRefine

IGNORE_INDEX = 255


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
    gate_mean: float
    stepped: bool


def sparserefine_loss(
    output: RefineOutput, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, sparse, fused) mean cross-entropies over the selected pixels with valid labels.

    ``labels`` is (B, H, W) at full resolution. With no valid pixel all three are 0.
    """
    target = _selected_labels(output, labels)
    num_valid = (target != ignore_index).sum().clamp(min=1)
    sparse = F.cross_entropy(
        output.sparse_logits, target, ignore_index=ignore_index, reduction="sum"
    )
    fused = F.cross_entropy(output.logits, target, ignore_index=ignore_index, reduction="sum")
    sparse, fused = sparse / num_valid, fused / num_valid
    return sparse + fused, sparse, fused


def train_step(
    dense_model: DenseModel,
    model: SparseRefine,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> StepMetrics:
    """One update of ``model`` on uint8 RGB ``images`` (B, 3, H, W) and ``labels`` (B, H, W).

    The dense model runs without gradients in eval mode (frozen, BatchNorm statistics included).
    A batch with no selected labelled pixel makes no update (and does not advance the schedule);
    under DDP that holds for the global batch, and a rank with nothing to learn from still joins
    the gradient all-reduce with zero gradients, so the ranks stay in step.
    """
    model.train()
    output, labels = _forward(dense_model, model, images, labels)
    loss, loss_sparse, loss_fused = sparserefine_loss(output, labels, ignore_index)
    metrics = _metrics(output, labels, (loss, loss_sparse, loss_fused), ignore_index)
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
    dense_model: DenseModel,
    model: SparseRefine,
    images: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
) -> StepMetrics:
    """``train_step``'s metrics in eval mode, without an update."""
    model.eval()
    output, labels = _forward(dense_model, model, images, labels)
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
    dense_model: DenseModel, model: SparseRefine, images: torch.Tensor, labels: torch.Tensor
) -> tuple[RefineOutput, torch.Tensor]:
    if labels.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
    device = model.mean.device
    if isinstance(dense_model, nn.Module):
        dense_model.eval()
    with torch.no_grad():
        full, low = model.preprocess(images.to(device))
        low_logits = model.run_dense(dense_model, low)
    return model(full, low_logits), labels.to(device, torch.int64)


def _selected_labels(output: RefineOutput, labels: torch.Tensor) -> torch.Tensor:
    b, y, x = output.selection.coords.unbind(1)
    return labels[b, y, x]


@torch.no_grad()
def _metrics(
    output: RefineOutput,
    labels: torch.Tensor,
    losses: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ignore_index: int,
) -> StepMetrics:
    target = _selected_labels(output, labels)
    valid = target != ignore_index
    num_valid = int(valid.sum())

    def accuracy(logits: torch.Tensor) -> float:
        if not num_valid:
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
        gate_mean=float(output.gate.mean()) if output.gate.numel() else math.nan,
        stepped=False,
    )
