"""SparseRefine end to end: dense model at low resolution, sparse refinement at full resolution.

``SparseRefine`` is the learned part (sparse refiner + gated ensembler) together with the
settings it was trained with; it is what checkpoints hold. ``SparseRefinePipeline`` wraps it
with any dense segmentation model for inference on uint8 RGB images.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from .ensembler import GatedEnsembler
from .entropy import entropy, select_uncertain
from .errors import CheckpointError
from .refiner import SparseRefiner
from .sparse import DEFAULT_BACKEND, SparseTensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CHECKPOINT_FORMAT = "sparserefine"
CHECKPOINT_VERSION = "1"

DenseModel = Callable[[torch.Tensor], torch.Tensor]


class StageTimer:
    """Wall time in ms per named stage (summed if a stage is entered twice).

    On CUDA it synchronises around each stage, otherwise asynchronous kernels would be charged
    to whichever later stage happens to wait for them.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.ms: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3


@dataclass
class Selection:
    """Pixels chosen for refinement: chosen at the dense resolution, listed at full resolution.

    ``rows``/``cols`` give the low-resolution row/column of each full-resolution row/column
    (nearest-neighbour upsampling, ``floor(i * h / H)``), so each low-resolution pixel stands
    for a block of full-resolution ones and full-resolution views of low-res maps are plain
    gathers: neither the full-resolution logits nor, unless asked for, the full-resolution
    entropy and mask are ever materialised.
    """

    low_entropy: torch.Tensor  # (B, h, w) float32
    low_mask: torch.Tensor  # (B, h, w) bool
    coords: torch.Tensor  # (N, 3) int64 [batch, y, x] at full resolution, raster order
    rows: torch.Tensor  # (H,) int64
    cols: torch.Tensor  # (W,) int64

    @property
    def entropy(self) -> torch.Tensor:
        """(B, H, W) float32: the low-res entropy repeated over each block."""
        return self.upsample(self.low_entropy)

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: the selected pixels."""
        return self.upsample(self.low_mask)

    def num_selected(self) -> torch.Tensor:
        """(B,) int64: selected full-resolution pixels per image."""
        return torch.bincount(self.coords[:, 0], minlength=self.low_mask.shape[0])

    def upsample(self, low: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour upsampling of a (B, h, w) map to (B, H, W)."""
        return _nearest(low, self.rows, self.cols)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Selection:
        return Selection(
            *(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self))
        )


def normalize_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B, 3, H, W) -> float32 ``(x / 255 - mean) / std`` on ``mean``'s device: the
    one normalisation of training and inference."""
    return (images.to(mean.device, torch.float32) / 255.0 - mean) / std


def _nearest(low: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return low.index_select(1, rows).index_select(2, cols)


def nearest_indices(
    full_size: Sequence[int], low_size: Sequence[int], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The low-resolution row of each full-resolution row and the same for columns:
    nearest-neighbour upsampling, ``floor(i * h / H)``."""
    (height, width), (low_h, low_w) = full_size, low_size
    rows = torch.arange(int(height), device=device) * low_h // int(height)
    cols = torch.arange(int(width), device=device) * low_w // int(width)
    return rows, cols


def upsample_nearest(low: torch.Tensor, full_size: Sequence[int]) -> torch.Tensor:
    """A (B, h, w) map at (B, H, W), as the pipeline upsamples dense predictions."""
    return _nearest(low, *nearest_indices(full_size, low.shape[-2:], low.device))


