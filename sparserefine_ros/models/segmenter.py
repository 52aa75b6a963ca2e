"""Segmenter checkpoints and the public inference API (``init_model``, ``inference_model``).

A checkpoint is a directory holding everything a deployment needs, as data only::

    segmenter.json      format tag, dense model description, class names, palette, mean/std,
                        refiner file name (or null), calibration record
    dense.safetensors   weights of a registered family (its name and config are in the JSON),
      or dense.pt/.onnx the user's TorchScript or ONNX file, copied in
    refiner.safetensors the SparseRefine module (method core's ``save_refiner`` format)
    MODEL_CARD.md       how it was made and how well it does

Loading reads JSON and safetensors (and a TorchScript/ONNX graph when that is the dense
model), so a checkpoint cannot run Python code. ``load_segmenter`` also accepts a plain
TorchScript/ONNX file or a ``transformers`` SegFormer directory, which have no refiner yet.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sparserefine_ros.labels import CLASS_COLORS, CLASS_NAMES
from sparserefine_ros.method.checkpoint import load_refiner, save_refiner
from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.method.pipeline import SegmentationResult, SparseRefinePipeline
from sparserefine_ros.method.sparserefine import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DenseModel,
    SparseRefine,
)

from .external import ONNX_SUFFIXES, TORCHSCRIPT_SUFFIXES, load_external_model
from .registry import (
    CHECKPOINT_DIR,
    SEGMENTER_FILE,
    build_dense_model,
    checkpoint_names,
    dense_model_family,
)

FORMAT = "sparserefine-segmenter"
VERSION = 1
DENSE_WEIGHTS = "dense.safetensors"
REFINER_WEIGHTS = "refiner.safetensors"
MODEL_CARD = "MODEL_CARD.md"
OVERRIDABLE = ("scale", "tau", "max_fraction")


class SegmenterError(CheckpointError):
    """A model name or path that cannot be loaded; the message names the path and the problem."""


def default_palette(num_classes: int) -> np.ndarray:
    """Cityscapes' colours for 19 classes, otherwise evenly spaced hues (uint8 (C, 3))."""
    if num_classes == len(CLASS_COLORS):
        return CLASS_COLORS.copy()
    hues = (np.arange(num_classes) * 180 // max(num_classes, 1)).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 230)], axis=1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


@dataclass
class Segmenter:
    """A loaded checkpoint: the dense model and what belongs with it; ``refiner`` may be None.

    ``dense_file`` is the TorchScript/ONNX file the dense model came from (saving copies it);
    a dense model without one must be an instance of a registered family.
    """

    dense_model: DenseModel
    class_names: list[str]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    palette: np.ndarray | None = None
    refiner: SparseRefine | None = None
    calibration: dict = field(default_factory=dict)
    dense_file: Path | None = None
    card: str = ""

    def __post_init__(self) -> None:
        self.class_names = [str(name) for name in self.class_names]
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if self.palette is None:
            self.palette = default_palette(len(self.class_names))
        self.palette = np.asarray(self.palette, dtype=np.uint8)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check(self, where: str | Path) -> None:
        """Raise ``SegmenterError`` naming ``where`` if the parts do not fit together."""
        problems = []
        if self.palette.shape != (self.num_classes, 3):
            problems.append(
                f"palette has shape {self.palette.shape}, expected ({self.num_classes}, 3)"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append(f"mean/std need 3 values with std > 0, got {self.mean}, {self.std}")
        dense_classes = getattr(self.dense_model, "num_classes", self.num_classes)
        if dense_classes != self.num_classes:
            problems.append(
                f"dense model has {dense_classes} classes, class list {self.num_classes}"
            )
        if self.refiner is not None:
            if self.refiner.num_classes != self.num_classes:
                problems.append(
                    f"refiner has {self.refiner.num_classes} classes, class list {self.num_classes}"
                )
            config = self.refiner.config
            if not np.allclose(config["mean"], self.mean) or not np.allclose(
                config["std"], self.std
            ):
                problems.append(
                    f"refiner normalises with mean {config['mean']} std {config['std']}, "
                    f"the dense model with {list(self.mean)} {list(self.std)}"
                )
        if problems:
            raise SegmenterError(f"{where}: mismatched checkpoint: {'; '.join(problems)}")


def save_segmenter(directory: str | Path, segmenter: Segmenter) -> Path:
    """Write ``segmenter`` as a checkpoint directory (created if needed) and return its path.

    ``segmenter.json`` is written last, so an interrupted save never looks like a checkpoint.
    """
    directory = Path(directory)
    segmenter.check(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SEGMENTER_FILE).unlink(missing_ok=True)
    if segmenter.dense_file is not None:
        name = "dense" + segmenter.dense_file.suffix.lower()
        if segmenter.dense_file.resolve() != (directory / name).resolve():
            shutil.copyfile(segmenter.dense_file, directory / name)
        dense = {"file": name}
    elif isinstance(segmenter.dense_model, nn.Module):
        model = segmenter.dense_model
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(directory / DENSE_WEIGHTS))
        dense = {"family": dense_model_family(model), "config": model.config, "file": DENSE_WEIGHTS}
    else:
        raise TypeError("the dense model must be a registered family or come from a file")
    refiner = None
    if segmenter.refiner is not None:
        save_refiner(directory / REFINER_WEIGHTS, segmenter.refiner)
        refiner = REFINER_WEIGHTS
    else:
        (directory / REFINER_WEIGHTS).unlink(missing_ok=True)
    if segmenter.card:
        (directory / MODEL_CARD).write_text(segmenter.card)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "dense": dense,
        "class_names": segmenter.class_names,
        "palette": segmenter.palette.tolist(),
        "mean": list(segmenter.mean),
        "std": list(segmenter.std),
        "refiner": refiner,
        "calibration": segmenter.calibration,
    }
    tmp = directory / (SEGMENTER_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(directory / SEGMENTER_FILE)
    return directory


def resolve_model(name_or_path: str | Path) -> Path:
    """The path of a shipped checkpoint name, or ``name_or_path`` itself if it exists."""
    path = Path(name_or_path)
    if path.exists():
        return path
    if str(name_or_path) in checkpoint_names():
        return CHECKPOINT_DIR / str(name_or_path)
    shipped = ", ".join(checkpoint_names()) or "none"
    raise SegmenterError(
        f"{name_or_path}: no such file or directory, nor a shipped model ({shipped})"
    )


def load_segmenter(name_or_path: str | Path, device: str | torch.device = "cpu") -> Segmenter:
    """Load a checkpoint directory, a shipped checkpoint name, a TorchScript/ONNX file or a
    ``transformers`` SegFormer directory. Raises ``SegmenterError`` saying what is wrong."""
    path = resolve_model(name_or_path)
    if path.is_dir() and (path / SEGMENTER_FILE).is_file():
        segmenter = _load_bundle(path, device)
    elif path.is_dir() and (path / "config.json").is_file():
        segmenter = _load_pretrained(path, device)
    elif path.is_file():
        segmenter = Segmenter(_load_dense_file(path, device), list(CLASS_NAMES), dense_file=path)
    else:
        raise SegmenterError(
            f"{path}: not a model: expected a directory with {SEGMENTER_FILE} (checkpoint) or "
            f"config.json (transformers), or a file {TORCHSCRIPT_SUFFIXES + ONNX_SUFFIXES}"
        )
    segmenter.check(path)
    return segmenter


def _load_dense_file(path: Path, device: str | torch.device) -> DenseModel:
    try:
        return load_external_model(path, device)
    except ImportError as error:
        raise SegmenterError(f"{path}: {error}") from error
    except Exception as error:  # each reader has its own exception types
        raise SegmenterError(f"{path}: cannot read this model file: {error}") from error


def _load_pretrained(path: Path, device: str | torch.device) -> Segmenter:
    from .segformer import SegFormer

    try:
        model, names = SegFormer.from_pretrained(path)
    except Exception as error:  # transformers raises many kinds (OSError, ValueError, KeyError)
        raise SegmenterError(f"{path}: cannot load as a transformers SegFormer: {error}") from error
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        config = _read_json(processor)
        mean, std = config.get("image_mean", mean), config.get("image_std", std)
    return Segmenter(model.to(device).eval(), names, mean, std)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SegmenterError(f"{path}: corrupt JSON: {error}") from error
    if not isinstance(data, dict):
        raise SegmenterError(f"{path}: expected a JSON object")
    return data


def _member(directory: Path, name: object) -> Path:
    # A file named by segmenter.json: only plain names inside the checkpoint directory.
    if not isinstance(name, str) or Path(name).name != name:
        raise SegmenterError(f"{directory / SEGMENTER_FILE}: invalid file name {name!r}")
    path = directory / name
    if not path.is_file():
        raise SegmenterError(f"{path}: missing file (named in {SEGMENTER_FILE})")
    return path


def _load_bundle(directory: Path, device: str | torch.device) -> Segmenter:
    meta_path = directory / SEGMENTER_FILE
    meta = _read_json(meta_path)
    if meta.get("format") != FORMAT:
        raise SegmenterError(
            f"{meta_path}: not a segmenter checkpoint (format {meta.get('format')!r})"
        )
    if meta.get("version") != VERSION:
        raise SegmenterError(
            f"{meta_path}: version {meta.get('version')!r}, this code reads {VERSION}"
        )
    missing = [k for k in ("dense", "class_names", "mean", "std") if k not in meta]
    if missing:
        raise SegmenterError(f"{meta_path}: missing keys {missing}")
    dense = meta["dense"]
    if not isinstance(dense, dict):
        raise SegmenterError(f"{meta_path}: 'dense' must be an object")
    dense_path = _member(directory, dense.get("file"))
    dense_file = None
    if "family" in dense:
        model = _load_family(dense_path, dense["family"], dense.get("config", {}))
        model = model.to(device).eval()
    else:
        model = _load_dense_file(dense_path, device)
        dense_file = dense_path
    refiner = None
    if meta.get("refiner") is not None:
        refiner = load_refiner(_member(directory, meta["refiner"]))
    card_path = directory / MODEL_CARD
    return Segmenter(
        dense_model=model,
        class_names=meta["class_names"],
        mean=meta["mean"],
        std=meta["std"],
        palette=meta.get("palette"),
        refiner=refiner,
        calibration=meta.get("calibration", {}),
        dense_file=dense_file,
        card=card_path.read_text() if card_path.is_file() else "",
    )


def _load_family(path: Path, family: str, config: dict) -> nn.Module:
    try:
        model = build_dense_model(family, **config)
    except (TypeError, ValueError) as error:
        raise SegmenterError(f"{path}: cannot build dense model {family!r}: {error}") from error
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise SegmenterError(f"{path}: corrupt safetensors file: {error}") from error
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise SegmenterError(
            f"{path}: weights do not match the {family} config: {error}"
        ) from error
    return model


class SegmenterPipeline(SparseRefinePipeline):
    """``SparseRefinePipeline`` that also carries the class names and palette of its checkpoint."""

    def __init__(
        self,
        dense_model: DenseModel,
        sparserefine: SparseRefine,
        class_names: Sequence[str],
        palette: np.ndarray,
        device: str | torch.device = "cpu",
        compile_mode: str = "none",
        fixed_stage: bool = False,
    ) -> None:
        super().__init__(dense_model, sparserefine, device, compile_mode, fixed_stage)
        self.class_names = list(class_names)
        self.palette = np.asarray(palette, dtype=np.uint8)


def with_overrides(refiner: SparseRefine, **overrides) -> SparseRefine:
    """A copy of ``refiner`` with some of ``scale``, ``tau``, ``max_fraction`` changed (validated
    by ``SparseRefine`` itself)."""
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise TypeError(f"unknown overrides {sorted(unknown)}; allowed: {', '.join(OVERRIDABLE)}")
    if not overrides:
        return refiner
    module = SparseRefine.from_config({**refiner.config, **overrides})
    module.load_state_dict(refiner.state_dict())
    return module.to(refiner.mean.device).eval()


def init_model(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    compile_mode: str = "none",
    fixed_stage: bool = False,
    **overrides,
) -> SegmenterPipeline:
    """Inference pipeline of a checkpoint (shipped name or directory); ``overrides`` may set
    ``scale``, ``tau`` and ``max_fraction`` in place of the calibrated values; ``compile_mode``
    and ``fixed_stage`` are ``SparseRefinePipeline``'s."""
    segmenter = load_segmenter(name_or_path, device)
    if segmenter.refiner is None:
        raise SegmenterError(
            f"{name_or_path}: has no refiner; train one with "
            f"`sparserefine train refiner --dense {name_or_path} ...`"
        )
    refiner = with_overrides(segmenter.refiner, **overrides)
    return SegmenterPipeline(
        segmenter.dense_model, refiner, segmenter.class_names, segmenter.palette, device,
        compile_mode, fixed_stage,
    )  # fmt: skip


def inference_model(pipeline: SparseRefinePipeline, images) -> SegmentationResult:
    """Segment uint8 RGB images: one (H, W, 3) array, a (B, H, W, 3) array or a list of
    equal-size (H, W, 3) arrays. The result always has a batch dimension."""
    if isinstance(images, (list, tuple)):
        images = np.stack(images)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(
            f"expected uint8 RGB (H, W, 3) or (B, H, W, 3), got {images.dtype} {images.shape}"
        )
    return pipeline(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))
