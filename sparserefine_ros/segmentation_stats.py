"""The fields of a SegmentationStats message, shared by the node and the bag writer.

No ROS import: the offline bag path builds the same message through rosbags' typestore.
"""

from __future__ import annotations


def segmentation_stats_fields(result, index: int, refiner) -> dict:
    """Every field but ``header`` and ``latency_ms`` for image ``index`` of a pipeline result."""
    height, width = result.classes.shape[-2:]
    selected = int(result.num_selected[index])
    timings = result.timings_ms
    return {
        "input_height": int(height),
        "input_width": int(width),
        "dense_height": result.dense_size[0],
        "dense_width": result.dense_size[1],
        "selected_pixels": selected,
        "selected_fraction": selected / float(height * width),
        "entropy_threshold": refiner.tau,
        "max_selected_fraction": refiner.max_fraction or 1.0,
        "preprocess_ms": timings["preprocess"],
        "dense_ms": timings["dense"],
        "select_ms": timings["select"],
        "refine_ms": timings["refine"],
        "fuse_ms": timings["fuse"],
        "inference_ms": timings["total"],
    }
