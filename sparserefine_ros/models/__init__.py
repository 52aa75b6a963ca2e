"""Dense segmentation models (registered families, the user's TorchScript/ONNX files), segmenter
checkpoints, and the mmsegmentation-style inference API."""

from .registry import (
    DEFAULT_MODEL,
    build_dense_model,
    checkpoint_names,
    dense_model_names,
    register_dense_model,
)
from .segmenter import (
    Segmenter,
    SegmenterError,
    SegmenterPipeline,
    inference_model,
    init_model,
    load_segmenter,
    save_segmenter,
)

__all__ = [
    "DEFAULT_MODEL",
    "Segmenter",
    "SegmenterError",
    "SegmenterPipeline",
    "build_dense_model",
    "checkpoint_names",
    "dense_model_names",
    "inference_model",
    "init_model",
    "load_segmenter",
    "register_dense_model",
    "save_segmenter",
]
