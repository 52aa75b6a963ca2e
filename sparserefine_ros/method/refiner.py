"""The sparse network: a residual sparse UNet over the selected full-resolution pixels."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .sparse import (
    DEFAULT_BACKEND,
    DownConv2d,
    SparseBatchNorm,
    SparseReLU,
    SparseTensor,
    SubmanifoldConv2d,
    UpConv2d,
    build_maps,
)


def _conv_bn_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, SparseBatchNorm(channels), SparseReLU())


class ResidualBlock(nn.Module):
    """Two 3x3 submanifold convs with BatchNorm, plus a (1x1 projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, backend: str = DEFAULT_BACKEND):
        super().__init__()
        self.conv1 = SubmanifoldConv2d(in_channels, out_channels, backend=backend)
        self.bn1 = SparseBatchNorm(out_channels)
        self.conv2 = SubmanifoldConv2d(out_channels, out_channels, backend=backend)
        self.bn2 = SparseBatchNorm(out_channels)
        # 1x1 projection when the width changes (first decoder block after the skip concat).
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Linear(in_channels, out_channels, bias=False)
            self.project_bn = SparseBatchNorm(out_channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        y = self.bn1(self.conv1(x))
        y = self.bn2(self.conv2(y.replace(F.relu(y.feats))))
        skip = x if self.project is None else self.project_bn(x.replace(self.project(x.feats)))
        return y.replace(F.relu(y.feats + skip.feats))


class SparseRefiner(nn.Module):
    """Residual sparse UNet mapping per-pixel inputs at the selected sites to class logits.

    Inputs per site: normalized RGB at full resolution, optionally the normalized coordinates
    ``(y / H, x / W)`` and the dense model's class probabilities at the site (bilinear between
    the dense pixels). ``patch`` > 1 reads the RGB of the ``patch`` x ``patch`` full-resolution
    pixels around the site, ``context`` > 1 adds the dense probabilities of the ``context`` x
    ``context`` dense pixels around it: a selection along an
    edge is a band one or two pixels wide, whose sites have no active neighbour across the
    edge, so without these a site cannot see which side it is on. ``widths`` gives one level
    per entry (stride 1, 2, 4, ...); with ``blocks`` residual blocks per level in the encoder
    and decoder. The reference uses widths 32..1024 over 6 levels (79 M parameters, a GPU model);
    the default here is sized for a CPU. ``config`` rebuilds the same network.

    ``residual``: the output is a correction that ``SparseRefine`` adds to the dense logits at
    the site (the classifier starts at zero, so an untrained refiner repeats the dense
    prediction) instead of logits from scratch. A CPU-sized network cannot re-learn the dense
    model's classes from a pixel's neighbourhood; it can learn where along an edge they change.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: int | Sequence[int] = 1,
        use_coords: bool = False,
        use_probs: bool = False,
        backend: str = DEFAULT_BACKEND,
        patch: int = 1,
        context: int = 1,
        residual: bool = False,
    ) -> None:
        super().__init__()
        for name, side in (("patch", patch), ("context", context)):
            if int(side) < 1 or int(side) % 2 == 0:
                raise ValueError(f"{name} must be an odd number >= 1, got {side}")
        if int(context) > 1 and not use_probs:
            raise ValueError("context > 1 reads dense probabilities: it needs use_probs=True")
        widths = tuple(int(w) for w in widths)
        blocks = (int(blocks),) * len(widths) if isinstance(blocks, int) else tuple(blocks)
        if not widths or len(blocks) != len(widths) or min(blocks) < 1 or min(widths) < 1:
            raise ValueError(
                f"need >= 1 level, one positive block count per width: {widths}, {blocks}"
            )
        self.num_classes = int(num_classes)
        self.widths = widths
        self.blocks = blocks
        self.use_coords = bool(use_coords)
        self.use_probs = bool(use_probs)
        self.backend = backend
        self.patch, self.context = int(patch), int(context)
        self.in_channels = (
            3 * self.patch**2
            + 2 * self.use_coords
            + self.num_classes * (1 + (self.context**2 if self.context > 1 else 0)) * self.use_probs
        )

        self.stem = _conv_bn_relu(
            SubmanifoldConv2d(self.in_channels, widths[0], backend=backend), widths[0]
        )
        self.encoders = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(w, w, backend) for _ in range(n)))
            for w, n in zip(widths, blocks, strict=True)
        )
        self.downs = nn.ModuleList(
            _conv_bn_relu(DownConv2d(fine, coarse, backend=backend), coarse)
            for fine, coarse in itertools.pairwise(widths)
        )
        self.ups = nn.ModuleList(
            _conv_bn_relu(UpConv2d(coarse, fine, backend=backend), fine)
            for fine, coarse in itertools.pairwise(widths)
        )
        self.decoders = nn.ModuleList(
            nn.Sequential(
                ResidualBlock(2 * w, w, backend),
                *(ResidualBlock(w, w, backend) for _ in range(n - 1)),
            )
            for w, n in zip(widths[:-1], blocks[:-1], strict=True)
        )
        self.classifier = nn.Linear(widths[0], self.num_classes)
        self.residual = bool(residual)
        if self.residual:
            nn.init.zeros_(self.classifier.weight)
            nn.init.zeros_(self.classifier.bias)

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this network."""
        return {
            "num_classes": self.num_classes,
            "widths": list(self.widths),
            "blocks": list(self.blocks),
            "use_coords": self.use_coords,
            "use_probs": self.use_probs,
            "backend": self.backend,
            "patch": self.patch,
            "context": self.context,
            "residual": self.residual,
        }

    def features(
        self,
        rgb: torch.Tensor,
        coords: torch.Tensor,
        spatial_shape: tuple[int, int],
        probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-site input features (N, in_channels) from RGB (N, 3 * patch**2), coordinates
        (N, 3) and, with ``use_probs``, probabilities (N, C; N, C * (1 + context**2) with
        ``context`` > 1)."""
        parts = [rgb]
        if self.use_coords:
            size = torch.tensor(spatial_shape, dtype=rgb.dtype, device=rgb.device)
            parts.append(coords[:, 1:].to(rgb.dtype) / size)
        if self.use_probs:
            if probs is None:
                raise ValueError("this refiner was built with use_probs=True: pass probs")
            parts.append(probs.to(rgb.dtype))
        return torch.cat(parts, dim=1)

    def build_maps(self, x: SparseTensor) -> SparseTensor:
        """Build all of the UNet's neighbour/down maps on ``x`` now (else built on first use)."""
        return build_maps(x, len(self.widths))

    def forward(self, x: SparseTensor) -> torch.Tensor:
        """Class logits (N, num_classes) at ``x``'s sites, in their order."""
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.feats.shape[1]}")
        x = self.stem(x)
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < len(self.downs):
                skips.append(x)
                x = self.downs[level](x)
        for level in reversed(range(len(self.ups))):
            x = self.ups[level](x)
            x = x.replace(torch.cat((x.feats, skips[level].feats), dim=1))
            x = self.decoders[level](x)
        return self.classifier(x.feats)
