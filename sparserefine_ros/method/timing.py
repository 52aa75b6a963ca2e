"""Time per stage of a pipeline call: wall time, or CUDA events that never stall the device."""

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


class EventTimer:
    """``StageTimer``'s interface on CUDA without synchronisation: events recorded on the
    current stream, read when ``ms`` is asked for (waiting for the last of them). Each value is
    the span of a stage on its stream's timeline; a synchronisation per stage would stall the
    host's launches and serialise streams."""

    def __init__(self) -> None:
        self._spans: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self._spans.append((stage, start, end))

    @property
    def ms(self) -> dict[str, float]:
        ms: dict[str, float] = {}
        for stage, start, end in self._spans:
            end.synchronize()
            ms[stage] = ms.get(stage, 0.0) + start.elapsed_time(end)
        return ms


def stage_timer(device: torch.device) -> StageTimer | EventTimer:
    """The stage timer of one pipeline call: CUDA events on a GPU, wall time elsewhere."""
    return EventTimer() if torch.device(device).type == "cuda" else StageTimer(device)
