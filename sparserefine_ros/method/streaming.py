"""Streamed inference: frame t's sparse refinement overlaps frame t+1's dense pass on a GPU.

On CUDA the dense stage (host-to-device copy from pinned memory, preprocessing, dense model) runs
on one stream and the sparse stage (selection, refinement, fusion, device-to-host copies) on
another; an event orders each frame's two stages, so the GPU can run frame t+1's dense model
while frame t is refined. A frame's sparse stage is launched when the next frame has been
submitted (after that frame's dense pass is queued) or when its result is asked for, whichever
comes first. Selection needs the host (``nonzero`` has a data-dependent size), which is why the
dense pass of the next frame must already be queued by then.

On the CPU the same API runs the same stages one after the other. Either way the stages are
``SparseRefine``'s own and the results equal ``SparseRefinePipeline.__call__``'s at ``fp32``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import nullcontext

import torch

from .pipeline import SegmentationResult, SparseRefinePipeline
from .timing import EventTimer, StageTimer, stage_timer

# Autocast dtype per precision; None runs in float32 as the sequential pipeline does.
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


class StreamedResult:
    """Handle of a submitted batch; ``result()`` waits for it (and for earlier batches)."""

    def __init__(self, executor: StreamedPipeline, timer: StageTimer | EventTimer) -> None:
        self._executor = executor
        self._timer = timer
        self._dense: tuple[torch.Tensor, torch.Tensor] | None = None  # full images, low logits
        self._dense_done: torch.cuda.Event | None = None
        self._dense_size: tuple[int, int] = (0, 0)
        self._host: dict[str, torch.Tensor] | None = None  # outputs, copied or being copied
        self._done: torch.cuda.Event | None = None
        self._result: SegmentationResult | None = None
        self._error: Exception | None = None

    def _launched(self) -> bool:
        """Whether the sparse stage has been queued (or has finished, or the batch failed)."""
        return self._host is not None or self._result is not None or self._error is not None

    def result(self) -> SegmentationResult:
        """The batch's segmentation; raises what its inference raised (e.g. a bad input)."""
        while self._result is None and self._error is None:
            self._executor._complete_oldest()
        if self._error is not None:
            raise self._error
        return self._result


class StreamedPipeline:
    """Runs a ``SparseRefinePipeline`` with up to ``max_in_flight`` batches on the device.

    ``submit(images)`` queues a batch and returns a ``StreamedResult``; ``run_stream(batches)``
    yields results in order. A ROS worker submits frame t+1, then publishes frame t's result.
    When ``max_in_flight`` batches are pending, ``submit`` first finishes the oldest, so device
    memory stays bounded whether or not results are collected. ``precision`` runs the dense model
    under autocast (``"fp16"``/``"bf16"``); selection sees float32 logits and the refiner runs
    in float32 (on a few percent of the pixels its matrix products are small and launch-bound:
    autocasting them too was no faster on an H200, docs/gpu.md).
    Results of a CUDA pipeline live in pinned host memory. Use from one thread.
    """

    def __init__(
        self, pipeline: SparseRefinePipeline, max_in_flight: int = 2, precision: str = "fp32"
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
        self.pipeline = pipeline
        self.max_in_flight = int(max_in_flight)
        self.precision = precision
        self.device = pipeline.device
        cuda = self.device.type == "cuda"
        self._dense_stream = torch.cuda.Stream(self.device) if cuda else None
        # Higher priority (lower number) for the older batch's refinement, so overlapping with
        # the next dense pass fills idle SMs instead of delaying the batch that is due first.
        self._sparse_stream = torch.cuda.Stream(self.device, priority=-1) if cuda else None
        self._in_flight: deque[StreamedResult] = deque()

    def submit(self, images: torch.Tensor) -> StreamedResult:
        """Queue uint8 RGB images (B, 3, H, W) (on the CPU or the pipeline's device)."""
        while len(self._in_flight) >= self.max_in_flight:
            self._complete_oldest()
        handle = StreamedResult(self, stage_timer(self.device))
        try:
            self._run_dense(handle, images)
        except Exception as error:  # the batch's own failure, raised by its result()
            handle._error = error
            return handle
        # The new batch's dense pass is queued: refining the previous one now overlaps it.
        for pending in self._in_flight:
            if not pending._launched():
                self._launch_sparse(pending)
        self._in_flight.append(handle)
        return handle

    def run_stream(self, batches: Iterable[torch.Tensor]) -> Iterator[SegmentationResult]:
        """Results of ``batches`` in order, keeping up to ``max_in_flight`` of them queued."""
        pending: deque[StreamedResult] = deque()
        for images in batches:
            pending.append(self.submit(images))
            if len(pending) >= self.max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @staticmethod
    def _on(stream: torch.cuda.Stream | None):
        return nullcontext() if stream is None else torch.cuda.stream(stream)

    @torch.inference_mode()
    def _run_dense(self, handle: StreamedResult, images: torch.Tensor) -> None:
        model, timer, stream = self.pipeline.model, handle._timer, self._dense_stream
        with self._on(stream), timer("total"):
            if stream is not None and images.device.type == "cpu":
                # From pinned memory the copy is asynchronous: the host goes on queueing.
                images = images.pin_memory()
            images = images.to(self.device, non_blocking=True)
            with timer("preprocess"):
                full, low = model.preprocess(images)
            with timer("dense"), self._autocast():
                low_logits = model.run_dense(self.pipeline.dense_model, low)
        handle._dense = full, low_logits
        handle._dense_size = tuple(low.shape[-2:])
        if stream is not None:
            handle._dense_done = torch.cuda.Event()
            handle._dense_done.record(stream)

    @torch.inference_mode()
    def _launch_sparse(self, handle: StreamedResult) -> None:
        full, low_logits = handle._dense
        handle._dense = None
        timer, stream = handle._timer, self._sparse_stream
        try:
            with self._on(stream):
                if stream is not None:
                    stream.wait_event(handle._dense_done)
                    # Made on the dense stream, used here: keep the allocator from reusing them
                    # for the dense stream's next batch before this stream is done with them.
                    full.record_stream(stream)
                    low_logits.record_stream(stream)
                with timer("total"):
                    classes, dense_classes, selection = self.pipeline.sparse_stage(
                        full, low_logits, timer
                    )
                    # Non-blocking device-to-host copies land in pinned memory; a no-op on the CPU.
                    handle._host = {
                        "classes": classes.to("cpu", non_blocking=True),
                        "dense_classes": dense_classes.to("cpu", non_blocking=True),
                        "selection": selection.to("cpu", non_blocking=True),
                    }
            if stream is not None:
                handle._done = torch.cuda.Event()
                handle._done.record(stream)
        except Exception as error:  # the batch's own failure, raised by its result()
            handle._error = error

    def _complete_oldest(self) -> None:
        """Finish the oldest pending batch: queue its sparse stage if needed, wait, collect."""
        handle = self._in_flight.popleft()
        if not handle._launched():
            self._launch_sparse(handle)
        if handle._error is not None:
            return
        if handle._done is not None:
            handle._done.synchronize()
        host, ms = handle._host, handle._timer.ms
        for stage in ("select", "refine", "fuse"):  # refine is skipped when nothing is selected
            ms.setdefault(stage, 0.0)
        handle._result = SegmentationResult(
            classes=host["classes"],
            dense_classes=host["dense_classes"],
            selection=host["selection"],
            dense_size=handle._dense_size,
            timings_ms=ms,
        )
        handle._host = None
