"""The sparse network: a residual sparse UNet over the selected full-resolution pixels."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .guide import GuidedUpsampling, GuideInputs
from .sparse import (
    DEFAULT_BACKEND,
    DownConv2d,
    SharedRows,
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

    ``guide`` > 1: the output is the colour-guided upsampling of the dense logits over the
    ``guide`` x ``guide`` cells around the site (``GuidedUpsampling``, queries of width
    ``guide_dim`` from the features) plus the classifier's correction, which also reads the
    guided probabilities; the site's position inside its cell joins the inputs. With it, a
    network without submanifold convolutions (``stem_kernel`` 1, one level of 0 blocks: a
    per-site layer over the ``patch`` window) recovers more than the UNet at a fraction of its
    cost (docs/models.md).
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
        stem_kernel: int = 3,
        guide: int = 1,
        guide_dim: int = 16,
    ) -> None:
        super().__init__()
        for name, side in (("patch", patch), ("context", context), ("guide", guide)):
            if int(side) < 1 or int(side) % 2 == 0:
                raise ValueError(f"{name} must be an odd number >= 1, got {side}")
        if int(context) > 1 and not use_probs:
            raise ValueError("context > 1 reads dense probabilities: it needs use_probs=True")
        if int(guide) > 1 and residual:
            raise ValueError("guide > 1 corrects the guided logits: it excludes residual=True")
        if int(stem_kernel) not in (1, 3):
            raise ValueError(f"stem_kernel must be 1 (per site) or 3, got {stem_kernel}")
        widths = tuple(int(w) for w in widths)
        blocks = (int(blocks),) * len(widths) if isinstance(blocks, int) else tuple(blocks)
        if not widths or len(blocks) != len(widths) or min(blocks) < 0 or min(widths) < 1:
            raise ValueError(f"need >= 1 level, one block count >= 0 per width: {widths}, {blocks}")
        self.num_classes = int(num_classes)
        self.widths = widths
        self.blocks = blocks
        self.use_coords = bool(use_coords)
        self.use_probs = bool(use_probs)
        self.backend = backend
        self.patch, self.context = int(patch), int(context)
        self.stem_kernel, self.guide, self.guide_dim = int(stem_kernel), int(guide), int(guide_dim)
        self.in_channels = (
            3 * self.patch**2
            + 2 * self.use_coords
            + self.num_classes * self.use_probs
            + 2 * (self.guide > 1)  # the site's position inside its cell
            + self.num_classes * self.context**2 * (self.context > 1)  # per cell: probabilities
            + 3 * self.guide**2 * (self.guide > 1)  # per cell: mean colours
        )

        stem = (
            SubmanifoldConv2d(self.in_channels, widths[0], backend=backend)
            if self.stem_kernel == 3
            else SiteLinear(self.in_channels, widths[0])
        )
        self.stem = _conv_bn_relu(stem, widths[0])
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
        self.guided = None
        if self.guide > 1:
            self.guided = GuidedUpsampling(num_classes, widths[0], self.guide, guide_dim)
        classifier_in = widths[0] + self.num_classes * (self.guided is not None)
        self.classifier = nn.Linear(classifier_in, self.num_classes)
        self.residual = bool(residual)
        if self.residual or self.guided is not None:
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
            "stem_kernel": self.stem_kernel,
            "guide": self.guide,
            "guide_dim": self.guide_dim,
        }

    def features(
        self,
        rgb: torch.Tensor,
        coords: torch.Tensor,
        spatial_shape: tuple[int, int],
        probs: torch.Tensor | None = None,
        inside: torch.Tensor | None = None,
        windows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-site input features from RGB (N, 3 * patch**2), coordinates (N, 3) and, as the
        settings ask, the probabilities at the site (N, C), the position inside the cell
        (N, 2) and the per-cell windows (N, C * context**2 + 3 * guide**2), last; without
        ``windows`` the refiner gets them as ``SharedRows`` instead."""
        parts = [rgb]
        if self.use_coords:
            size = torch.tensor(spatial_shape, dtype=rgb.dtype, device=rgb.device)
            parts.append(coords[:, 1:].to(rgb.dtype) / size)
        for name, value, needed in (
            ("probs", probs, self.use_probs),
            ("inside", inside, self.guide > 1),
        ):
            if needed and value is None:
                raise ValueError(f"this refiner reads {name}: pass them")
            if needed:
                parts.append(value.to(rgb.dtype))
        if windows is not None:
            parts.append(windows.to(rgb.dtype))
        return torch.cat(parts, dim=1)

    @property
    def uses_maps(self) -> bool:
        """Whether any layer reads neighbour or down maps (else the network is per site)."""
        return self.stem_kernel == 3 or len(self.widths) > 1 or self.blocks[0] > 0

    def build_maps(self, x: SparseTensor) -> SparseTensor:
        """Build all of the UNet's neighbour/down maps on ``x`` now (else built on first use)."""
        return build_maps(x, len(self.widths))

    def forward(
        self,
        x: SparseTensor,
        shared: SharedRows | None = None,
        guide: GuideInputs | None = None,
    ) -> torch.Tensor:
        """Class logits (N, num_classes) at ``x``'s sites, in their order. ``shared``: the
        trailing input channels (the dense context window) once per output pixel, ``x`` holding
        the others; ``guide``: what the guided upsampling reads, needed with ``guide`` > 1
        (both from ``SparseRefine.site_inputs``)."""
        channels = x.feats.shape[1] + (0 if shared is None else shared.feats.shape[1])
        if channels != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {channels}")
        if (guide is None) != (self.guided is None):
            raise ValueError(f"this refiner has guide={self.guide}: pass guide inputs exactly then")
        x = self.stem[1:](self.stem[0](x, shared))
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
        if self.guided is None:
            return self.classifier(x.feats)
        guided = self.guided(x.feats, guide)
        return guided + self.classifier(torch.cat((x.feats, F.softmax(guided, dim=1)), dim=1))


class SiteLinear(nn.Module):
    """A per-site (1x1) layer over a ``SparseTensor``: reads no neighbours, needs no maps.
    ``shared`` trailing channels are multiplied once per group of sites, as the 3x3 stem does."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, x: SparseTensor, shared: SharedRows | None = None) -> SparseTensor:
        weight = self.linear.weight
        own = x.feats.shape[1]
        out = x.feats @ weight[:, :own].T
        if shared is not None:
            out += (shared.feats @ weight[:, own:].T).index_select(0, shared.index)
        return x.replace(out)
