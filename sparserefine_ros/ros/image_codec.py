"""numpy to sensor_msgs/Image for the node's outputs (decoding: ``image_messages``)."""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
from sensor_msgs.msg import Image

from sparserefine_ros.visualization import colorize, overlay

# The node's image outputs, by topic name (relative to the camera's namespace).
OUTPUTS = ("segmentation", "segmentation_color", "overlay", "entropy", "refine_mask")


def to_image_msg(array: np.ndarray, encoding: str, header) -> Image:
    """An Image message holding ``array`` (mono8 / rgb8 / 32FC1) with ``header`` copied."""
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header = header
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


def output_messages(
    wanted: Collection[str],
    header,
    rgb: np.ndarray,
    classes: np.ndarray,
    entropy: Callable[[], np.ndarray],
    mask: Callable[[], np.ndarray],
    palette: np.ndarray,
    alpha: float,
    class_encoding: str,
) -> dict[str, Image]:
    """The ``wanted`` outputs (names of ``OUTPUTS``) of one frame: class ids (``classes``,
    already in the dtype of ``class_encoding``), their colours, the colours over ``rgb``, the
    entropy (float32) and the refined pixels (bool) as 0/255; ``entropy`` and ``mask`` give
    their full-resolution maps when called. Colours are computed once for the colour image and
    the overlay, and nothing for an output nobody reads."""
    messages = {}
    if "segmentation" in wanted:
        messages["segmentation"] = to_image_msg(classes, class_encoding, header)
    if "segmentation_color" in wanted or "overlay" in wanted:
        color = colorize(classes, palette)
        if "segmentation_color" in wanted:
            messages["segmentation_color"] = to_image_msg(color, "rgb8", header)
        if "overlay" in wanted:
            messages["overlay"] = to_image_msg(overlay(rgb, color, alpha), "rgb8", header)
    if "entropy" in wanted:
        messages["entropy"] = to_image_msg(entropy(), "32FC1", header)
    if "refine_mask" in wanted:
        messages["refine_mask"] = to_image_msg(mask().astype(np.uint8) * 255, "mono8", header)
    return messages
