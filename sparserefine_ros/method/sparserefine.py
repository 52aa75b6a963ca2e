"""``SparseRefine``: the learned part of the method (sparse refiner + gated ensembler) with the
settings it was trained with, what checkpoints hold; select, refine and fuse on given dense
logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .ensembler import GatedEnsembler
from .entropy import Statistics, pixel_statistics, select_uncertain, upsampled_statistics
from .guide import GuideInputs
from .refiner import SparseRefiner
from .selection import (
    Selection,
    bilinear_at,
    block_spans,
    channel_rows,
    gather_patches,
    nearest_indices,
)
from .sparse import DEFAULT_BACKEND, SharedRows, SparseTensor, distinct_cells
from .timing import EventTimer, StageTimer

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


DenseModel = Callable[[torch.Tensor], torch.Tensor]


def normalize_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 RGB values -> float32 ``(x / 255 - mean) / std`` on ``mean``'s device, ``mean``
    and ``std`` broadcast against them (images (B, 3, H, W), or the refiner's RGB windows): the
    one normalisation of training and inference."""
    images = images.to(mean.device, torch.float32)
    return torch.addcmul(-mean / std, images, 1.0 / (255.0 * std))  # one pass, not three


def area_downscale(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """uint8 images (B, C, H, W) averaged over areas to ``size``: float32 (B, C, h, w), contiguous,
    in [0, 255].

    Whole factors of up to 128 pixels per block add, in int16 and in the order of the images'
    memory (a camera frame is an HWC array viewed as CHW), first the block's rows (contiguous
    runs of whole image rows), then its columns: on the 2-core CPU a 2048x1024 frame halves in
    5 ms and shrinks 8x in 2 ms, 3-6x faster than adding the block's strided views of the
    whole image and several times faster than ``F.interpolate(mode="area")`` on the float
    image; the same values. Other sizes take ``F.interpolate``.
    """
    batch, channels, height, width = images.shape
    low_h, low_w = int(size[0]), int(size[1])
    if (low_h, low_w) == (height, width):
        return images.float()
    fy, fx = height // low_h, width // low_w
    if height != fy * low_h or width != fx * low_w or fy * fx > 128:
        return F.interpolate(images.float(), (low_h, low_w), mode="area")
    channels_last = images.permute(0, 2, 3, 1).is_contiguous()
    pixels, row_axis = (images.permute(0, 2, 3, 1), 1) if channels_last else (images, 2)
    rows = pixels.unflatten(row_axis, (low_h, fy))
    total = rows.select(row_axis + 1, 0).to(torch.int16, memory_format=torch.contiguous_format)
    for dy in range(1, fy):
        total += rows.select(row_axis + 1, dy)
    cols = total.unflatten(row_axis + 1, (low_w, fx))
    total = cols.select(row_axis + 2, 0).clone(memory_format=torch.contiguous_format)
    for dx in range(1, fx):
        total += cols.select(row_axis + 2, dx)
    if channels_last:
        total = total.permute(0, 3, 1, 2)
    low = torch.empty((batch, channels, low_h, low_w), dtype=torch.float32, device=images.device)
    return low.copy_(total).div_(fy * fx)


@dataclass
class SiteInputs:
    """What the refiner reads at the selected sites (``SparseRefine.site_inputs``)."""

    dense_logits: torch.Tensor  # (N, C) the dense logits upsampled bilinearly to each site
    feats: torch.Tensor  # (N, F) the per-site input features
    shared: SharedRows | None  # the context window once per output pixel, or in ``feats``
    guide: GuideInputs | None  # with the refiner's ``guide`` > 1


@dataclass
class RefineOutput:
    """Per selected pixel (rows follow ``selection.coords``): the three predictions and gate."""

    selection: Selection
    dense_logits: torch.Tensor  # (N, C) the dense model's (upsampled) logits
    sparse_logits: torch.Tensor  # (N, C) the refiner's logits
    logits: torch.Tensor  # (N, C) the ensembler's fused logits
    gate: torch.Tensor  # (N,) weight of the dense logits in the fusion


class SparseRefine(nn.Module):
    """The trained part of the method and the settings it belongs with.

    ``tau`` is the entropy threshold (natural log) above which a pixel is refined;
    ``max_fraction`` optionally caps the refined share of each image; ``scale`` is the dense
    model's input resolution relative to the camera image; ``mean``/``std`` normalize RGB in
    [0, 1]. The remaining arguments shape the ``SparseRefiner`` and ``GatedEnsembler``.
    """

    def __init__(
        self,
        num_classes: int,
        tau: float = 0.1,
        max_fraction: float | None = None,
        scale: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks: int | Sequence[int] = 1,
        use_coords: bool = False,
        use_probs: bool = False,
        backend: str = DEFAULT_BACKEND,
        ensembler_hidden: int = 32,
        patch: int = 1,
        context: int = 1,
        residual: bool = False,
        stem_kernel: int = 3,
        guide: int = 1,
        guide_dim: int = 16,
    ) -> None:
        super().__init__()
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values, std > 0: {mean}, {std}")
        self.num_classes = int(num_classes)
        self.tune(tau, max_fraction)
        self.scale = float(scale)
        self.refiner = SparseRefiner(
            num_classes, widths, blocks, use_coords, use_probs, backend, patch, context, residual,
            stem_kernel, guide, guide_dim,
        )  # fmt: skip
        self.ensembler = GatedEnsembler(num_classes, ensembler_hidden)
        # Not persistent: the config carries them, the state dict holds learned weights only.
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable): ``SparseRefine.from_config`` rebuilds it."""
        refiner = self.refiner.config
        del refiner["num_classes"]
        return {
            "num_classes": self.num_classes,
            "tau": self.tau,
            "max_fraction": self.max_fraction,
            "scale": self.scale,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            **refiner,
            "ensembler_hidden": self.ensembler.hidden,
        }

    @classmethod
    def from_config(cls, config: dict) -> SparseRefine:
        return cls(**config)

    def tune(self, tau: float, max_fraction: float | None) -> None:
        """Change the selection (tau, budget) of a live module; the next call uses them."""
        if max_fraction is not None and not 0.0 < max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in (0, 1], got {max_fraction}")
        self.tau = float(tau)
        self.max_fraction = None if max_fraction is None else float(max_fraction)

    def dense_size(self, height: int, width: int) -> tuple[int, int]:
        return max(1, round(height * self.scale)), max(1, round(width * self.scale))

    @staticmethod
    def _check_images(images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 RGB images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, 3, H, W) -> normalized float32 images, on this module's device (the
        dense model's input at full resolution)."""
        self._check_images(images)
        return normalize_images(images, self.mean, self.std)

    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 RGB (B, 3, H, W) -> the same on this module's device, and the normalized
        float32 image at the dense resolution.

        Downscaling averages areas (block means for integer factors), which does not alias thin
        structures away before the dense model sees them; it runs before normalising (the two
        commute), and the full-resolution image is only ever normalised at the refined pixels.
        """
        self._check_images(images)
        full = images.to(self.mean.device)
        low = area_downscale(full, self.dense_size(*full.shape[-2:]))
        return full, normalize_images(low, self.mean, self.std)

    def run_dense(self, dense_model: DenseModel, x: torch.Tensor) -> torch.Tensor:
        """The dense model's logits (B, C, h', w') on normalized images ``x``, at its own output
        stride (a quarter or an eighth of ``x`` for most models), checked to be a logits tensor
        of this module's classes.

        They are never resized as a whole: the statistics, the class map and the refiner's
        inputs read them where needed (``upsampled_statistics``, ``bilinear_at``).
        """
        logits = dense_model(x)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            raise TypeError("the dense model must return a logits tensor (B, C, h, w)")
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"dense model gives {logits.shape[1]} classes, refiner has {self.num_classes}"
            )
        # Whole class planes (a channels-last model returns channels-last logits): the
        # statistics and the class map run plane by plane.
        return logits.float().contiguous()

    def select(
        self,
        low_logits: torch.Tensor,
        full_size: Sequence[int],
        statistics: Statistics = pixel_statistics,
    ) -> Selection:
        """Entropy and the choice at the dense input resolution (``dense_size``), from the dense
        logits at the model's output stride, each pixel weighted by the block of
        full-resolution pixels it covers; only the chosen blocks are expanded to full size.
        ``statistics`` is ``pixel_statistics`` or its compiled form (the pipeline's)."""
        height, width = int(full_size[0]), int(full_size[1])
        low_h, low_w = self.dense_size(height, width)
        rows, cols = nearest_indices((height, width), (low_h, low_w), low_logits.device)
        low_entropy, low_classes = upsampled_statistics(low_logits, (low_h, low_w), statistics)
        areas = block_spans(rows, low_h)[1][:, None] * block_spans(cols, low_w)[1]
        low_mask = select_uncertain(low_entropy, self.tau, self.max_fraction, areas)
        return Selection.from_mask(low_entropy, low_classes, low_mask, (height, width))

    def refine(
        self, full: torch.Tensor, low_logits: torch.Tensor, selection: Selection
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense and sparse logits (N, C) at the selected pixels of the uint8 images ``full``."""
        coords = selection.coords
        inputs = self.site_inputs(full, low_logits, coords)
        sparse = SparseTensor(coords, inputs.feats, full.shape[0], tuple(full.shape[-2:]))
        return inputs.dense_logits, self.sparse_logits(sparse, inputs)

    def site_inputs(
        self,
        full: torch.Tensor,
        low_logits: torch.Tensor,
        coords: torch.Tensor,
        share_context: bool = True,
    ) -> SiteInputs:
        """What the refiner reads at full-resolution sites ``coords`` (N, 3) [batch, y, x] of
        the uint8 images ``full``, from the dense logits at the model's output stride.

        The dense logits at a site are the model's logits upsampled bilinearly to it (as a
        segmentation head upsamples), not the block's value: that tells the refiner and the
        ensembler where the site lies between the output pixels' centres. The windows of
        output pixels (cells) around the one that holds the site, the dense probabilities
        (``context`` > 1) and, with ``guide`` > 1, the cells' mean colours, are the same for
        every site of a cell: with ``share_context`` they come back once per cell
        (``SharedRows``, a fifth to a tenth of the rows at 2048x1024), else appended to every
        site's features (fixed shapes). With ``guide`` > 1 the site's position inside its cell
        (in [-1, 1]) joins the features, and the guided upsampling's inputs come back.
        """
        refiner = self.refiner
        b, y, x = coords.unbind(1)
        height, width = full.shape[-2:]
        out_h, out_w = low_logits.shape[2:]
        # Channels-last once: every gather below reads a cell's logits as one row.
        low_logits = low_logits.contiguous(memory_format=torch.channels_last)
        dense_logits = bilinear_at(low_logits, b, y, x, (height, width))
        # The cell of each site: nearest, as the dense prediction is expanded.
        cell_y, cell_x = y * out_h // height, x * out_w // width
        low_probs, cell_rgb = None, None
        if (refiner.use_probs and refiner.context > 1) or refiner.guide > 1:
            low_probs = _channels_last_softmax(low_logits)  # once per cell, not per window
        if refiner.guide > 1:
            cell_rgb = normalize_images(area_downscale(full, (out_h, out_w)), self.mean, self.std)
            cell_rgb = cell_rgb.contiguous(memory_format=torch.channels_last)
        windows = self._cell_windows(low_probs, cell_rgb, (b, cell_y, cell_x), share_context)
        shared, windows = (windows, None) if isinstance(windows, SharedRows) else (None, windows)
        probs = F.softmax(dense_logits, dim=1) if refiner.use_probs else None
        rgb = gather_patches(full, b, y, x, refiner.patch)  # (N, patch² * 3)
        mean, std = (v.flatten().repeat(refiner.patch**2) for v in (self.mean, self.std))
        rgb = normalize_images(rgb, mean, std)
        guide, inside = None, None
        if refiner.guide > 1:
            inside = torch.stack(
                ((y + 0.5) * out_h / height - cell_y, (x + 0.5) * out_w / width - cell_x), dim=1
            )
            inside = inside * 2.0 - 1.0
            guide = GuideInputs(cell_rgb, low_logits, low_probs, (b, cell_y, cell_x))
        feats = refiner.features(rgb, coords, full.shape[-2:], probs, inside, windows)
        return SiteInputs(dense_logits, feats, shared, guide)

    def _cell_windows(
        self,
        low_probs: torch.Tensor | None,
        cell_rgb: torch.Tensor | None,
        cells: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        share: bool,
    ) -> torch.Tensor | SharedRows | None:
        """The refiner's per-cell input windows (probabilities, then colours): ``SharedRows``
        over the distinct cells with ``share``, else one row per site; None if it reads none."""
        refiner = self.refiner
        parts = []
        if refiner.use_probs and refiner.context > 1:
            parts.append((low_probs, refiner.context))
        if refiner.guide > 1:
            parts.append((cell_rgb, refiner.guide))
        if not parts:
            return None
        b, cell_y, cell_x = cells
        index = None
        if share:
            batch, _, out_h, out_w = parts[0][0].shape
            flat = (b * out_h + cell_y) * out_w + cell_x
            cell, index = distinct_cells(flat, batch * out_h * out_w)
            b, cell_y, cell_x = cell // (out_h * out_w), cell // out_w % out_h, cell % out_w
        rows = torch.cat([gather_patches(maps, b, cell_y, cell_x, side) for maps, side in parts], 1)
        return rows if index is None else SharedRows(rows, index)

    def sparse_logits(self, sparse: SparseTensor, inputs: SiteInputs) -> torch.Tensor:
        """The refiner's logits at ``sparse``'s sites (a correction of the dense ones if
        residual), from ``site_inputs``' ``inputs`` at the same sites."""
        logits = self.refiner(sparse, inputs.shared, inputs.guide)
        return logits + inputs.dense_logits if self.refiner.residual else logits

    def forward(
        self,
        full: torch.Tensor,
        low_logits: torch.Tensor,
        timer: StageTimer | EventTimer | None = None,
        statistics: Statistics = pixel_statistics,
    ) -> RefineOutput:
        """Select, refine and fuse, given the uint8 full-resolution images (``preprocess``) and
        the dense logits."""

        def stage(name: str):
            return nullcontext() if timer is None else timer(name)

        with stage("select"):
            selection = self.select(low_logits, full.shape[-2:], statistics)
        if selection.coords.shape[0] == 0:
            empty = low_logits.new_zeros(0, self.num_classes)
            return RefineOutput(selection, empty, empty, empty, low_logits.new_zeros(0))
        with stage("refine"):
            dense_logits, sparse_logits = self.refine(full, low_logits, selection)
        with stage("fuse"):
            logits, gate = self.ensembler(dense_logits, sparse_logits)
        return RefineOutput(selection, dense_logits, sparse_logits, logits, gate)


def _channels_last_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes of channels-last logits (B, C, h, w), channels-last too: as rows
    of C values (``F.softmax`` on the 4-D tensor is slower and returns NCHW, whose windows are
    then gathered across strided channels)."""
    batch, num_classes, height, width = logits.shape
    probs = F.softmax(channel_rows(logits), dim=1)
    return probs.view(batch, height, width, num_classes).permute(0, 3, 1, 2)


def class_maps(output: RefineOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined and dense class maps (B, H, W) at full resolution: the dense prediction upsampled
    nearest, with the fused prediction written over the selected pixels."""
    selection = output.selection
    dense_classes = selection.upsample(selection.low_classes)
    classes = dense_classes.clone()
    if output.logits.shape[0]:
        b, y, x = selection.coords.unbind(1)
        classes[b, y, x] = output.logits.argmax(dim=1).to(classes.dtype)
    return classes, dense_classes
