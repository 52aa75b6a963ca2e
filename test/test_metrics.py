"""Metrics against confusion matrices and scores worked out by hand."""

import math

import numpy as np
import pytest
import torch

from sparserefine_ros.evaluation.metrics import (
    SegmentationMetric,
    boundary_mask,
    confusion_matrix,
    mean_iou,
    resolution_roundtrip,
    scores_from_confusion,
)
from sparserefine_ros.evaluation.selection import SelectionDiagnostic

GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, GT, num_classes=4)
    expected = np.zeros((4, 5), dtype=np.int64)
    expected[0, 0] = 1  # gt 0 predicted 0
    expected[0, 1] = 1  # gt 0 predicted 1
    expected[1, 1] = 2
    expected[2, 2] = 1  # the ignore pixel (predicted 0) is not counted
    np.testing.assert_array_equal(cm, expected)


def test_scores_by_hand():
    scores = scores_from_confusion(confusion_matrix(PRED, GT, num_classes=4))
    # IoU0 = 1 / (2 + 1 - 1), IoU1 = 2 / (2 + 3 - 2), IoU2 = 1; class 3 absent from both: NaN.
    np.testing.assert_allclose(scores.iou[:3], [0.5, 2 / 3, 1.0])
    assert math.isnan(scores.iou[3])
    assert scores.miou == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert scores.pixel_accuracy == pytest.approx(4 / 5)
    assert scores.num_pixels == 5
    assert scores.as_dict(names=["a", "b", "c", "d"])["iou"]["d"] is None


def test_invalid_prediction_is_a_miss_and_false_positive_class_counts():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 255, 1, 2])
    scores = scores_from_confusion(confusion_matrix(pred, gt, num_classes=3))
    # class 0: TP 1, FN 1 (the 255) -> 1/2; class 1: TP 1, FN 1 -> 1/2;
    # class 2: predicted once, never true -> IoU 0, and it counts in the mean.
    np.testing.assert_allclose(scores.iou, [0.5, 0.5, 0.0])
    assert scores.miou == pytest.approx(1 / 3)
    assert scores.pixel_accuracy == pytest.approx(0.5)


def test_masked_scores_use_only_masked_pixels():
    mask = np.array([[True, False, True], [True, True, True]])
    cm = confusion_matrix(PRED, GT, num_classes=4, mask=mask)
    scores = scores_from_confusion(cm)
    # without the (gt 0, pred 1) pixel everything counted is right
    assert cm.sum() == 4
    assert scores.miou == pytest.approx(1.0)
    assert mean_iou(PRED, GT, num_classes=4) < 1.0


def test_boundary_mask_by_hand():
    gt = np.array([[0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(boundary_mask(gt, 0)[0], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(boundary_mask(gt, 1)[0], [0, 1, 1, 1, 1, 0])
    square = np.zeros((7, 7), dtype=np.uint8)
    square[3, 3] = 5
    band = boundary_mask(square, 1)
    # edge pixels: the centre and its 4 neighbours (a plus); a 3x3 dilation of the plus is the
    # 5x5 around the centre without its 4 corners
    expected = np.zeros((7, 7), dtype=bool)
    expected[1:6, 1:6] = True
    expected[[1, 1, 5, 5], [1, 5, 1, 5]] = False
    np.testing.assert_array_equal(band, expected)
    assert boundary_mask(np.stack([gt, gt]), 0).shape == (2, 1, 6)


def test_segmentation_metric_accumulates_all_boundary_masked():
    gt = np.zeros((8, 8), dtype=np.int64)
    gt[:, 4:] = 1
    pred = gt.copy()
    pred[0, 0] = 1  # an interior error (far from the edge between columns 3 and 4)
    pred[5, 4] = 0  # an error right at the edge
    metric = SegmentationMetric(num_classes=2, boundary_width=1)
    refined = np.zeros_like(gt, dtype=bool)
    refined[5, :] = True
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt), refined)
    metric.update(gt, gt)  # a perfect second image
    out = metric.compute()
    assert out["all"].num_pixels == 128
    assert out["all"].pixel_accuracy == pytest.approx(126 / 128)
    # boundary band is columns 2..5 (width 1 around the edge pair 3|4): 32 px per image
    assert out["boundary"].num_pixels == 64
    assert out["boundary"].pixel_accuracy == pytest.approx(63 / 64)
    # masked: only row 5 of the first image (8 px, one wrong: class 1 TP 3 FN 1, class 0 FP 1)
    assert out["masked"].num_pixels == 8
    np.testing.assert_allclose(out["masked"].iou, [4 / 5, 3 / 4])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)


def test_resolution_roundtrip_by_hand():
    gt = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    np.testing.assert_array_equal(resolution_roundtrip(gt, 2), [[0, 0, 2], [0, 0, 2], [6, 6, 8]])


def test_selection_diagnostic_by_hand():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    dense = np.array([[0, 1, 0, 1], [0, 0, 0, 0]])  # wrong at (0,1), (0,2), (1,2)
    mask = np.array([[0, 1, 1, 0], [0, 0, 0, 1]], dtype=bool)  # two errors + an ignored pixel
    refined = np.array([[0, 0, 0, 1], [0, 0, 0, 0]])  # fixes (0,1) only
    diagnostic = SelectionDiagnostic(2)
    diagnostic.update(dense, refined, mask, gt)
    out = diagnostic.compute()
    # oracle: wrong only at (1,2): class 0 IoU 4/5, class 1 IoU 2/3
    assert out["oracle_miou"] == pytest.approx(100 * (4 / 5 + 2 / 3) / 2)
    # dense: class 0 TP 3, FP 2, FN 1 -> 3/6; class 1 TP 1, FP 1, FN 2 -> 1/4
    assert out["dense_miou"] == pytest.approx(100 * (3 / 6 + 1 / 4) / 2)
    # refined: class 0 TP 4 FP 2 FN 0 -> 4/6; class 1 TP 1 FP 0 FN 2 -> 1/3
    assert out["refined_miou"] == pytest.approx(100 * (4 / 6 + 1 / 3) / 2)
    reachable = out["oracle_miou"] - out["dense_miou"]
    assert out["efficiency"] == pytest.approx((out["refined_miou"] - out["dense_miou"]) / reachable)
    assert out["error_share"] == pytest.approx(2 / 3)
    assert out["accuracy_before"] == 0.0 and out["accuracy_after"] == 50.0
    assert out["full_oracle_miou"] is None and out["accuracy_full"] is None

    # The full-resolution prediction fixes (0,2) but not (0,1): selected pixels set to it.
    full = np.array([[0, 1, 1, 1], [0, 0, 0, 0]])
    diagnostic = SelectionDiagnostic(2)
    diagnostic.update(dense, refined, mask, gt, full)
    out = diagnostic.compute()
    # [[0,1,1,1],[0,0,0,0]]: class 0 TP 3 FP 1 FN 1 -> 3/5; class 1 TP 2 FP 1 FN 1 -> 2/4
    assert out["full_oracle_miou"] == pytest.approx(100 * (3 / 5 + 2 / 4) / 2)
    assert out["accuracy_full"] == 50.0


def test_selection_diagnostic_without_selection_or_errors_has_no_ratios():
    gt = np.zeros((2, 2), dtype=np.int64)
    diagnostic = SelectionDiagnostic(2)
    diagnostic.update(gt, gt, np.zeros((2, 2), bool), gt)
    out = diagnostic.compute()
    assert out["efficiency"] is None and out["error_share"] is None
    assert out["accuracy_before"] is None and out["oracle_miou"] == out["dense_miou"] == 100.0
