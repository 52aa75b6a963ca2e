"""Training augmentation of the method (the mmseg Cityscapes recipe SparseRefine trains with).

Random rescale by 0.5-2.0, random crop (label padded with ignore), horizontal flip and
photometric jitter. Every function takes an explicit ``numpy.random.Generator`` so a sample's
augmentation is reproducible from its seed; images are RGB uint8 (H, W, 3), labels uint8 (H, W).
"""

from __future__ import annotations

import cv2
import numpy as np

from sparserefine_ros.data.cityscapes import IGNORE_INDEX


def random_scale(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.5, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Resize both by one factor drawn uniformly from ``scale_range`` (labels: nearest)."""
    scale = rng.uniform(*scale_range)
    h, w = label.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return image, label


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``size`` = (height, width) at a random place; pad first if smaller (label with 255)."""
    ch, cw = size
    h, w = label.shape
    pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
        label = cv2.copyMakeBorder(
            label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX
        )
        h, w = label.shape
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    return image[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]


def random_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, prob: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right with probability ``prob``."""
    if rng.random() < prob:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def photometric_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 32.0,
    contrast: tuple[float, float] = (0.5, 1.5),
    saturation: tuple[float, float] = (0.5, 1.5),
    hue: float = 18.0,
) -> np.ndarray:
    """mmseg's PhotoMetricDistortion: each of brightness shift, contrast, saturation and hue
    shift (OpenCV hue units, 0-180) applied with probability 1/2, in random contrast order."""
    out = image.astype(np.float32)
    contrast_first = rng.random() < 0.5

    def apply_contrast(x: np.ndarray) -> np.ndarray:
        return x * rng.uniform(*contrast) if rng.random() < 0.5 else x

    if rng.random() < 0.5:
        out += rng.uniform(-brightness, brightness)
    if contrast_first:
        out = apply_contrast(out)
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    if rng.random() < 0.5:
        hsv[..., 1] *= rng.uniform(*saturation)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue)) % 180.0
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if not contrast_first:
        out = apply_contrast(out)
    return np.clip(out, 0, 255).astype(np.uint8)


class TrainTransform:
    """Scale, crop, flip, jitter in the method's order; call as ``transform(image, label, rng)``."""

    def __init__(
        self,
        crop_size: tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_prob: float = 0.5,
        jitter: bool = True,
    ) -> None:
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.flip_prob = flip_prob
        self.jitter = jitter

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        image, label = random_scale(image, label, rng, self.scale_range)
        image, label = random_crop(image, label, rng, self.crop_size)
        image, label = random_flip(image, label, rng, self.flip_prob)
        if self.jitter:
            image = photometric_jitter(image, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)
