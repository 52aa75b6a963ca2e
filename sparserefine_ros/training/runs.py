"""What both training loops share: the config, DDP plumbing, resumable data order, run files.

Data order and augmentation depend only on the seed, the epoch and the sample index, so a
resumed run sees the batches an uninterrupted one would have seen. Under ``torchrun`` every rank
trains on its own shard of each epoch and gradients are averaged (gloo on CPU, NCCL on GPU);
rank 0 alone validates, logs and writes files.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from sparserefine_ros.data.cache import DecodedSplit, TrainingSet
from sparserefine_ros.data.cityscapes import CityscapesDataset
from sparserefine_ros.data.transforms import TrainTransform

from .losses import DENSE_LOSSES

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
    teacher: str | None = None  # dense models only: a checkpoint whose logits are soft targets
    distill: float = 0.0  # weight of the teacher's targets against the labels' 1 - distill
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
    dataset: Dataset, sampler: EpochSampler, config: TrainConfig, start: int
) -> Iterator[tuple]:
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


def train_split(ddp: Distributed, data: str) -> DecodedSplit:
    """The train split decoded once (rank 0 builds the cache, the others wait and map it)."""
    if ddp.main:
        DecodedSplit(data, "train")
    ddp.barrier()
    split = DecodedSplit(data, "train")
    if not len(split):
        raise FileNotFoundError(f"no training images in {data}/leftImg8bit/train")
    return split


def train_dataset(config: TrainConfig, ddp: Distributed) -> TrainingSet:
    """Scaled, optionally class-aware crops of the train split (the dense models' data)."""
    split = train_split(ddp, config.data)
    transform = TrainTransform(tuple(config.crop), tuple(config.scale_range))
    return TrainingSet(split, transform, seed=config.seed, class_aware=config.class_aware)


def check_config(config: TrainConfig) -> None:
    if not 0.0 <= config.distill <= 1.0 or (config.distill > 0.0) != (config.teacher is not None):
        raise ValueError(
            f"distill must be in [0, 1] and > 0 exactly with a teacher: {config.distill}"
        )
    if config.loss not in DENSE_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(DENSE_LOSSES)}, got {config.loss!r}")
    if config.precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}"
        )


PRECISIONS = ("fp32", "bf16")


def autocast(config: TrainConfig, device: torch.device):
    return torch.autocast(device.type, torch.bfloat16, enabled=config.precision == "bf16")


def memory_format(config: TrainConfig) -> torch.memory_format:
    # bf16 convolutions reach AMX/oneDNN's fast kernels in channels-last (1.35x a step here)
    return torch.channels_last if config.precision == "bf16" else torch.contiguous_format


def val_samples(config: TrainConfig) -> CityscapesDataset | None:
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


def last_iteration(config: TrainConfig) -> int:
    return config.iterations if config.stop_at is None else min(config.stop_at, config.iterations)


def progress(total: int, start: int, main: bool, desc: str) -> tqdm:
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
