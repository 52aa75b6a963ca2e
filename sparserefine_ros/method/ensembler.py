"""Gated fusion of the dense and sparse predictions at the refined pixels."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GatedEnsembler(nn.Module):
    """Per-pixel gate between dense logits ``y1`` and sparse logits ``y2`` (both (N, C)).

    ``w = sigmoid(g([p1; p2; e1; e2]))`` from the two class-probability vectors and their
    entropies, ``y = f(w * y1 + (1 - w) * y2)``. ``g`` and ``f`` are small MLPs; ``f`` is
    residual with a zero-initialised last layer and ``g`` starts at ``w = 0.5``, so an untrained
    ensembler averages the two predictions instead of scrambling them.
    """

    def __init__(self, num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.hidden = int(hidden)
        self.gate = nn.Sequential(
            nn.Linear(2 * num_classes + 2, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.head = nn.Sequential(
            nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        for last in (self.gate[-1], self.head[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    @property
    def config(self) -> dict:
        return {"num_classes": self.num_classes, "hidden": self.hidden}

    def forward(
        self, dense_logits: torch.Tensor, sparse_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused logits (N, C) and the gate ``w`` (N,), the weight given to the dense logits."""
        # One log-softmax per prediction gives both its probabilities and its entropy.
        parts = []
        for logits in (dense_logits, sparse_logits):
            log_probs = F.log_softmax(logits, dim=1)
            probs = log_probs.exp()
            parts.append((probs, -(probs * log_probs).sum(dim=1, keepdim=True)))
        (p1, e1), (p2, e2) = parts
        gate_input = torch.cat((p1, p2, e1, e2), dim=1)
        w = torch.sigmoid(self.gate(gate_input))
        fused = w * dense_logits + (1.0 - w) * sparse_logits
        return fused + self.head(fused), w.squeeze(1)
