"""Wall time per stage of a pipeline call (on CUDA, synchronised around each stage)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    """Wall time in ms per named stage (summed if a stage is entered twice).

    On CUDA it synchronises around each stage, otherwise asynchronous kernels would be charged
    to whichever later stage happens to wait for them.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.ms: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3
