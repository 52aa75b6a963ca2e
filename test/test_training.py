"""Training: the loss of the reference, and a toy problem only the sparse refiner can solve."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparserefine_ros.method import (
    SparseRefine,
    cosine_schedule,
    eval_step,
    make_optimizer,
    sparserefine_loss,
    train_step,
)

SCALE = 0.25  # 4x4 full-resolution pixels per dense pixel


def thin_line_batch(batch: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Black images with white 1-pixel lines (class 1) on background (class 0).

    At a quarter of the resolution a line is a quarter of a dense pixel: the dense model cannot
    say which of its 16 pixels are line; the full-resolution RGB says it exactly.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, size, size, dtype=torch.int64)
    for image in range(batch):
        for _ in range(2):
            row, col = torch.randint(size, (2,), generator=generator).tolist()
            labels[image, row, :] = 1
            labels[image, :, col] = 1
    images = (labels * 255).to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()
    return images, labels


def brightness_dense_model() -> nn.Module:
    """Frozen 1x1 conv: logit(line) - logit(background) = 16 * (mean brightness - 1/4).

    Confident background on black blocks, maximally unsure (ln 2) on a block a line crosses.
    """
    model = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1] = 16.0 / 3.0
        model.bias[1] = -4.0
    return model.requires_grad_(False)


def toy_model(**refiner) -> SparseRefine:
    torch.manual_seed(0)
    # mean 0, std 1: normalized input is brightness in [0, 1], which the dense model expects.
    settings = {"widths": (8, 16), "blocks": 1, **refiner}
    return SparseRefine(2, tau=0.15, scale=SCALE, mean=(0, 0, 0), std=(1, 1, 1), **settings)


def test_loss_is_sparse_plus_fused_cross_entropy_over_valid_selected_pixels():
    dense, model = brightness_dense_model(), toy_model()
    images, labels = thin_line_batch(2, 32, seed=1)
    labels[0, :16] = 255  # ignored pixels must not count
    model.eval()
    full, low = model.preprocess(images)
    output = model(full, model.run_dense(dense, low))
    total, sparse, fused = sparserefine_loss(output, labels)

    b, y, x = output.selection.coords.unbind(1)
    target = labels[b, y, x]
    valid = target != 255
    assert 0 < int(valid.sum()) < target.numel()
    expected_sparse = F.cross_entropy(output.sparse_logits[valid], target[valid])
    expected_fused = F.cross_entropy(output.logits[valid], target[valid])
    torch.testing.assert_close(sparse, expected_sparse)
    torch.testing.assert_close(fused, expected_fused)
    torch.testing.assert_close(total, expected_sparse + expected_fused)


def test_distill_mixes_label_and_teacher_cross_entropy():
    dense, model = brightness_dense_model(), toy_model()
    images, labels = thin_line_batch(2, 32, seed=1)
    labels[0, :16] = 255
    model.eval()
    full, low = model.preprocess(images)
    output = model(full, model.run_dense(dense, low))
    teacher = torch.randn(output.logits.shape[0], 2)
    _, hard_sparse, hard_fused = sparserefine_loss(output, labels)
    total, sparse, fused = sparserefine_loss(output, labels, teacher_logits=teacher, distill=0.25)

    b, y, x = output.selection.coords.unbind(1)
    valid = labels[b, y, x] != 255
    probs = F.softmax(teacher[valid], dim=1)
    soft_sparse = F.cross_entropy(output.sparse_logits[valid], probs)
    soft_fused = F.cross_entropy(output.logits[valid], probs)
    torch.testing.assert_close(sparse, 0.75 * hard_sparse + 0.25 * soft_sparse)
    torch.testing.assert_close(fused, 0.75 * hard_fused + 0.25 * soft_fused)
    torch.testing.assert_close(total, sparse + fused)
    with pytest.raises(ValueError, match="distill"):
        sparserefine_loss(output, labels, teacher_logits=teacher)
    with pytest.raises(ValueError, match="distill"):
        sparserefine_loss(output, labels, distill=0.5)


def test_residual_refiner_starts_as_the_dense_prediction():
    dense, model = brightness_dense_model(), toy_model(residual=True)
    images, _ = thin_line_batch(2, 32, seed=3)
    model.eval()
    full, low = model.preprocess(images)
    output = model(full, model.run_dense(dense, low))
    assert output.logits.shape[0] > 0
    torch.testing.assert_close(output.sparse_logits, output.dense_logits)
    torch.testing.assert_close(output.logits, output.dense_logits)  # the ensembler's too


def test_batch_without_valid_selected_pixels_makes_no_update():
    dense, model = brightness_dense_model(), toy_model()
    images, labels = thin_line_batch(2, 32, seed=2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = make_optimizer(model)
    metrics = train_step(dense, model, images, torch.full_like(labels, 255), optimizer)
    assert not metrics.stepped and metrics.num_valid == 0 and metrics.num_selected > 0
    assert metrics.loss == 0.0 and math.isnan(metrics.acc_fused)
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_single_selected_pixel_trains():
    """BatchNorm over one site has no batch statistics; training must still step."""
    dense, model = brightness_dense_model(), toy_model()
    # Dense model at full resolution (blocks of one pixel), every pixel a candidate, budget
    # ceil(1e-6 * 1024) = 1 pixel.
    model.scale, model.tau, model.max_fraction = 1.0, -1.0, 1e-6
    images, labels = thin_line_batch(1, 32, seed=4)
    metrics = train_step(dense, model, images, labels, make_optimizer(model))
    assert metrics.num_selected == 1 and metrics.stepped and math.isfinite(metrics.loss)


def test_cosine_schedule():
    optimizer = make_optimizer(nn.Linear(2, 2), lr=1.0)
    schedule = cosine_schedule(optimizer, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05


@pytest.mark.parametrize(
    "refiner",
    [
        {},
        {"patch": 3, "context": 3, "use_probs": True},
        {"patch": 3, "use_probs": True, "guide": 3, "stem_kernel": 1, "widths": (16,), "blocks": 0},
    ],
    ids=["pixel", "windows", "guided-per-site"],
)
def test_refiner_learns_thin_structures_the_dense_model_cannot_resolve(refiner):
    dense, model = brightness_dense_model(), toy_model(**refiner)
    val_images, val_labels = thin_line_batch(4, 32, seed=1000)
    before = eval_step(dense, model, val_images, val_labels)
    # The dense model is right only on the background share of each uncertain block.
    assert before.num_valid > 100 and before.acc_dense < 0.85

    steps = 80
    optimizer = make_optimizer(model, lr=3e-3)
    schedule = cosine_schedule(optimizer, steps)
    losses = []
    for step in range(steps):
        images, labels = thin_line_batch(4, 32, seed=step)
        metrics = train_step(dense, model, images, labels, optimizer, schedule)
        assert metrics.stepped
        losses.append(metrics.loss)

    after = eval_step(dense, model, val_images, val_labels)
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    assert after.loss < 0.3 * before.loss
    assert after.acc_dense == before.acc_dense  # the dense model stayed frozen
    assert after.acc_fused > 0.97 and after.acc_fused > before.acc_dense + 0.1
    assert after.acc_sparse > 0.97
    assert after.gate_mean < 0.5  # the gate learned to trust the sparse prediction here


def test_refiner_learns_from_the_full_resolution_teacher_alone():
    """distill=1: no label reaches the loss; the dense model at full resolution, exact on this
    toy, is the only target, and the refiner learns the lines from it."""
    dense, model = brightness_dense_model(), toy_model()
    val_images, val_labels = thin_line_batch(4, 32, seed=1000)
    optimizer = make_optimizer(model, lr=3e-3)
    steps = 80
    schedule = cosine_schedule(optimizer, steps)
    for step in range(steps):
        images, labels = thin_line_batch(4, 32, seed=step)
        metrics = train_step(dense, model, images, labels, optimizer, schedule, distill=1.0)
    assert metrics.acc_teacher == 1.0
    after = eval_step(dense, model, val_images, val_labels)
    assert math.isnan(after.acc_teacher)
    assert after.acc_fused > 0.97 and after.acc_fused > after.acc_dense + 0.1
