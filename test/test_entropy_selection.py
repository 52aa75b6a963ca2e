"""Entropy and the selection of uncertain pixels, against hand-computed values."""

import math

import pytest
import torch
from torch.nn import functional as F

from sparserefine_ros.method import entropy, select_uncertain
from sparserefine_ros.method.entropy import (
    class_dtype,
    class_map,
    pixel_statistics,
    upsampled_class_map,
    upsampled_statistics,
)


def test_entropy_hand_values():
    logits = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # uniform: ln 4
            [0.0, math.log(3.0), -1e4, -1e4],  # p = (1/4, 3/4, 0, 0)
            [1e4, 0.0, 0.0, 0.0],  # saturated: 0, not NaN
        ],
        dtype=torch.float64,
    )
    expected = torch.tensor(
        [math.log(4.0), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), 0.0],
        dtype=torch.float64,
    )
    torch.testing.assert_close(entropy(logits), expected, rtol=0, atol=1e-12)


def test_entropy_reduces_over_class_dim_of_images():
    logits = torch.randn(2, 5, 3, 4)
    values = entropy(logits)
    assert values.shape == (2, 3, 4)
    assert torch.all(values >= 0) and torch.all(values <= math.log(5) + 1e-6)
    torch.testing.assert_close(entropy(logits.movedim(1, -1), dim=-1), values)


def test_pixel_statistics_are_the_entropy_and_argmax_in_the_smallest_class_type():
    logits = torch.randn(2, 5, 3, 4)
    values, classes = pixel_statistics(logits)
    torch.testing.assert_close(values, entropy(logits))
    assert classes.dtype == torch.uint8
    assert torch.equal(classes.long(), logits.argmax(dim=1))
    assert class_dtype(256) == torch.uint8 and class_dtype(257) == torch.int32
    ties = torch.randint(0, 3, (2, 6, 4, 4)).float()  # equal maxima go to the lower class
    assert torch.equal(class_map(ties).long(), ties.argmax(dim=1))
    saturated = torch.tensor([1000.0, 0.0, -1000.0]).view(1, 3, 1, 1)
    assert pixel_statistics(saturated)[0].item() == 0.0
    many = torch.zeros(1, 300, 1, 2)
    many[0, 299, 0, 1] = 1.0  # class 299 does not fit a byte
    assert pixel_statistics(many)[1].tolist() == [[[0, 299]]]


