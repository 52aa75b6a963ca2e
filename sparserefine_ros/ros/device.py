"""The node's device: the torch device a parameter names, errors that leave it unusable, and
the class-map format a model's class count needs."""

from __future__ import annotations

import numpy as np
import torch

from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.ros.parameters import ParameterError

# Exit status when the device is left unusable (a CUDA error poisons the process): non-zero, so
# that a launch file's respawn restarts the node.
EXIT_DEVICE_LOST = 3


def torch_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParameterError("device", f"'{device}' asked for, but CUDA is not available")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise ParameterError("device", f"'{device}': only {torch.cuda.device_count()} GPUs")
    return torch.device(device)


def class_id_format(num_classes: int) -> tuple[type, str]:
    """dtype and encoding of ``segmentation``: mono8 up to 255 classes (255 is "no class"),
    mono16 above."""
    if num_classes <= 255:
        return np.uint8, "mono8"
    if num_classes <= 65535:
        return np.uint16, "mono16"
    raise CheckpointError(f"the model has {num_classes} classes; segmentation holds 65535")


def device_lost(error: Exception) -> bool:
    """True for errors after which the device cannot be used again in this process (CUDA's
    sticky errors: illegal memory access, device-side assert, launch failure)."""
    accelerator_error = getattr(torch, "AcceleratorError", ())
    return isinstance(error, accelerator_error) or "CUDA error" in str(error)