def _blocks(index: torch.Tensor, low_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a nearest-upsampling index map (full -> low, non-decreasing): where each low-res row
    (or column) starts at full resolution and how many full-res rows it covers."""
    sizes = torch.bincount(index, minlength=low_size)
    return torch.cumsum(sizes, 0) - sizes, sizes


def _expand_blocks(
    low_coords: torch.Tensor,
    row_blocks: tuple[torch.Tensor, torch.Tensor],
    col_blocks: tuple[torch.Tensor, torch.Tensor],
    full_size: tuple[int, int],
) -> torch.Tensor:
    """Full-resolution coordinates (N, 3) [batch, y, x], raster order, of the blocks covered by
    low-resolution pixels ``low_coords`` (n, 3) [batch, row, col]."""
    (row_start, row_size), (col_start, col_size) = row_blocks, col_blocks
    height, width = full_size
    b, r, c = (v[:, None, None] for v in low_coords.unbind(1))
    dy = torch.arange(int(row_size.max()), device=low_coords.device)[None, :, None]
    dx = torch.arange(int(col_size.max()), device=low_coords.device)[None, None, :]
    inside = (dy < row_size[r]) & (dx < col_size[c])
    keys = torch.sort(((b * height + row_start[r] + dy) * width + col_start[c] + dx)[inside]).values
    return torch.stack((keys // (height * width), keys // width % height, keys % width), dim=1)


@dataclass
class RefineOutput:
    """Per selected pixel (rows follow ``selection.coords``): the three predictions and gate."""

    selection: Selection
    dense_logits: torch.Tensor  # (N, C) the dense model's (upsampled) logits
    sparse_logits: torch.Tensor  # (N, C) the refiner's logits
    logits: torch.Tensor  # (N, C) the ensembler's fused logits
    gate: torch.Tensor  # (N,) weight of the dense logits in the fusion


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
            num_classes, widths, blocks, use_coords, use_probs, backend, patch, context
        )
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

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, 3, H, W) -> normalized float32 images, on this module's device."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 RGB images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        return normalize_images(images, self.mean, self.std)

    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 RGB (B, 3, H, W) -> normalized float32 images at full and at dense resolution.

        Downscaling uses area averaging (block means for integer factors), which does not
        alias thin structures away before the dense model sees them.
        """
        full = self.normalize(images)
        size = self.dense_size(*full.shape[-2:])
        low = full if size == tuple(full.shape[-2:]) else F.interpolate(full, size, mode="area")
        return full, low

    def run_dense(self, dense_model: DenseModel, low: torch.Tensor) -> torch.Tensor:
        """Dense logits (B, C, h, w) at the dense input size ``low.shape[-2:]``.

        Models whose output is smaller (output stride 4 or 8) or larger are resized to it
        bilinearly, as segmentation heads are; after that the method only upsamples nearest.
        """
        logits = dense_model(low)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            raise TypeError("the dense model must return a logits tensor (B, C, h, w)")
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"dense model gives {logits.shape[1]} classes, refiner has {self.num_classes}"
            )
        if logits.shape[-2:] != low.shape[-2:]:
            logits = F.interpolate(logits, low.shape[-2:], mode="bilinear", align_corners=False)
        return logits.float()

    def select(self, low_logits: torch.Tensor, full_size: Sequence[int]) -> Selection:
        """Entropy and the choice at the dense resolution, each pixel weighted by the block of
        full-resolution pixels it covers; only the chosen blocks are expanded to full size."""
        height, width = int(full_size[0]), int(full_size[1])
        low_h, low_w = low_logits.shape[-2:]
        rows, cols = nearest_indices((height, width), (low_h, low_w), low_logits.device)
        row_blocks, col_blocks = _blocks(rows, low_h), _blocks(cols, low_w)
        low_entropy = entropy(low_logits)
        areas = row_blocks[1][:, None] * col_blocks[1]
        low_mask = select_uncertain(low_entropy, self.tau, self.max_fraction, areas)
        coords = _expand_blocks(torch.nonzero(low_mask), row_blocks, col_blocks, (height, width))
        return Selection(low_entropy, low_mask, coords, rows, cols)

    def refine(
        self, full: torch.Tensor, low_logits: torch.Tensor, selection: Selection
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense and sparse logits (N, C) at the selected pixels."""
        b, y, x = selection.coords.unbind(1)
        low_y, low_x = selection.rows[y], selection.cols[x]
        dense_logits = low_logits[b, :, low_y, low_x]
        probs = None
        if self.refiner.use_probs:
            context = gather_patches(low_logits, b, low_y, low_x, self.refiner.context)
            probs = F.softmax(context.unflatten(1, (-1, self.num_classes)), dim=2).flatten(1)
        rgb = gather_patches(full, b, y, x, self.refiner.patch)
        feats = self.refiner.features(rgb, selection.coords, full.shape[-2:], probs)
        sparse = SparseTensor(selection.coords, feats, full.shape[0], tuple(full.shape[-2:]))
        return dense_logits, self.refiner(sparse)

    def forward(
        self, full: torch.Tensor, low_logits: torch.Tensor, timer: StageTimer | None = None
    ) -> RefineOutput:
        """Select, refine and fuse, given normalized full-res images and dense logits."""

        def stage(name: str):
            return nullcontext() if timer is None else timer(name)

        with stage("select"):
            selection = self.select(low_logits, full.shape[-2:])
        if selection.coords.shape[0] == 0:
            empty = low_logits.new_zeros(0, self.num_classes)
            return RefineOutput(selection, empty, empty, empty, low_logits.new_zeros(0))
        with stage("refine"):
            dense_logits, sparse_logits = self.refine(full, low_logits, selection)
        with stage("fuse"):
            logits, gate = self.ensembler(dense_logits, sparse_logits)
        return RefineOutput(selection, dense_logits, sparse_logits, logits, gate)


def gather_patches(
    maps: torch.Tensor, b: torch.Tensor, y: torch.Tensor, x: torch.Tensor, size: int
) -> torch.Tensor:
    """(N, size * size * C) values of ``maps`` (B, C, H, W) in the ``size`` x ``size`` window
    around each site ``(b, y, x)``, window position by position (C values each); positions
    outside the map repeat its edge."""
    if size == 1:
        return maps[b, :, y, x]
    radius = size // 2
    steps = torch.arange(-radius, radius + 1, device=maps.device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    rows = (y[:, None] + dy.flatten()).clamp_(0, maps.shape[2] - 1)
    cols = (x[:, None] + dx.flatten()).clamp_(0, maps.shape[3] - 1)
    return maps[b[:, None], :, rows, cols].flatten(1)  # (N, size * size, C) -> (N, size²C)


def class_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer type of class maps: uint8 up to 256 classes (a 2048x1024 map is 2 MB
    to copy off the GPU and publish, not int64's 16 MB), else int32."""
    return torch.uint8 if num_classes <= 256 else torch.int32


def class_maps(low_logits: torch.Tensor, output: RefineOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined and dense class maps (B, H, W) at full resolution: the dense prediction upsampled
    nearest, with the fused prediction written over the selected pixels."""
    selection = output.selection
    dtype = class_dtype(low_logits.shape[1])
    # argmax over a contiguous last dimension: 2.7x faster on the CPU than over NCHW's strided
    # channel dimension (37 vs 100 ms for 19x512x1024), same result.
    low_classes = low_logits.permute(0, 2, 3, 1).contiguous().argmax(dim=-1).to(dtype)
    dense_classes = selection.upsample(low_classes)
    classes = dense_classes.clone()
    if output.logits.shape[0]:
        b, y, x = selection.coords.unbind(1)
        classes[b, y, x] = output.logits.argmax(dim=1).to(dtype)
    return classes, dense_classes


# ``torch.compile`` modes of the dense model; "none" runs it eagerly ("off" would be read as
# false from a YAML parameter file).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


class SparseRefinePipeline:
    """Inference: uint8 RGB images in, refined full-resolution class maps out.

    ``dense_model`` is any module or callable mapping normalized float images (B, 3, h, w) to
    logits (B, C, h', w'); it runs at ``sparserefine.scale`` times the input resolution. All
    images of one call (e.g. several cameras) share a size and run as one batch.

    ``compile_mode`` other than ``"none"`` wraps the dense model in ``torch.compile``: on an H200
    it raised SegFormer throughput 1.2-1.5x, HRNet's by -8% to +43% (docs/gpu.md). The first
    frame of each new size compiles (gpu-check's ``warmup_s``); a CPU needs a C++ compiler.
    """

    def __init__(
        self,
        dense_model: DenseModel,
        sparserefine: SparseRefine,
        device: str | torch.device = "cpu",
        compile_mode: str = "none",
    ) -> None:
        if compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"unknown compile_mode {compile_mode!r}; expected one of {COMPILE_MODES}"
            )
        self.device = torch.device(device)
        if isinstance(dense_model, nn.Module):
            dense_model = dense_model.to(self.device).eval()
        if compile_mode != "none":
            dense_model = torch.compile(dense_model, mode=compile_mode)
        self.dense_model = dense_model
        self.model = sparserefine.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> SegmentationResult:
        """Segment a batch of uint8 RGB images (B, 3, H, W)."""
        timer = StageTimer(self.device)
        with timer("total"):
            with timer("preprocess"):
                full, low = self.model.preprocess(images.to(self.device))
            with timer("dense"):
                low_logits = self.model.run_dense(self.dense_model, low)
            output = self.model(full, low_logits, timer)
            selection = output.selection
            with timer("fuse"):
                classes, dense_classes = class_maps(low_logits, output)
            result = SegmentationResult(
                classes=classes.cpu(),
                dense_classes=dense_classes.cpu(),
                selection=selection.to("cpu"),
                dense_size=tuple(low.shape[-2:]),
                timings_ms=timer.ms,
            )
        timer.ms.setdefault("refine", 0.0)  # skipped when nothing is selected
        return result

    def segment_numpy(self, image: np.ndarray) -> SegmentationResult:
        """Segment one (H, W, 3) uint8 RGB array (a batch of one)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}"
            )
        return self(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None])


def save_refiner(path: str | Path, module: SparseRefine) -> None:
    """Write weights (safetensors) with the JSON config in the file's metadata."""
    state = {name: t.detach().cpu().contiguous() for name, t in module.state_dict().items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(module.config),
    }
    save_file(state, str(path), metadata=metadata)


def load_refiner(path: str | Path) -> SparseRefine:
    """Rebuild a ``SparseRefine`` (on the CPU, eval mode) from ``save_refiner``'s file.

    Raises ``CheckpointError`` if the file is missing, is not a readable safetensors file, is
    not a SparseRefine checkpoint or holds weights that do not fit its own config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no refiner checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            state = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a SparseRefine checkpoint (no format tag)")
    if metadata.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {metadata.get('version')!r}, "
            f"this code reads {CHECKPOINT_VERSION!r}"
        )
    try:
        module = SparseRefine.from_config(json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid config: {error}") from error
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match its config: {error}") from error
    return module.eval()
