"""Training augmentation of the method (the mmseg Cityscapes recipe SparseRefine trains with).

Random rescale by 0.5-2.0 and crop (label padded with ignore; optionally containing a given
pixel, for rare-class crops), horizontal flip and photometric jitter. Every function takes an
explicit ``numpy.random.Generator`` so a sample's augmentation is reproducible from its seed;
images are RGB uint8 (H, W, 3), labels uint8 (H, W).
"""

from __future__ import annotations

import cv2
import numpy as np

from sparserefine_ros.labels import IGNORE_INDEX


def _resize(array: np.ndarray, size: tuple[int, int], label: bool) -> np.ndarray:
    """Resize to ``size`` = (height, width): labels nearest; images by area averaging when they
    shrink (as the pipeline downscales for the dense model) and bilinear when they grow."""
    h, w = size
    if label:
        interpolation = cv2.INTER_NEAREST
    elif h * w < array.shape[0] * array.shape[1]:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_LINEAR
    return cv2.resize(array, (w, h), interpolation=interpolation)


def _window_origin(extent: int, window: int, rng: np.random.Generator, anchor: int | None) -> int:
    """Start of a ``window`` along an axis of ``extent`` pixels: uniform over the positions that
    stay inside (0 if the window is larger), or, with an ``anchor`` pixel, uniform over those
    positions that contain it."""
    high = max(extent - window, 0)
    if anchor is None:
        return int(rng.integers(0, high + 1))
    low, top = max(anchor - window + 1, 0), min(anchor, high)
    return int(rng.integers(low, top + 1)) if low <= top else min(max(anchor, 0), high)


def scaled_crop(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    anchor: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A crop of ``size`` = (height, width) of the image rescaled by a factor drawn uniformly
    from ``scale_range``; where the rescaled image is smaller, the bottom and right are padded
    (image 0, label 255). The window is cut first and only it is resized, which gives the crops
    of rescale-then-crop at the cost of the crop. ``anchor`` (y, x) is a pixel the crop must
    contain (class-aware sampling)."""
    scale = rng.uniform(*scale_range)
    ch, cw = size
    h, w = label.shape
    wh, ww = max(1, round(ch / scale)), max(1, round(cw / scale))
    ay, ax = anchor if anchor is not None else (None, None)
    y, x = _window_origin(h, wh, rng, ay), _window_origin(w, ww, rng, ax)
    image_win, label_win = image[y : y + wh, x : x + ww], label[y : y + wh, x : x + ww]
    win_h, win_w = label_win.shape
    # A window cut short by the image edge keeps its scale; the rest of the crop is padding.
    out_h = ch if win_h == wh else min(ch, max(1, round(win_h * scale)))
    out_w = cw if win_w == ww else min(cw, max(1, round(win_w * scale)))
    if (out_h, out_w) != (win_h, win_w):
        image_win = _resize(image_win, (out_h, out_w), label=False)
        label_win = _resize(label_win, (out_h, out_w), label=True)
    pad_h, pad_w = ch - out_h, cw - out_w
    if pad_h or pad_w:
        image_win = cv2.copyMakeBorder(image_win, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
        label_win = cv2.copyMakeBorder(
            label_win, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX
        )
    return image_win, label_win


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
    """Scale and crop, flip, jitter in the method's order; call as
    ``transform(image, label, rng, anchor)``, ``anchor`` (y, x) a pixel the crop must contain
    (class-aware sampling, :class:`~sparserefine_ros.data.cache.TrainingSet`) or None."""

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
        self,
        image: np.ndarray,
        label: np.ndarray,
        rng: np.random.Generator,
        anchor: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        image, label = scaled_crop(image, label, rng, self.crop_size, self.scale_range, anchor)
        image, label = random_flip(image, label, rng, self.flip_prob)
        if self.jitter:
            image = photometric_jitter(image, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)
