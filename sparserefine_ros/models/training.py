"""Training of dense models and of the refiner, single process or under ``torchrun`` (DDP).

Both loops are iteration-based with a cosine schedule, log loss and validation mIoU to
``train_log.jsonl`` in the output checkpoint directory, and keep their resumable state (model,
optimizer, schedule, iteration) in ``train_state.pt`` beside it, read back with
``weights_only=True``. Data order and augmentation depend only on the seed, the epoch and the
sample index, so a resumed run sees the batches an uninterrupted one would have seen.

Under ``torchrun`` every rank trains on its own shard of each epoch and gradients are averaged
(gloo on CPU, NCCL on GPU); rank 0 alone validates, logs and writes files.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from sparserefine_ros.data.cache import DecodedSplit, TrainingSet
from sparserefine_ros.data.cityscapes import CityscapesDataset
from sparserefine_ros.data.transforms import TrainTransform
from sparserefine_ros.evaluation.metrics import SegmentationMetric
from sparserefine_ros.labels import CLASS_COLORS, CLASS_NAMES
from sparserefine_ros.method.pipeline import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SparseRefine,
    class_maps,
    normalize_images,
)
from sparserefine_ros.method.training import cosine_schedule, make_optimizer, train_step

from .losses import DENSE_LOSSES, dense_loss
from .registry import build_dense_model, dense_model_family
from .segmenter import Segmenter, load_segmenter, save_segmenter, with_overrides

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"


@dataclass
class TrainConfig:
    """What both loops share; recorded in the log and the model card."""

    data: str
    out: str
    iterations: int = 2000
    batch_size: int = 2
    crop: tuple[int, int] = (512, 1024)  # (height, width)
    scale_range: tuple[float, float] = (0.5, 2.0)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    seed: int = 0
    val_every: int = 500
    val_images: int = 8
    save_every: int = 250
    workers: int = 2
    device: str = "cpu"
    class_aware: float = 0.0  # share of rare-class crops (data.cache.TrainingSet)
    loss: str = "ce"  # dense models only (DENSE_LOSSES); the refiner trains the method's loss
    precision: str = "fp32"  # fp32, or bf16 autocast of the forward pass
    resume: bool = False
    stop_at: int | None = None  # leave a resumable state after this iteration (time-limited jobs)


class Distributed:
    """Rank, world size and device of this process; set up from torchrun's environment."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", local_rank)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return _DDP(module, device_ids=ids)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


class _DDP(DistributedDataParallel):
    """DDP that also exposes the wrapped module's methods (``preprocess``, ``run_dense``...), so
    the method core's ``train_step`` can drive it like the module itself."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


class EpochSampler(Sampler[int]):
    """A fresh permutation per epoch from ``(seed, epoch)``, sharded across ranks, resumable.

    ``skip`` drops this rank's first indices of the epoch (those an interrupted run consumed).
    """

    def __init__(self, size: int, seed: int, rank: int, world: int) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.skip = 0, 0

    def indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: (-len(order)) % self.world]  # every rank gets as many
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.skip :])

    def __len__(self) -> int:
        return len(self.indices()) - self.skip


def batches(
    dataset: TrainingSet, sampler: EpochSampler, config: TrainConfig, start: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches from iteration ``start`` on, epoch after epoch (last partial batch kept)."""
    per_epoch = math.ceil(len(sampler.indices()) / config.batch_size)
    epoch, offset = divmod(start, per_epoch)
    while True:
        sampler.epoch, sampler.skip = epoch, offset * config.batch_size
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
        )
        yield from loader
        epoch, offset = epoch + 1, 0


def _train_dataset(config: TrainConfig, ddp: Distributed) -> TrainingSet:
    """The train split decoded once (rank 0 builds the cache, the others wait and map it)."""
    if ddp.main:
        DecodedSplit(config.data, "train")
    ddp.barrier()
    split = DecodedSplit(config.data, "train")
    if not len(split):
        raise FileNotFoundError(f"no training images in {config.data}/leftImg8bit/train")
    transform = TrainTransform(tuple(config.crop), tuple(config.scale_range))
    return TrainingSet(split, transform, seed=config.seed, class_aware=config.class_aware)


def _check_config(config: TrainConfig) -> None:
    if config.loss not in DENSE_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(DENSE_LOSSES)}, got {config.loss!r}")
    if config.precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}"
        )


PRECISIONS = ("fp32", "bf16")


def _autocast(config: TrainConfig, device: torch.device):
    return torch.autocast(device.type, torch.bfloat16, enabled=config.precision == "bf16")


def _memory_format(config: TrainConfig) -> torch.memory_format:
    # bf16 convolutions reach AMX/oneDNN's fast kernels in channels-last (1.35x a step here)
    return torch.channels_last if config.precision == "bf16" else torch.contiguous_format


def _val_samples(config: TrainConfig) -> CityscapesDataset | None:
    try:
        dataset = CityscapesDataset(config.data, "val")
    except FileNotFoundError:
        return None
    return dataset if len(dataset) else None


