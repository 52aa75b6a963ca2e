"""SparseRefine end to end: dense model at low resolution, sparse refinement at full resolution.

``SparseRefinePipeline`` wraps a ``SparseRefine`` with any dense segmentation model for
inference on uint8 RGB images, timing each stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .entropy import pixel_statistics
from .fixed_stage import fixed_sparse_stage
from .selection import Selection
from .sparserefine import DenseModel, SparseRefine, class_maps
from .timing import stage_timer


@dataclass
class SegmentationResult:
    """Pipeline output on the CPU, at the full input resolution (the entropy and mask are
    expanded from the dense resolution when read: most frames never need them)."""

    classes: torch.Tensor  # (B, H, W) class_dtype(C), refined
    dense_classes: torch.Tensor  # (B, H, W) class_dtype(C), the dense model's upsampled prediction
    selection: Selection
    dense_size: tuple[int, int]  # (h, w) at which the dense model ran
    timings_ms: dict[str, float]  # preprocess, dense, select, refine, fuse, total

    @property
    def entropy(self) -> torch.Tensor:
        """(B, H, W) float32."""
        return self.selection.entropy

    @property
    def refine_mask(self) -> torch.Tensor:
        """(B, H, W) bool."""
        return self.selection.mask

    @property
    def num_selected(self) -> list[int]:
        """Refined pixels per image."""
        return self.selection.num_selected().tolist()


# ``torch.compile`` modes of the dense model and the per-pixel statistics; "none" runs them
# eagerly ("off" would be read as false from a YAML parameter file).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


class SparseRefinePipeline:
    """Inference: uint8 RGB images in, refined full-resolution class maps out.

    ``dense_model`` is any module or callable mapping normalized float images (B, 3, h, w) to
    logits (B, C, h', w'); it runs at ``sparserefine.scale`` times the input resolution. All
    images of one call (e.g. several cameras) share a size and run as one batch.

    ``compile_mode`` other than ``"none"`` wraps the dense model and ``pixel_statistics`` (entropy
    and class map, one fused pass over the logits instead of six) in ``torch.compile``: on an
    H200 it raised SegFormer throughput 1.2-1.5x, HRNet's by -8% to +43% (docs/gpu.md). The
    first frame of each new size compiles (gpu-check's ``warmup_s``); a CPU needs a C++ compiler.

    ``fixed_stage`` runs selection, refinement and fusion as ``fixed_sparse_stage`` (tensors of
    fixed shape, the same classes; it needs a budget and a whole-number scale factor); with
    ``compile_mode`` it is compiled as one graph (``fullgraph=True``), stage timings then report
    it whole as ``refine``.
    """

    def __init__(
        self,
        dense_model: DenseModel,
        sparserefine: SparseRefine,
        device: str | torch.device = "cpu",
        compile_mode: str = "none",
        fixed_stage: bool = False,
    ) -> None:
        if compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"unknown compile_mode {compile_mode!r}; expected one of {COMPILE_MODES}"
            )
        self.device = torch.device(device)
        if isinstance(dense_model, nn.Module):
            # Channels-last weights run the convolutions in the layout oneDNN and cuDNN prefer:
            # on the 2-core CPU the HRNet forward 20 % faster at both scales, the same logits.
            dense_model = dense_model.to(self.device, memory_format=torch.channels_last).eval()
        if fixed_stage and sparserefine.max_fraction is None:
            raise ValueError("fixed_stage needs a budget: the refiner's max_fraction is None")
        self.statistics = pixel_statistics
        self.fixed_stage = fixed_sparse_stage if fixed_stage else None
        if compile_mode != "none":
            dense_model = torch.compile(dense_model, mode=compile_mode)
            self.statistics = torch.compile(pixel_statistics, mode=compile_mode, dynamic=False)
            if fixed_stage:
                self.fixed_stage = torch.compile(
                    fixed_sparse_stage, mode=compile_mode, fullgraph=True, dynamic=False
                )
        self.dense_model = dense_model
        self.model = sparserefine.to(self.device).eval()

    def sparse_stage(
        self, full: torch.Tensor, low_logits: torch.Tensor, timer
    ) -> tuple[torch.Tensor, torch.Tensor, Selection]:
        """Select, refine and fuse on the device: refined and dense class maps (B, H, W) and
        the selection; ``timer`` times the stages (the fixed stage as one)."""
        if self.fixed_stage is None:
            output = self.model(full, low_logits, timer, self.statistics)
            with timer("fuse"):
                classes, dense_classes = class_maps(output)
            return classes, dense_classes, output.selection
        with timer("refine"):
            out = self.fixed_stage(self.model, full, low_logits)
            selection = Selection.from_mask(
                out.low_entropy, out.low_classes, out.low_mask, full.shape[-2:]
            )
        return out.classes, out.dense_classes, selection

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> SegmentationResult:
        """Segment a batch of uint8 RGB images (B, 3, H, W)."""
        timer = stage_timer(self.device)
        with timer("total"):
            with timer("preprocess"):
                full, low = self.model.preprocess(images.to(self.device))
            with timer("dense"):
                low_logits = self.model.run_dense(self.dense_model, low)
            classes, dense_classes, selection = self.sparse_stage(full, low_logits, timer)
            classes, dense_classes = classes.cpu(), dense_classes.cpu()
            selection = selection.to("cpu")
        timings_ms = timer.ms
        for stage in ("select", "refine", "fuse"):  # refine is skipped when nothing is selected
            timings_ms.setdefault(stage, 0.0)
        return SegmentationResult(
            classes=classes,
            dense_classes=dense_classes,
            selection=selection,
            dense_size=tuple(low.shape[-2:]),
            timings_ms=timings_ms,
        )

    def segment_numpy(self, image: np.ndarray) -> SegmentationResult:
        """Segment one (H, W, 3) uint8 RGB array (a batch of one)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}"
            )
        return self(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None])
