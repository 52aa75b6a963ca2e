"""Training of the refiner over a frozen dense model, then calibration of tau and the budget."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sparserefine_ros.method.sparserefine import SparseRefine
from sparserefine_ros.method.training import cosine_schedule, make_optimizer, train_step
from sparserefine_ros.models.segmenter import (
    load_segmenter,
    save_segmenter,
    with_overrides,
)

from .calibration import CalibrationRule, calibrate
from .cards import card_header, card_note, card_record, card_table
from .dense_outputs import DenseOutputs, RefinerCrops
from .runs import (
    Distributed,
    EpochSampler,
    RunFiles,
    TrainConfig,
    batches,
    check_config,
    last_iteration,
    progress,
    train_split,
    val_samples,
)


@dataclass
class RefinerSettings:
    """The refiner's architecture, the selection it trains with and its teacher's weight."""

    tau: float = 0.1
    max_fraction: float | None = None  # a budget bounds the cost of a training step
    scale: float = 0.5
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: int = 1
    use_coords: bool = False
    use_probs: bool = False
    patch: int = 1  # full-resolution RGB window read per site
    context: int = 1  # dense-resolution probability window read per site
    residual: bool = False  # the refiner corrects the dense logits (method.refiner)
    stem_kernel: int = 3  # 3: submanifold 3x3 stem; 1: per site
    guide: int = 1  # window of the colour-guided upsampling (method.guide); 1: none
    guide_dim: int = 16
    distill: float = 0.0  # weight of the full-resolution teacher in the loss (method.training)
    dense_images: int = 200  # train images the dense model runs on once (dense_outputs)


def train_refiner(
    config: TrainConfig,
    dense: str | Path,
    settings: RefinerSettings,
    taus: Sequence[float],
    fractions: Sequence[float | None],
    rule: CalibrationRule | None = None,
    note: str = "",
) -> Path | None:
    """Train a refiner over the frozen dense model ``dense`` (a name or path ``load_segmenter``
    accepts), calibrate tau and the budget on val, and write the full checkpoint."""
    check_config(config)
    distilling = settings.distill > 0.0
    if config.precision != "fp32" or config.loss != "ce":
        raise ValueError("the refiner trains in fp32 with the method's loss: drop precision/loss")
    ddp = Distributed(config.device)
    torch.manual_seed(config.seed)  # initial weights; data order has its own seeds
    files = RunFiles(config, ddp.main)
    segmenter = load_segmenter(dense, ddp.device)
    for p in getattr(segmenter.dense_model, "parameters", list)():
        p.requires_grad_(False)
    model = SparseRefine(
        segmenter.num_classes, tau=settings.tau, max_fraction=settings.max_fraction,
        scale=settings.scale, mean=segmenter.mean,
        std=segmenter.std, widths=settings.widths, blocks=settings.blocks,
        use_coords=settings.use_coords, use_probs=settings.use_probs, patch=settings.patch,
        context=settings.context, residual=settings.residual, stem_kernel=settings.stem_kernel,
        guide=settings.guide, guide_dim=settings.guide_dim,
    ).to(ddp.device)  # fmt: skip
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    scheduler = cosine_schedule(optimizer, config.iterations, config.warmup)
    start, elapsed = files.resume(model, optimizer, scheduler)
    trained = ddp.wrap(model)
    split = train_split(ddp, config.data)
    if ddp.main:  # rank 0 runs the dense model, the others wait and map its files
        DenseOutputs(split, segmenter.dense_model, model, settings.dense_images, distilling)
    ddp.barrier()
    outputs = DenseOutputs(split, segmenter.dense_model, model, settings.dense_images, distilling)
    dataset = RefinerCrops(split, outputs, tuple(config.crop), config.seed)
    val = val_samples(config)
    sampler = EpochSampler(len(dataset), config.seed, ddp.rank, ddp.world)

    def elapsed_now() -> float:
        return elapsed + time.perf_counter() - t0

    t0 = time.perf_counter()
    bar = progress(config.iterations, start, ddp.main, "train refiner")
    data = batches(dataset, sampler, config, start)
    for iteration in range(start + 1, last_iteration(config) + 1):
        images, labels, indices, offsets = next(data)
        targets = outputs.targets(indices, offsets, tuple(config.crop))
        step = train_step(
            targets, trained, images, labels, optimizer, scheduler, distill=settings.distill
        )
        bar.update()
        bar.set_postfix(loss=f"{step.loss:.3f}", sel=step.num_selected)
        record = {"iteration": iteration, **asdict(step), "lr": scheduler.get_last_lr()[0]}
        if val is not None and ddp.main and iteration % config.val_every == 0:
            check = calibrate(
                segmenter.dense_model, model, val, [settings.tau], [settings.max_fraction],
                CalibrationRule(), config.val_images,
            )  # fmt: skip
            record["val_miou"] = check["miou"]
            bar.write(f"iteration {iteration}: val mIoU {check['miou']:.2f} at tau {settings.tau}")
        record["elapsed_s"] = elapsed_now()
        files.log(record)
        if iteration % config.save_every == 0 or iteration == last_iteration(config):
            files.save_state({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "iteration": iteration,
                "elapsed": elapsed_now(),
            })  # fmt: skip
            ddp.barrier()
    bar.close()
    if not ddp.main or last_iteration(config) < config.iterations:
        return None
    model.eval()
    if val is None:
        calibration: dict = {}
    else:
        calibration = calibrate(
            segmenter.dense_model, model, val, taus, fractions, rule or CalibrationRule(),
            config.val_images,
        )  # fmt: skip
        model = with_overrides(
            model, tau=calibration["tau"], max_fraction=calibration["max_fraction"]
        )
        bar.write(
            f"calibrated tau {calibration['tau']} max_fraction {calibration['max_fraction']}: "
            f"val mIoU {calibration['miou']:.2f}, selected {100 * calibration['fraction']:.2f}%, "
            f"{calibration['speedup']:.2f}x faster than full resolution"
            + ("" if calibration["met_rule"] else " (no setting met the rule: the fastest)")
        )
    files.log({"calibration": calibration, "elapsed_s": elapsed_now()})
    segmenter.refiner = model.cpu()
    segmenter.calibration = calibration
    summary = {"calibration": {k: v for k, v in calibration.items() if k != "table"}}
    record = card_record(config, "refiner", model.config, config.iterations, elapsed_now(), summary)
    history = segmenter.card or card_header(config.out)
    segmenter.card = history + card_note(note) + card_table(record)
    return save_segmenter(config.out, segmenter)