class RunFiles:
    """The output directory's log and resumable state (rank 0 writes, every rank reads)."""

    def __init__(self, config: TrainConfig, main: bool) -> None:
        self.out = Path(config.out)
        self.main = main
        self.state_path = self.out / STATE_FILE
        if self.state_path.exists() and not config.resume:
            raise FileExistsError(f"{self.state_path} exists: pass --resume, or another --out")
        if main:
            self.out.mkdir(parents=True, exist_ok=True)

    def resume(self, model, optimizer, scheduler) -> tuple[int, float]:
        """Load the saved run state into the three, if there is one; (iteration, elapsed s)."""
        if not self.state_path.is_file():
            return 0, 0.0
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return int(state["iteration"]), float(state["elapsed"])

    def save_state(self, state: dict) -> None:
        if self.main:
            tmp = self.state_path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(self.state_path)

    def log(self, record: dict) -> None:
        if self.main:
            with (self.out / LOG_FILE).open("a") as file:
                file.write(json.dumps(record) + "\n")


def _last_iteration(config: TrainConfig) -> int:
    return config.iterations if config.stop_at is None else min(config.stop_at, config.iterations)


def _progress(total: int, start: int, main: bool, desc: str) -> tqdm:
    return tqdm(total=total, initial=start, disable=not main, desc=desc, dynamic_ncols=True)


class Throughput:
    """Training crops per second over the steps since the last pause (validation excluded)."""

    def __init__(self, crops_per_step: int) -> None:
        self.crops_per_step = crops_per_step
        self.steps, self.seconds = 0, 0.0
        self._last = time.perf_counter()

    def step(self) -> None:
        now = time.perf_counter()
        self.steps, self.seconds = self.steps + 1, self.seconds + now - self._last
        self._last = now

    def pause(self) -> None:
        """Call after work that is not training (validation, saving): it is not counted."""
        self._last = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.crops_per_step * self.steps / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------------------------
# Dense models


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
    config may only add modules (e.g. a context branch), not reshape existing ones."""
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
    _check_config(config)
    ddp = Distributed(config.device)
    torch.manual_seed(config.seed)  # initial weights; data order has its own seeds
    num_classes = len(CLASS_NAMES)
    mean_std = IMAGENET_MEAN, IMAGENET_STD
    history = _card_header(config.out)
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
    model = model.to(ddp.device, memory_format=_memory_format(config))
    files = RunFiles(config, ddp.main)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = cosine_schedule(optimizer, config.iterations, config.warmup)
    start, elapsed = files.resume(model, optimizer, scheduler)
    trained = ddp.wrap(model)
    mean = torch.tensor(mean_std[0], device=ddp.device).view(1, 3, 1, 1)
    std = torch.tensor(mean_std[1], device=ddp.device).view(1, 3, 1, 1)
    dataset, val = _train_dataset(config, ddp), _val_samples(config)
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
            record = _card_record(config, family, model.config, iteration, elapsed_now(), metrics)
            card_text = history + _card_note(note) + _card_table(record)
            segmenter = Segmenter(model, list(CLASS_NAMES), *mean_std, CLASS_COLORS, card=card_text)
            save_segmenter(config.out, segmenter)
        ddp.barrier()

    t0 = time.perf_counter()
    bar = _progress(config.iterations, start, ddp.main, f"train dense {family}")
    data = batches(dataset, sampler, config, start)
    throughput = Throughput(config.batch_size * ddp.world)
    for iteration in range(start + 1, _last_iteration(config) + 1):
        images, labels = next(data)
        model.train()
        images = images.to(ddp.device, memory_format=_memory_format(config))
        with _autocast(config, ddp.device):
            logits = dense_logits_full(trained, images, mean, std)
        loss = dense_loss(config.loss, logits, labels.to(ddp.device))
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
        if iteration % config.save_every == 0 or iteration == _last_iteration(config):
            save(iteration)
            throughput.pause()
    bar.close()
    return Path(config.out) if ddp.main else None


# --------------------------------------------------------------------------------------------
# Refiner


@dataclass
class RefinerSettings:
    """The refiner's architecture and the selection it trains with."""

    tau: float = 0.1
    max_fraction: float | None = None  # a budget bounds the cost of a training step
    scale: float = 0.5
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: int = 1
    use_coords: bool = False
    use_probs: bool = False
    patch: int = 1  # full-resolution RGB window read per site
    context: int = 1  # dense-resolution probability window read per site


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
    _check_config(config)
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
        context=settings.context,
    ).to(ddp.device)  # fmt: skip
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    scheduler = cosine_schedule(optimizer, config.iterations, config.warmup)
    start, elapsed = files.resume(model, optimizer, scheduler)
    trained = ddp.wrap(model)
    dataset, val = _train_dataset(config, ddp), _val_samples(config)
    sampler = EpochSampler(len(dataset), config.seed, ddp.rank, ddp.world)

    def elapsed_now() -> float:
        return elapsed + time.perf_counter() - t0

    t0 = time.perf_counter()
    bar = _progress(config.iterations, start, ddp.main, "train refiner")
    data = batches(dataset, sampler, config, start)
    for iteration in range(start + 1, _last_iteration(config) + 1):
        images, labels = next(data)
        step = train_step(segmenter.dense_model, trained, images, labels, optimizer, scheduler)
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
        if iteration % config.save_every == 0 or iteration == _last_iteration(config):
            files.save_state({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "iteration": iteration,
                "elapsed": elapsed_now(),
            })  # fmt: skip
            ddp.barrier()
    bar.close()
    if not ddp.main or _last_iteration(config) < config.iterations:
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
    record = _card_record(
        config, "refiner", model.config, config.iterations, elapsed_now(), summary
    )
    history = segmenter.card or _card_header(config.out)
    segmenter.card = history + _card_note(note) + _card_table(record)
    return save_segmenter(config.out, segmenter)


