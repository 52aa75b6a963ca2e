"""HRNet-style CNN: parallel branches at 1/4 ... 1/2^(k+1) resolution, exchanged repeatedly.

HRNet keeps a high-resolution branch through the whole network and fuses it with coarser,
wider branches after every stage, which is what makes it precise at boundaries. This is the
same design at CPU size: stage ``s`` runs ``s + 1`` branches, each with ``blocks`` residual
blocks, then every branch receives the sum of all branches resized to its resolution
(strided 3x3 convs down, 1x1 conv + bilinear up). The head concatenates all branches at 1/4
resolution (HRNetV2's segmentation head); logits come out at 1/4 of the input resolution.

A CPU-sized HRNet sees only a few hundred pixels around each output, so at 2048x1024 a patch
of road or sky can look like anything. ``context_bins`` adds PSPNet's pyramid pooling to the
coarsest branch: its features averaged over a 1x1, 2x2, ... grid of the whole image, which
carry the scene layout at any input resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .registry import register_dense_model


def _conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch)
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN with an identity shortcut.

    The second BatchNorm starts at zero (torchvision's ``zero_init_residual``), so a new block
    is the identity on its (non-negative) input: ``train dense --init CKPT --model-config
    '{"blocks": 2}'`` deepens a trained model without changing what it predicts.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(channels, channels)
        self.conv2 = _conv_bn(channels, channels)
        nn.init.zeros_(self.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class Exchange(nn.Module):
    """HRNet's fusion unit: output branch ``j`` = ReLU(sum over input branches resized to ``j``)."""

    def __init__(self, in_widths: Sequence[int], out_widths: Sequence[int]) -> None:
        super().__init__()
        self.paths = nn.ModuleList()
        for j, out_ch in enumerate(out_widths):
            row = nn.ModuleList()
            for i, in_ch in enumerate(in_widths):
                if i == j:
                    row.append(nn.Identity() if in_ch == out_ch else _conv_bn(in_ch, out_ch, 1))
                elif i > j:  # coarser input: 1x1 conv, then upsampled in forward
                    row.append(_conv_bn(in_ch, out_ch, 1))
                else:  # finer input: one strided 3x3 conv per halving
                    steps = [_conv_bn(in_ch, in_ch, 3, 2) for _ in range(j - i - 1)]
                    layers = [m for s in steps for m in (s, nn.ReLU())]
                    row.append(nn.Sequential(*layers, _conv_bn(in_ch, out_ch, 3, 2)))
            self.paths.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for j, row in enumerate(self.paths):
            target = xs[j].shape[-2:] if j < len(xs) else None
            total = None
            for i, path in enumerate(row):
                y = path(xs[i])
                if i > j:
                    y = F.interpolate(y, target, mode="bilinear", align_corners=False)
                total = y if total is None else total + y
            out.append(F.relu(total))
        return out


class PyramidContext(nn.Module):
    """Pyramid pooling added to a feature map; starts as the identity (zero-initialised output)."""

    def __init__(self, channels: int, bins: Sequence[int], width: int = 32) -> None:
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        self.reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, width, 1), nn.ReLU()) for _ in self.bins
        )
        self.project = nn.Conv2d(width * len(self.bins), channels, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(reduce(F.adaptive_avg_pool2d(x, b)), size, mode="bilinear",
                          align_corners=False)
            for b, reduce in zip(self.bins, self.reduce, strict=True)
        ]  # fmt: skip
        return F.relu(x + self.project(torch.cat(pooled, dim=1)))


@register_dense_model("hrnet")
class HRNet(nn.Module):
    """Multi-resolution CNN; ``widths[k]`` channels at 1/2^(k+2) resolution, one stage per branch.

    The defaults take about a second for a 2048x1024 image on two CPU cores.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: int = 1,
        stem_width: int = 16,
        head_width: int = 48,
        context_bins: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.widths = tuple(int(w) for w in widths)
        self.blocks = int(blocks)
        self.stem_width = int(stem_width)
        self.head_width = int(head_width)
        self.context_bins = tuple(int(b) for b in context_bins)
        if not self.widths or min(self.widths) < 1 or self.blocks < 1:
            raise ValueError(f"need >= 1 positive width and >= 1 block: {widths}, {blocks}")
        self.stem = nn.Sequential(
            _conv_bn(3, stem_width, 3, 2), nn.ReLU(), _conv_bn(stem_width, self.widths[0], 3, 2),
            nn.ReLU(),
        )  # fmt: skip
        self.stages = nn.ModuleList()
        self.exchanges = nn.ModuleList()
        for stage in range(len(self.widths)):
            branches = self.widths[: stage + 1]
            self.stages.append(
                nn.ModuleList(
                    nn.Sequential(*(BasicBlock(w) for _ in range(self.blocks))) for w in branches
                )
            )
            # After the last stage only the head consumes the branches; no exchange is needed.
            if stage + 1 < len(self.widths):
                self.exchanges.append(Exchange(branches, self.widths[: stage + 2]))
        self.context = (
            PyramidContext(self.widths[-1], self.context_bins) if self.context_bins else None
        )
        self.head = nn.Sequential(
            _conv_bn(sum(self.widths), self.head_width, 1), nn.ReLU(),
            nn.Conv2d(self.head_width, self.num_classes, 1),
        )  # fmt: skip

    @property
    def config(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "widths": list(self.widths),
            "blocks": self.blocks,
            "stem_width": self.stem_width,
            "head_width": self.head_width,
            "context_bins": list(self.context_bins),
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images (B, 3, H, W) -> logits (B, C, ceil(H/4), ceil(W/4))."""
        xs = [self.stem(images)]
        for stage, branches in enumerate(self.stages):
            xs = [branch(x) for branch, x in zip(branches, xs, strict=True)]
            if stage < len(self.exchanges):
                xs = self.exchanges[stage](xs)
        if self.context is not None:
            xs[-1] = self.context(xs[-1])
        size = xs[0].shape[-2:]
        ups = [xs[0]] + [
            F.interpolate(x, size, mode="bilinear", align_corners=False) for x in xs[1:]
        ]
        return self.head(torch.cat(ups, dim=1))
