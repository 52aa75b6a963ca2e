"""The public Python API in one place: ``init_model`` then ``inference_model``.

from sparserefine_ros.api import init_model, inference_model
pipeline = init_model("hrnet-synth")          # a shipped name or a checkpoint directory
result = inference_model(pipeline, rgb_uint8)  # (H, W, 3) or (B, H, W, 3)
result.classes                                 # (B, H, W) class ids; pipeline.class_names
"""

from sparserefine_ros.models import (
    SegmenterError,
    SegmenterPipeline,
    checkpoint_names,
    dense_model_names,
    inference_model,
    init_model,
)

__all__ = [
    "SegmenterError",
    "SegmenterPipeline",
    "checkpoint_names",
    "dense_model_names",
    "inference_model",
    "init_model",
]
