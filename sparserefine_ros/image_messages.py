"""Image messages (rclpy's sensor_msgs or rosbags' typestore classes) to numpy, with the checks
a camera stream needs. No ROS import: the bag tools and the node both decode with it.

A malformed message raises :class:`ImageError` with the reason; the node logs it and drops the
frame. No cv_bridge: it is not on PyPI for ROS 2, and the conversions needed here are short.
"""

from __future__ import annotations

import cv2
import numpy as np

# encoding -> (channels, bytes per channel, OpenCV conversion to RGB or None)
_ENCODINGS = {
    "rgb8": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, 1, cv2.COLOR_GRAY2RGB),
    "8UC3": (3, 1, cv2.COLOR_BGR2RGB),
    "rgb16": (3, 2, None),
    "bgr16": (3, 2, cv2.COLOR_BGR2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


class ImageError(ValueError):
    """A message that cannot be read as an image; the text says why."""


def image_to_rgb(msg) -> np.ndarray:
    """The (H, W, 3) uint8 RGB picture of a sensor_msgs/Image (16-bit data keeps its top byte)."""
    if msg.encoding not in _ENCODINGS:
        raise ImageError(
            f"unsupported encoding '{msg.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    channels, depth, conversion = _ENCODINGS[msg.encoding]
    height, width = msg.height, msg.width
    if height == 0 or width == 0 or len(msg.data) == 0:
        raise ImageError(f"empty image ({width}x{height}, {len(msg.data)} bytes)")
    row_bytes = width * channels * depth
    if msg.step < row_bytes:
        raise ImageError(f"step {msg.step} is shorter than a row of {row_bytes} bytes")
    if len(msg.data) != msg.step * height:
        raise ImageError(
            f"data holds {len(msg.data)} bytes, step x height = {msg.step} x {height} "
            f"= {msg.step * height}"
        )
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, msg.step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        pixels = (np.ascontiguousarray(rows).view(dtype) >> 8).astype(np.uint8)
    else:
        pixels = rows
    pixels = pixels.reshape(height, width, channels)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels if channels > 1 else pixels[:, :, 0], conversion)


def compressed_to_rgb(msg) -> np.ndarray:
    """The (H, W, 3) uint8 RGB picture of a JPEG/PNG sensor_msgs/CompressedImage."""
    if len(msg.data) == 0:
        raise ImageError("empty compressed image")
    decoded = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageError(f"cannot decode compressed image (format '{msg.format}')")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
