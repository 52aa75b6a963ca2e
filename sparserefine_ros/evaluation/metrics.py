"""Segmentation metrics: confusion-matrix mIoU, per-class IoU, pixel accuracy, and variants.

Rules (the Cityscapes benchmark's, made explicit):

* Rows of the confusion matrix are ground truth, columns prediction. Pixels whose ground truth is
  ``ignore_index`` (or outside 0..C-1) are not counted. A prediction outside 0..C-1 (e.g. 255 for
  "no answer") on a counted pixel is a miss: it adds to the false negatives of the true class and
  to no class's false positives.
* IoU_c = TP / (TP + FP + FN). A class with no ground-truth and no predicted pixel has no IoU
  (NaN) and is left out of the mean; a class predicted but absent from the ground truth has IoU 0
  and counts.
* Masked variant: only pixels where ``mask`` is true count (e.g. the pixels SparseRefine refined).
* Boundary variant (boundary mIoU): only pixels within ``width`` pixels (Chebyshev distance) of a
  ground-truth label change count, i.e. the mask is the ground truth's edge map dilated by a
  (2*width+1) square. An edge is any pair of 4-neighbours with different ground-truth values,
  ignore included, so pixels next to ignore regions are boundary pixels too (ignore pixels
  themselves never count).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sparserefine_ros.labels import IGNORE_INDEX


def _to_numpy(x) -> np.ndarray:
    # Accepts numpy arrays and torch tensors (any device) without importing torch here.
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(
    pred,
    gt,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    mask=None,
) -> np.ndarray:
    """(C, C+1) int64 counts: rows ground truth, columns prediction, last column "invalid
    prediction". Inputs are label maps of one shape (any number of dimensions)."""
    pred = _to_numpy(pred).astype(np.int64, copy=False).ravel()
    gt = _to_numpy(gt).astype(np.int64, copy=False).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
    keep = (gt >= 0) & (gt < num_classes) & (gt != ignore_index)
    if mask is not None:
        mask = _to_numpy(mask).astype(bool, copy=False).ravel()
        if mask.shape != gt.shape:
            raise ValueError("mask and ground truth differ in size")
        keep &= mask
    gt, pred = gt[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def boundary_mask(gt, width: int = 3) -> np.ndarray:
    """Pixels within ``width`` px (Chebyshev) of a label change in ``gt`` (H, W) or (N, H, W)."""
    gt = _to_numpy(gt)
    if gt.ndim == 3:
        return np.stack([boundary_mask(g, width) for g in gt])
    if gt.ndim != 2:
        raise ValueError(f"expected (H, W) or (N, H, W) labels, got shape {gt.shape}")
    edge = np.zeros(gt.shape, dtype=np.uint8)
    horizontal = gt[:, 1:] != gt[:, :-1]
    vertical = gt[1:, :] != gt[:-1, :]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    # The edge map marks both pixels of each differing pair, so a width of w reaches w px beyond
    # either side; width 0 keeps just the pixels touching an edge.
    if width > 0:
        edge = cv2.dilate(edge, np.ones((2 * width + 1, 2 * width + 1), np.uint8))
    return edge.astype(bool)


@dataclass
class SegmentationScores:
    """Scores in [0, 1]; ``iou`` is NaN for classes absent from ground truth and prediction."""

    miou: float
    iou: np.ndarray
    pixel_accuracy: float
    num_pixels: int

    def per_class(self, names) -> dict[str, float]:
        return {name: float(v) for name, v in zip(names, self.iou, strict=True)}

    def as_dict(self, names) -> dict:
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "num_pixels": self.num_pixels,
            "iou": {k: (None if np.isnan(v) else v) for k, v in self.per_class(names).items()},
        }


def scores_from_confusion(matrix: np.ndarray) -> SegmentationScores:
    """mIoU, per-class IoU and pixel accuracy from a :func:`confusion_matrix` result."""
    matrix = np.asarray(matrix, dtype=np.float64)
    num_classes = matrix.shape[0]
    tp = np.diag(matrix[:, :num_classes])
    gt_count = matrix.sum(axis=1)  # includes invalid predictions: they are false negatives
    pred_count = matrix[:, :num_classes].sum(axis=0)
    union = gt_count + pred_count - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = gt_count.sum()
    present = ~np.isnan(iou)
    return SegmentationScores(
        miou=float(iou[present].mean()) if present.any() else float("nan"),
        iou=iou,
        pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
        num_pixels=int(total),
    )


class SegmentationMetric:
    """Accumulates confusion matrices over a data set: everything, a mask, and the boundary band.

    ``update(pred, gt, mask=None)`` adds one batch; ``mask`` (e.g. the refined pixels) feeds the
    masked scores. ``compute()`` returns ``{"all", "boundary", "masked"}`` scores ("masked" only
    once a mask was given).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        boundary_width: int = 3,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary_width = boundary_width
        shape = (num_classes, num_classes + 1)
        self.all = np.zeros(shape, dtype=np.int64)
        self.boundary = np.zeros(shape, dtype=np.int64)
        self.masked = np.zeros(shape, dtype=np.int64)
        self.has_mask = False

    def update(self, pred, gt, mask=None) -> None:
        gt = _to_numpy(gt)
        pred = _to_numpy(pred)
        args = (self.num_classes, self.ignore_index)
        self.all += confusion_matrix(pred, gt, *args)
        self.boundary += confusion_matrix(pred, gt, *args, boundary_mask(gt, self.boundary_width))
        if mask is not None:
            self.has_mask = True
            self.masked += confusion_matrix(pred, gt, *args, mask)

    def compute(self) -> dict[str, SegmentationScores]:
        out = {
            "all": scores_from_confusion(self.all),
            "boundary": scores_from_confusion(self.boundary),
        }
        if self.has_mask:
            out["masked"] = scores_from_confusion(self.masked)
        return out


def mean_iou(pred, gt, num_classes: int, ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU of one prediction against its ground truth (the rules in the module docstring)."""
    return scores_from_confusion(confusion_matrix(pred, gt, num_classes, ignore_index)).miou


def resolution_roundtrip(gt, factor: int = 2) -> np.ndarray:
    """Labels kept at 1/``factor`` resolution and brought back: nearest down (every factor-th
    pixel) and nearest up (repeat), cropped to the input size. Scoring this against ``gt`` gives
    the best a model predicting at the lower resolution could do."""
    gt = _to_numpy(gt)
    small = gt[::factor, ::factor]
    up = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
    return up[: gt.shape[0], : gt.shape[1]]