def _smooth_logits(seed: int) -> torch.Tensor:
    """Logits whose classes form regions, as a model's do (so most source cells agree)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, 7, 4, 5, generator=generator) * 4
    return F.interpolate(coarse, (16, 20), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("size", [(64, 80), (61, 83), (16, 20), (9, 13)])
def test_upsampled_class_map_is_the_argmax_of_the_bilinear_logits(size):
    for seed in range(3):
        logits = _smooth_logits(seed)
        upsampled = F.interpolate(logits, size, mode="bilinear", align_corners=False)
        expected = class_map(upsampled)
        top2 = upsampled.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # float rounding may flip exact near-ties
        got = upsampled_class_map(logits, None, size)
        assert got.shape == (2, *size) and got.dtype == torch.uint8
        assert torch.equal(got[clear], expected[clear]) and clear.float().mean() > 0.99
        assert torch.equal(upsampled_class_map(logits, class_map(logits), size), got)


@pytest.mark.parametrize("spread", [0.05, 4.0])
def test_upsampled_class_map_is_exact_for_near_equal_and_separated_logits(spread):
    # Unsmoothed logits of 19 classes: spread 0.05 makes many classes near-equal in every cell,
    # 4.0 leaves one or two clear winners; the class map must be exact either way.
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 19, 12, 15, generator=generator) * spread
    size = (50, 61)
    upsampled = F.interpolate(logits, size, mode="bilinear", align_corners=False)
    top2 = upsampled.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-5 * spread
    got = upsampled_class_map(logits, None, size)
    assert torch.equal(got[clear], class_map(upsampled)[clear]) and clear.float().mean() > 0.98


def test_upsampled_statistics_resize_the_entropy_not_the_logits():
    logits = _smooth_logits(0)
    values, classes = upsampled_statistics(logits, (64, 80))
    expected = F.interpolate(
        entropy(logits)[:, None], (64, 80), mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(values, expected)
    assert torch.equal(classes, upsampled_class_map(logits, None, (64, 80)))
    static = upsampled_statistics(logits, (64, 80), static=True)
    torch.testing.assert_close(static[0], values)
    assert (static[1] != classes).float().mean() < 0.01  # the same up to float near-ties
    same = upsampled_statistics(logits, (16, 20))  # at the logits' own size: exact statistics
    torch.testing.assert_close(same[0], entropy(logits))
    assert torch.equal(same[1], class_map(logits))


ENTROPY = torch.tensor(
    [
        [[0.9, 0.1, 0.5], [0.5, 0.3, 0.7]],
        [[0.2, 0.2, 0.2], [0.2, 0.2, 0.2]],
    ]
)


def test_threshold_is_strict():
    mask = select_uncertain(ENTROPY, tau=0.5)
    expected = torch.tensor(
        [[[True, False, False], [False, False, True]], [[False] * 3, [False] * 3]]
    )
    assert torch.equal(mask, expected)


def test_budget_keeps_highest_entropy_and_breaks_ties_in_raster_order():
    # 6 pixels per image, budget ceil(0.4 * 6) = 3 per image.
    mask = select_uncertain(ENTROPY, tau=0.15, max_fraction=0.4)
    expected = torch.tensor(
        [
            [[True, False, True], [False, False, True]],  # 0.9, 0.7, then 0.5 at (0, 2) first
            [[True, True, True], [False, False, False]],  # all tied: the first three
        ]
    )
    assert torch.equal(mask, expected)
    assert torch.equal(mask.flatten(1).sum(1), torch.tensor([3, 3]))


@pytest.mark.parametrize("levels", [0, 7])
@pytest.mark.parametrize("fraction", [0.004, 0.05, 0.3])
def test_budget_on_large_maps_matches_a_full_sort(levels, fraction):
    # Large maps take the partial selection (sampled floor, then top-k); levels > 0 quantizes
    # the entropy so tie groups straddle the cut.
    generator = torch.Generator().manual_seed(levels)
    values = torch.rand(2, 96, 128, generator=generator)
    if levels:
        values = torch.round(values * levels) / levels
    mask = select_uncertain(values, tau=0.2, max_fraction=fraction)
    budget = math.ceil(fraction * 96 * 128)
    for image in range(2):
        flat = values[image].flatten()
        kept = torch.nonzero(flat > 0.2).flatten().tolist()
        ranked = sorted(kept, key=lambda i: (-float(flat[i]), i))[:budget]
        expected = torch.zeros_like(flat, dtype=torch.bool)
        expected[ranked] = True
        assert torch.equal(mask[image].flatten(), expected)


def test_budget_above_count_changes_nothing():
    assert torch.equal(
        select_uncertain(ENTROPY, tau=0.5, max_fraction=1.0), select_uncertain(ENTROPY, tau=0.5)
    )


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_budget_outside_unit_interval_is_rejected(fraction):
    with pytest.raises(ValueError, match="max_fraction"):
        select_uncertain(ENTROPY, tau=0.1, max_fraction=fraction)


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.6, [True, True, False]), (0.5, [True, False, False]), (0.3, [False, False, False])],
)
def test_budget_counts_areas_and_keeps_pixels_whole(fraction, expected):
    # Areas 3, 1, 2 (6 in all): budgets ceil(6 * fraction) = 4, 3, 2 output pixels.
    entropy_map = torch.tensor([[[0.9, 0.8, 0.7]]])
    areas = torch.tensor([[3, 1, 2]])
    mask = select_uncertain(entropy_map, tau=0.1, max_fraction=fraction, areas=areas)
    assert mask[0, 0].tolist() == expected


def test_areas_must_cover_one_image_with_positive_counts():
    with pytest.raises(ValueError, match="areas"):
        select_uncertain(ENTROPY, tau=0.1, max_fraction=0.5, areas=torch.ones(2, 2))
    with pytest.raises(ValueError, match="areas"):
        select_uncertain(ENTROPY, tau=0.1, max_fraction=0.5, areas=torch.zeros(2, 3))
