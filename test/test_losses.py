"""Dense-model losses: OHEM keeps the hard pixels, and at least its minimum share of them;
distillation follows the teacher's probabilities where the labels count."""

import pytest
import torch
from torch.nn import functional as F

from sparserefine_ros.labels import IGNORE_INDEX
from sparserefine_ros.training.losses import dense_loss, distillation_loss, ohem_cross_entropy


def _batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 8, 8, generator=generator, requires_grad=True)
    labels = torch.randint(0, 5, (2, 8, 8), generator=generator)
    labels[0, :2] = 255
    return logits, labels


def test_ohem_is_the_mean_loss_of_the_pixels_below_the_threshold():
    logits, labels = _batch()
    pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    valid = labels != 255
    true_prob = torch.exp(-pixel)
    hard = valid & (true_prob <= 0.1)
    assert 0 < int(hard.sum()) < int(valid.sum())
    loss = ohem_cross_entropy(logits, labels, thresh=0.1, min_kept=0.0)
    torch.testing.assert_close(loss, pixel[hard].mean())


def test_ohem_keeps_at_least_the_hardest_min_kept_share():
    logits, labels = _batch(1)
    pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    valid_losses = pixel[labels != 255]
    kept = int(0.5 * valid_losses.numel())
    hardest = valid_losses.sort(descending=True).values[:kept]
    loss = ohem_cross_entropy(logits, labels, thresh=0.0, min_kept=0.5)
    torch.testing.assert_close(loss, hardest.mean())
    loss.backward()
    assert logits.grad is not None and int((logits.grad.abs().sum(1) > 0).sum()) == kept


def test_all_ignored_gives_zero_with_a_graph_and_unknown_loss_is_refused():
    logits, labels = _batch()
    labels[:] = 255
    loss = ohem_cross_entropy(logits, labels)
    loss.backward()
    assert float(loss) == 0.0
    with pytest.raises(ValueError, match="unknown dense loss 'focal'"):
        dense_loss("focal", logits, labels)


def test_distillation_is_the_cross_entropy_against_the_teachers_probabilities_where_labelled():
    logits, teacher = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [IGNORE_INDEX, 2]]])
    expected = -(teacher.softmax(1) * logits.log_softmax(1)).sum(1)[labels != IGNORE_INDEX].mean()
    torch.testing.assert_close(distillation_loss(logits, teacher, labels), expected)
    # A teacher sure of one class is that class's label: the loss becomes plain cross-entropy.
    sure = F.one_hot(labels.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 1e4
    torch.testing.assert_close(
        distillation_loss(logits, sure, labels),
        F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX),
    )
    all_ignored = torch.full_like(labels, IGNORE_INDEX)
    assert distillation_loss(logits.requires_grad_(), teacher, all_ignored).item() == 0.0
