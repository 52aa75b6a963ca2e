"""Training of a dense model of a registered family, from scratch or from a checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from sparserefine_ros.data.cityscapes import CityscapesDataset
from sparserefine_ros.evaluation.metrics import SegmentationMetric
from sparserefine_ros.labels import CLASS_COLORS, CLASS_NAMES
from sparserefine_ros.method.sparserefine import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from sparserefine_ros.method.training import cosine_schedule
from sparserefine_ros.models.registry import build_dense_model, dense_model_family
from sparserefine_ros.models.segmenter import (
    Segmenter,
    load_segmenter,
    save_segmenter,
)

from .cards import card_header, card_note, card_record, card_table
from .losses import dense_loss, distillation_loss
from .runs import (
    Distributed,
    EpochSampler,
    RunFiles,
    Throughput,
    TrainConfig,
    autocast,
    batches,
    check_config,
    last_iteration,
    memory_format,
    progress,
    train_dataset,
    val_samples,
)


def dense_logits_full(
    model: Callable,
    images: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """Logits (B, C, H, W) at the input resolution (bilinear from the model's output) of the
    model run on the image, or on the image area-downscaled by ``scale`` as the pipeline does."""
    x = normalize_images(images, mean, std)
    size = x.shape[-2:]
    if scale != 1.0:
        low = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        x = F.interpolate(x, low, mode="area")
    logits = model(x)
    return F.interpolate(logits.float(), size, mode="bilinear", align_corners=False)


@torch.no_grad()
def evaluate_dense(
    model: Callable,
    dataset: CityscapesDataset,
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    limit: int,
    device: torch.device,
    scales: Sequence[float] = (1.0,),
) -> list[float]:
    """mIoU (percent) of the dense model on the first ``limit`` images, at each input scale."""
    metrics = [SegmentationMetric(num_classes) for _ in scales]
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    for index in range(min(limit, len(dataset))):
        image, label = dataset[index]
        for metric, scale in zip(metrics, scales, strict=True):
            logits = dense_logits_full(model, image[None].to(device), mean_t, std_t, scale)
            metric.update(logits.argmax(1).cpu(), label[None])
    return [100.0 * metric.compute()["all"].miou for metric in metrics]


def _grown(model: nn.Module, family: str, changes: dict) -> nn.Module:
    """``model`` rebuilt with ``changes`` to its config, keeping every weight it already had; the
    config may only add modules (a context branch, more blocks per branch), not reshape existing
    ones. The family's new modules start as the identity, so the grown model predicts as the
    trained one did."""
    config = {**model.config, **changes}
    config.pop("num_classes")
    grown = build_dense_model(family, model.num_classes, **config)
    new_state = grown.state_dict()
    lost = [k for k, v in model.state_dict().items()
            if k not in new_state or new_state[k].shape != v.shape]  # fmt: skip
    if lost:
        raise ValueError(f"model config {changes} would drop or reshape weights: {lost[:5]}")
    grown.load_state_dict(model.state_dict(), strict=False)
    return grown


class _Teacher:
    """A frozen dense model of a checkpoint: its logits at the input resolution of crops."""

    def __init__(self, checkpoint: str | Path, device: torch.device) -> None:
        segmenter = load_segmenter(checkpoint, device)
        if segmenter.num_classes != len(CLASS_NAMES):
            raise ValueError(f"teacher {checkpoint} predicts {segmenter.num_classes} classes")
        self.model = segmenter.dense_model
        if isinstance(self.model, nn.Module):
            self.model.eval().requires_grad_(False)
        self.mean = torch.tensor(segmenter.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(segmenter.std, device=device).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return dense_logits_full(self.model, images, self.mean, self.std)


def train_dense(
    config: TrainConfig,
    family: str | None = None,
    model_config: dict | None = None,
    note: str = "",
    init: str | Path | None = None,
) -> Path | None:
    """Train a dense model of ``family`` from scratch, or fine-tune the registered-family model
    of checkpoint ``init``; writes a checkpoint (no refiner) to ``config.out``. Returns its path
    on rank 0."""
    check_config(config)
    ddp = Distributed(config.device)
    torch.manual_seed(config.seed)  # initial weights; data order has its own seeds
    num_classes = len(CLASS_NAMES)
    mean_std = IMAGENET_MEAN, IMAGENET_STD
    history = card_header(config.out)
    if init is not None:
        start_from = load_segmenter(init)
        model, family = start_from.dense_model, dense_model_family(start_from.dense_model)
        if start_from.num_classes != num_classes:
            raise ValueError(f"{init} predicts {start_from.num_classes} classes, data has 19")
        if model_config:
            model = _grown(model, family, model_config)
        mean_std = start_from.mean, start_from.std
        history = start_from.card
    elif family is None:
        raise ValueError("give a dense model family or a checkpoint to start from")
    else:
        model = build_dense_model(family, num_classes, **(model_config or {}))
    model = model.to(ddp.device, memory_format=memory_format(config))
    files = RunFiles(config, ddp.main)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = cosine_schedule(optimizer, config.iterations, config.warmup)
    start, elapsed = files.resume(model, optimizer, scheduler)
    trained = ddp.wrap(model)
    mean = torch.tensor(mean_std[0], device=ddp.device).view(1, 3, 1, 1)
    std = torch.tensor(mean_std[1], device=ddp.device).view(1, 3, 1, 1)
    teacher = None if config.teacher is None else _Teacher(config.teacher, ddp.device)
    dataset, val = train_dataset(config, ddp), val_samples(config)
    sampler = EpochSampler(len(dataset), config.seed, ddp.rank, ddp.world)
    metrics: dict = {}

    def elapsed_now() -> float:
        return elapsed + time.perf_counter() - t0

    def save(iteration: int) -> None:
        files.save_state({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "iteration": iteration,
            "elapsed": elapsed_now(),
        })  # fmt: skip
        if ddp.main:
            record = card_record(config, family, model.config, iteration, elapsed_now(), metrics)
            card_text = history + card_note(note) + card_table(record)
            segmenter = Segmenter(model, list(CLASS_NAMES), *mean_std, CLASS_COLORS, card=card_text)
            save_segmenter(config.out, segmenter)
        ddp.barrier()

    t0 = time.perf_counter()
    bar = progress(config.iterations, start, ddp.main, f"train dense {family}")
    data = batches(dataset, sampler, config, start)
    throughput = Throughput(config.batch_size * ddp.world)
    for iteration in range(start + 1, last_iteration(config) + 1):
        images, labels = next(data)
        model.train()
        images = images.to(ddp.device, memory_format=memory_format(config))
        with autocast(config, ddp.device):
            logits = dense_logits_full(trained, images, mean, std)
        labels = labels.to(ddp.device)
        loss = dense_loss(config.loss, logits, labels)
        if teacher is not None:
            with torch.no_grad(), autocast(config, ddp.device):
                teacher_logits = teacher(images)
            soft = distillation_loss(logits, teacher_logits.float(), labels)
            loss = (1.0 - config.distill) * loss + config.distill * soft
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        throughput.step()
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}", crops_s=f"{throughput.rate:.2f}")
        record = {"iteration": iteration, "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                  "crops_per_s": throughput.rate}  # fmt: skip
        if (
            val is not None
            and ddp.main
            and (iteration % config.val_every == 0 or iteration == config.iterations)
        ):
            model.eval()
            full, half = evaluate_dense(model, val, *mean_std, num_classes, config.val_images,
                                        ddp.device, scales=(1.0, 0.5))  # fmt: skip
            metrics["val_miou_full"] = record["val_miou"] = full
            metrics["val_miou_half"] = record["val_miou_half"] = half
            metrics["crops_per_s"] = throughput.rate
            bar.write(f"iteration {iteration}: val mIoU {full:.2f} full, {half:.2f} at 0.5")
            throughput.pause()
        record["elapsed_s"] = elapsed_now()
        files.log(record)
        if iteration % config.save_every == 0 or iteration == last_iteration(config):
            save(iteration)
            throughput.pause()
    bar.close()
    return Path(config.out) if ddp.main else None
