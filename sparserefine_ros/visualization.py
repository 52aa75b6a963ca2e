"""Pictures of a segmentation: class colours, overlays on the camera image, entropy heat maps."""

from __future__ import annotations

import cv2
import numpy as np


def colorize(classes: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB (..., 3) uint8 picture of a class-id map; ids without a palette entry (255) are black."""
    classes = np.asarray(classes)
    size = 256 if classes.dtype == np.uint8 else max(int(classes.max(initial=0)) + 1, len(palette))
    lut = np.zeros((max(size, len(palette)), 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    return lut[classes if classes.dtype == np.uint8 else classes.astype(np.int64)]


def overlay(image_rgb: np.ndarray, color_rgb: np.ndarray, alpha: float) -> np.ndarray:
    """The camera image with the class colours blended over it (``alpha`` = colour weight)."""
    return cv2.addWeighted(color_rgb, alpha, image_rgb, 1.0 - alpha, 0.0)


def entropy_heatmap(entropy: np.ndarray, max_entropy: float) -> np.ndarray:
    """RGB heat map of an entropy image, scaled so ``max_entropy`` (ln C) is the hottest colour."""
    scaled = np.clip(entropy / max_entropy * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