@dataclass
class CalibrationRule:
    """What calibration optimises: the most accurate setting whose median latency on val keeps
    ``min_speedup`` over the dense model at full resolution, or, with ``latency_budget_ms``,
    stays within that budget. When no setting qualifies, the fastest one is taken."""

    min_speedup: float = 3.0
    latency_budget_ms: float | None = None

    def admits(self, latency_ms: float, full_ms: float) -> bool:
        if self.latency_budget_ms is not None:
            return latency_ms <= self.latency_budget_ms
        return full_ms / latency_ms >= self.min_speedup


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def calibrate(
    dense_model: Callable,
    model: SparseRefine,
    dataset: CityscapesDataset,
    taus: Sequence[float],
    fractions: Sequence[float | None],
    rule: CalibrationRule,
    limit: int,
) -> dict:
    """Score every (tau, budget) setting on val (mIoU, refined share, median latency from
    normalized image to class map) and choose one by ``rule``. The dense model runs once per
    image at the dense scale (timed once, added to every setting) and once at full resolution
    (the reference latency)."""
    settings = [(float(t), f) for t in taus for f in fractions]
    trials = {(t, f): with_overrides(model, tau=t, max_fraction=f) for t, f in settings}
    metrics = {s: SegmentationMetric(model.num_classes) for s in settings}
    selected = {s: 0 for s in settings}
    latency: dict = {s: [] for s in settings}
    full_latency: list[float] = []
    pixels = 0
    device = model.mean.device
    count = min(limit, len(dataset))
    for index in range(count):
        image, label = dataset[index]
        images = image[None].to(device)
        start = time.perf_counter()
        model.run_dense(dense_model, model.normalize(images)).argmax(dim=1)
        full_latency.append(_ms_since(start))
        start = time.perf_counter()
        full, low = model.preprocess(images)
        low_logits = model.run_dense(dense_model, low)
        dense_ms = _ms_since(start)
        pixels += label.numel()
        for setting, trial in trials.items():
            start = time.perf_counter()
            output = trial(full, low_logits)
            classes = class_maps(low_logits, output)[0]
            latency[setting].append(dense_ms + _ms_since(start))
            metrics[setting].update(classes.cpu(), label[None])
            selected[setting] += output.selection.coords.shape[0]
    full_ms = statistics.median(full_latency)
    table = []
    for t, f in settings:
        ms = statistics.median(latency[t, f])
        table.append({"tau": t, "max_fraction": f,
                      "miou": 100.0 * metrics[t, f].compute()["all"].miou,
                      "fraction": selected[t, f] / pixels, "latency_ms": ms,
                      "speedup": full_ms / ms})  # fmt: skip
    admitted = [row for row in table if rule.admits(row["latency_ms"], full_ms)]
    if admitted:  # ties go to the fewer refined pixels
        chosen = max(admitted, key=lambda row: (row["miou"], -row["fraction"]))
    else:
        chosen = min(table, key=lambda row: row["latency_ms"])
    return {**chosen, **asdict(rule), "met_rule": bool(admitted), "full_latency_ms": full_ms,
            "images": count, "table": table}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Model card


def _card_record(
    config: TrainConfig, what: str, model_config: dict, iterations: int, seconds: float,
    metrics: dict,
) -> dict:  # fmt: skip
    return {
        "trained": what,
        "command": shlex.join(["sparserefine", *sys.argv[1:]]),
        "iterations": iterations,
        "wall_time_s": round(seconds, 1),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "config": {k: v for k, v in asdict(config).items() if k not in ("resume", "stop_at")},
        "model_config": model_config,
        "metrics": metrics,
        "torch": torch.__version__,
    }


def _card_header(out: str | Path) -> str:
    return f"# {Path(out).name}\n"


def _card_note(note: str) -> str:
    return f"\n{note}\n" if note else ""


def _card_table(record: dict) -> str:
    lines = [f"\n## Training: {record['trained']}\n", "```sh", record["command"], "```\n"]
    for key, value in record.items():
        if key not in ("trained", "command"):
            lines.append(f"- {key}: `{json.dumps(value) if isinstance(value, dict) else value}`")
    return "\n".join(lines) + "\n"
