"""Colour-guided upsampling of the dense logits at the refined sites.

Where the low resolution blurs a boundary, the classes on either side are still right a few
output pixels away; what it lost is which of them a full-resolution pixel belongs to. The
full-resolution colour says it: a pixel belongs with the neighbouring output pixel (cell) whose
colour and classes it matches. ``GuidedUpsampling`` learns that match as attention: each site
weighs the ``window`` x ``window`` cells around the one that holds it by the dot product of its
query (from its refiner features) with each cell's key (from the cell's mean colour and class
probabilities, computed once per cell on the whole grid), plus a learned bias per window
position, and takes the weighted mean of their logits: a learned joint bilateral upsampling.
It reads the image and the dense logits only, so it stays independent of the dense model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .selection import channel_rows, window_rows


@dataclass
class GuideInputs:
    """What the guided upsampling reads besides the refiner's features: per cell of the dense
    logits' grid and, per site, the cell that holds it."""

    cell_rgb: torch.Tensor  # (B, 3, h, w) normalised mean colour of each cell's pixels
    low_logits: torch.Tensor  # (B, C, h, w) the dense logits at the output stride
    low_probs: torch.Tensor  # (B, C, h, w) their softmax (all three read fastest channels-last)
    cells: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (N,) batch, row, column per site


class GuidedUpsampling(nn.Module):
    """Logits (N, C) at sites from the dense logits of the cells around each site.

    ``features`` is the width of the per-site features the queries come from, ``dim`` that of
    queries and keys. The position bias starts at 0, so an untrained module averages the window
    with weights set by the colour and class keys alone.
    """

    def __init__(self, num_classes: int, features: int, window: int = 3, dim: int = 16) -> None:
        super().__init__()
        if int(window) < 3 or int(window) % 2 == 0:
            raise ValueError(f"guide window must be an odd number >= 3, got {window}")
        self.num_classes, self.window, self.dim = int(num_classes), int(window), int(dim)
        self.key = nn.Linear(3 + num_classes, dim)
        self.query = nn.Linear(features, dim, bias=False)
        self.position = nn.Parameter(torch.zeros(self.window**2))

    def forward(self, features: torch.Tensor, inputs: GuideInputs) -> torch.Tensor:
        """Logits (N, C) at N sites with ``features`` (N, features).

        Window position by window position: gathering whole (N, window², C) windows made
        tensors of tens of MB per frame, each a fresh allocation the CPU pays for in page faults
        (3x slower at 42k sites)."""
        logits = inputs.low_logits
        num_classes, height, width = logits.shape[1:]
        # Keys once per cell of the grid (32k at 2048x1024), not per site and window position:
        # the key layer's colour and class columns apply to the rows of each map (no concat).
        rgb, probs = (channel_rows(maps) for maps in (inputs.cell_rgb, inputs.low_probs))
        weight = self.key.weight
        keys = torch.addmm(self.key.bias, rgb, weight[:, :3].T).addmm_(probs, weight[:, 3:].T)
        logit_rows = channel_rows(logits)
        rows = window_rows((height, width), *inputs.cells, self.window)
        query = self.query(features)
        scores = torch.stack(
            [(keys.index_select(0, at) * query).sum(dim=1) for at in rows.unbind(1)], dim=1
        )
        weights = F.softmax(scores + self.position, dim=1)
        out = torch.zeros_like(features[:, :1]).expand(-1, num_classes).contiguous()
        for position, at in enumerate(rows.unbind(1)):
            out.addcmul_(weights[:, position : position + 1], logit_rows.index_select(0, at))
        return out

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, window={self.window}, dim={self.dim}"
