"""The SparseRefine method as a plain PyTorch library (no ROS imports).

A dense model segments a downscaled image; pixels whose prediction entropy exceeds ``tau`` are
refined by a sparse UNet reading the full-resolution image, and a learned gate fuses the two.
"""

from .checkpoint import load_refiner, save_refiner
from .ensembler import GatedEnsembler
from .entropy import entropy, select_uncertain
from .errors import CheckpointError
from .pipeline import SegmentationResult, SparseRefinePipeline
from .refiner import SparseRefiner
from .selection import Selection
from .sparserefine import RefineOutput, SparseRefine
from .training import (
    DenseTargets,
    StepMetrics,
    cosine_schedule,
    eval_step,
    make_optimizer,
    sparserefine_loss,
    train_step,
)

__all__ = [
    "CheckpointError",
    "DenseTargets",
    "GatedEnsembler",
    "RefineOutput",
    "SegmentationResult",
    "Selection",
    "SparseRefine",
    "SparseRefinePipeline",
    "SparseRefiner",
    "StepMetrics",
    "cosine_schedule",
    "entropy",
    "eval_step",
    "load_refiner",
    "make_optimizer",
    "save_refiner",
    "select_uncertain",
    "sparserefine_loss",
    "train_step",
]
