"""Timings per model: dense at full and low resolution, SparseRefine sequential and streamed
(each precision, optionally compiled), GFLOPs, and an optional profile."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from sparserefine_ros.method.pipeline import SparseRefinePipeline
from sparserefine_ros.method.sparserefine import SparseRefine
from sparserefine_ros.method.streaming import StreamedPipeline
from sparserefine_ros.models.evaluation import dense_predict

from .correctness import agreement_share

COMPILED = "streamed_fp32_compiled"


PROFILED_FRAMES = 6


PROFILE_ROWS = 25


def time_model(
    pipeline: SparseRefinePipeline,
    scenes: list[torch.Tensor],
    frames: int,
    warmup: int,
    precisions: list[str],
    args: argparse.Namespace,
) -> dict:
    batches = [scenes[i % len(scenes)] for i in range(frames)]
    warm = [scenes[i % len(scenes)] for i in range(warmup)]
    model, dense, device = pipeline.model, pipeline.dense_model, pipeline.device
    stages: list[dict[str, float]] = []
    selected: list[float] = []

    def sequential(images: torch.Tensor) -> None:
        result = pipeline(images)
        stages.append(result.timings_ms)
        selected.append(sum(result.num_selected) / result.classes.numel())

    dense_alone = partial(dense_predict, pipeline)  # uint8 in, class map on the host out
    timings = {
        "dense_gflops_full_res": dense_gflops(model, dense, scenes[0].to(device)),
        "dense_full_res": time_calls(partial(dense_alone, full_resolution=True), batches, warm),
        "dense_low_res": time_calls(partial(dense_alone, full_resolution=False), batches, warm),
        "sequential": time_calls(sequential, batches, warm),
    }
    # Where a sequential frame's time goes (CUDA events per stage on a GPU, wall time on a CPU).
    timings["sequential"]["stage_ms"] = {
        stage: statistics.median(s[stage] for s in stages[warmup:]) for stage in stages[-1]
    }
    variants = [(f"streamed_{p}", pipeline, p) for p in ["fp32", *precisions]]
    if args.compile:
        compiled = SparseRefinePipeline(
            dense, model, device, compile_mode=args.compile_mode, fixed_stage=args.fixed_stage
        )
        variants.append((COMPILED, compiled, "fp32"))
    reference = None
    for key, runner, precision in variants:
        streamed = StreamedPipeline(runner, args.max_in_flight, precision)
        try:
            entry, results = time_stream(streamed, batches, warm)
        except Exception as error:  # a variant this machine cannot run
            if reference is None:
                raise
            timings[key] = {"error": f"{type(error).__name__}: {error}"}
            continue
        if reference is None:
            reference = results
        else:
            entry["classes_agreement_vs_fp32"] = agreement_share(
                torch.cat(results), torch.cat(reference)
            )
        timings[key] = entry
    timings["selected_fraction"] = statistics.mean(selected)
    return timings


def time_cameras(
    pipeline: SparseRefinePipeline,
    scenes: list[torch.Tensor],
    cameras: list[int],
    frames: int,
    warmup: int,
    max_in_flight: int,
) -> dict[str, dict]:
    """Several cameras of one size served as one batch (``cameras`` = images per batch): per
    camera frames/s and batch latency of the dense passes and of SparseRefine, sequential and
    streamed (fp32). Each batch holds different scenes, so the selections differ per image."""
    results = {}
    dense_alone = partial(dense_predict, pipeline)
    for count in cameras:
        stacked = [
            torch.cat([scenes[(i + k) % len(scenes)] for k in range(count)])
            for i in range(len(scenes))
        ]
        batches = [stacked[i % len(stacked)] for i in range(frames)]
        warm = [stacked[i % len(stacked)] for i in range(warmup)]
        entry = {
            "dense_full_res": time_calls(partial(dense_alone, full_resolution=True), batches, warm),
            "dense_low_res": time_calls(partial(dense_alone, full_resolution=False), batches, warm),
            "sequential": time_calls(pipeline, batches, warm),
            "streamed_fp32": time_stream(StreamedPipeline(pipeline, max_in_flight), batches, warm)[
                0
            ],
        }
        for timing in entry.values():
            timing["camera_frames_per_s"] = timing["frames_per_s"] * count
        results[str(count)] = entry
    return results


@torch.inference_mode()
def dense_gflops(model: SparseRefine, dense: Callable, images: torch.Tensor) -> float:
    """Floating-point operations (multiply-adds count 2) of one dense pass at full resolution."""
    with FlopCounterMode(display=False) as counter:
        dense(model.normalize(images))
    return counter.get_total_flops() / 1e9


def profile_stages(
    name: str, pipeline: SparseRefinePipeline, scenes: list[torch.Tensor], args: argparse.Namespace
) -> None:
    """Append the busiest operators of a few sequential and streamed frames to ``--profile``."""
    activities = [ProfilerActivity.CPU]
    if pipeline.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    frames = [scenes[i % len(scenes)] for i in range(PROFILED_FRAMES)]
    streamed = StreamedPipeline(pipeline, args.max_in_flight)
    runs = {
        "sequential": lambda: [pipeline(f) for f in frames],
        "streamed fp32": lambda: list(streamed.run_stream(frames)),
    }
    args.profile.parent.mkdir(parents=True, exist_ok=True)
    for run_name, run_frames in runs.items():
        run_frames()  # warm-up
        with profile(activities=activities) as prof:
            run_frames()
        averages = prof.key_averages()
        with args.profile.open("a") as out:
            for sort in ["self_cpu_time_total", "self_device_time_total"][: len(activities)]:
                out.write(f"== {name}, {run_name}, {len(frames)} frames, by {sort}\n")
                out.write(averages.table(sort_by=sort, row_limit=PROFILE_ROWS) + "\n")


def time_calls(fn: Callable, batches: list[torch.Tensor], warm: list[torch.Tensor]) -> dict:
    """Synchronous calls (each returns host results): frames/s and median latency."""
    for images in warm:
        fn(images)
    latencies = []
    started = time.perf_counter()
    for images in batches:
        start = time.perf_counter()
        fn(images)
        latencies.append(time.perf_counter() - start)
    return rate_summary(len(batches), time.perf_counter() - started, latencies)


def time_stream(
    streamed: StreamedPipeline, batches: list[torch.Tensor], warm: list[torch.Tensor]
) -> tuple[dict, list[torch.Tensor]]:
    """Frames/s and median latency (handing the frame in to getting its result) of a stream,
    and the class maps of an untimed second pass.

    The timed pass drops each result once it has it, as the node does after publishing: results
    held on to keep their pinned buffers, and each new frame would pin fresh host memory.
    ``warmup_s`` is the untimed warm-up's duration: for a compiled model, mostly compilation.
    """
    started = time.perf_counter()
    list(streamed.run_stream(warm))
    warmup_s = time.perf_counter() - started
    pulled = []

    def stamped(items: Iterable[torch.Tensor]):
        for images in items:
            pulled.append(time.perf_counter())
            yield images

    latencies = []
    started = time.perf_counter()
    for index, _ in enumerate(streamed.run_stream(stamped(batches))):
        latencies.append(time.perf_counter() - pulled[index])
    rates = {
        **rate_summary(len(batches), time.perf_counter() - started, latencies),
        "warmup_s": warmup_s,
    }
    return rates, [result.classes.clone() for result in streamed.run_stream(batches)]


def rate_summary(count: int, elapsed: float, latencies: list[float]) -> dict:
    return {
        "frames_per_s": count / elapsed,
        "latency_ms": statistics.median(latencies) * 1e3,
    }
