"""numpy to sensor_msgs/Image for the node's outputs (decoding: ``image_messages``)."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image


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
