"""``sparserefine gpu-check``: the device path checked against the CPU, then timed per model.

For each model (the shipped checkpoints, else a randomly initialised model of each built-in
family, its threshold set to select ``--fraction`` of the pixels):

1. correctness at ``--check-size``: the device's dense and fused logits against the CPU's on
   the CPU's selection (max abs difference), the class maps of the sequential pipeline on the
   device against the CPU's and of the streamed executor against the sequential one (share of
   equal pixels), and each importable sparse backend against the torch backend;
2. timings at ``--size`` on synthetic street scenes (uint8 frame in, class map on the host out):
   full-resolution dense, low-resolution dense, SparseRefine sequential and streamed, in
   frames/s and median latency; streamed also under autocast for each ``--precisions`` entry,
   with its agreement with fp32.

Writes a JSON and a Markdown table. Needs torch, numpy, safetensors and opencv (and
``transformers`` for SegFormer models, which are skipped without it); imports no ROS.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from sparserefine_ros.data.scenes import generate_scene
from sparserefine_ros.method import entropy
from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.method.pipeline import COMPILE_MODES, SparseRefinePipeline
from sparserefine_ros.method.selection import Selection
from sparserefine_ros.method.sparse import available_backends
from sparserefine_ros.method.sparse.cuda_backends import library_status
from sparserefine_ros.method.sparserefine import SparseRefine
from sparserefine_ros.method.streaming import PRECISIONS, StreamedPipeline
from sparserefine_ros.models import (
    build_dense_model,
    checkpoint_names,
    dense_model_names,
    init_model,
)
from sparserefine_ros.models.evaluation import dense_predict
from sparserefine_ros.tools.arguments import parse_size

FULL_SIZE = (2048, 1024)
QUICK_SIZE = (128, 64)
NUM_CLASSES = 19
SCENES = 2  # distinct frames, cycled through the timed runs
COMPILED = "streamed_fp32_compiled"
PROFILED_FRAMES = 6
PROFILE_ROWS = 25
# Random-init dense models the size of the paper's (HRNet-W48, SegFormer-B5), by name in
# ``--models``: on a GPU the shipped CPU-sized models are launch-bound (full and half resolution
# cost about the same), so only a model of this size shows what skipping full resolution saves.
PAPER_SIZED = {
    "hrnet-w48": ("hrnet", {"widths": [48, 96, 192, 384], "blocks": 4, "stem_width": 64,
                            "head_width": 720}),
    "segformer-b5": ("segformer", {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 6, 40, 3],
                                   "num_attention_heads": [1, 2, 5, 8], "sr_ratios": [8, 4, 2, 1],
                                   "decoder_hidden_size": 768}),
}  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gpu-check",
        help="check the CUDA path against the CPU and time each model",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, metavar="OUT", help="results file")
    parser.add_argument("--table", type=Path, help="Markdown table (default: OUT with .md)")
    parser.add_argument(
        "--size", type=parse_size, help="WxH timed (default 2048x1024; quick 128x64)"
    )
    parser.add_argument(
        "--check-size",
        type=parse_size,
        help="WxH of the CPU comparison (default: --size, at most 1024x512)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        help="checkpoint names/paths, family names or "
        f"{'/'.join(PAPER_SIZED)} (random init; default: shipped checkpoints)",
    )
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--frames", type=int, help="timed frames per run (default 30; quick 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames before each run")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=[p for p in PRECISIONS if p != "fp32"],
        help="autocast runs of the streamed executor (default: bf16 fp16 on cuda, bf16 on cpu)",
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=2, help="batches in flight in the streamed runs"
    )
    parser.add_argument(
        "--fraction", type=float, default=0.05, help="selected share for random-init models"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time streamed with torch.compile'd dense model"
    )
    parser.add_argument(
        "--compile-mode",
        default="default",
        choices=[m for m in COMPILE_MODES if m != "none"],
        help="torch.compile mode (reduce-overhead replays the dense model as a CUDA graph)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="TXT",
        help="also profile a few sequential and streamed frames per model (torch.profiler), "
        "busiest operators by host and by device time",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: torch's; quick: 1, steady on a busy host)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, few frames, one thread (CI)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random images and weights")


def main(argv: list[str] | None = None) -> int:
    """Entry point without the ``sparserefine`` CLI (``python -m ...gpu_check``)."""
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size or (QUICK_SIZE if args.quick else FULL_SIZE)
    check_size = args.check_size or (min(size[0], 1024), min(size[1], 512))
    frames = args.frames or (2 if args.quick else 30)
    warmup = 1 if args.quick else args.warmup
    precisions = args.precisions or (["bf16", "fp16"] if device.type == "cuda" else ["bf16"])
    threads = args.threads or (1 if args.quick else None)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    report = {
        "environment": _environment(device),
        "settings": {
            "size": list(size),
            "check_size": list(check_size),
            "frames": frames,
            "warmup": warmup,
            "precisions": precisions,
            "max_in_flight": args.max_in_flight,
            "compile": args.compile and args.compile_mode,
            "quick": args.quick,
        },
        "models": [],
    }
    timed = _scenes(size, args.seed)
    checked = _scenes(check_size, args.seed)
    for name, load in _models(args.models, timed, args.fraction):
        print(f"{name}: loading", flush=True)
        try:
            entry, pipeline = load()
        except (ImportError, CheckpointError) as error:
            report["models"].append({"name": name, "skipped": f"{type(error).__name__}: {error}"})
            print(f"{name}: skipped: {error}", flush=True)
            continue
        entry = {"name": name, **entry}
        device_pipeline = SparseRefinePipeline(
            copy.deepcopy(pipeline.dense_model), copy.deepcopy(pipeline.model), device
        )
        report["models"].append(entry)
        try:
            print(
                f"{name}: checking against the CPU at {check_size[0]}x{check_size[1]}", flush=True
            )
            entry["correctness"] = _correctness(
                pipeline, device_pipeline, checked, args.max_in_flight
            )
            print(f"{name}: timing at {size[0]}x{size[1]}", flush=True)
            entry["timings"] = _timings(device_pipeline, timed, frames, warmup, precisions, args)
            if args.profile:
                _profile(name, device_pipeline, timed, args)
        except Exception as error:  # one GPU run reports every model it can
            entry["error"] = traceback.format_exc()
            print(f"{name}: failed: {error!r}\n{entry['error']}", flush=True)
        _write(report, args, started)
    table = _write(report, args, started)
    print(table)
    return 1 if any("error" in entry for entry in report["models"]) else 0


def _write(report: dict, args: argparse.Namespace, started: float) -> str:
    """Write the JSON and table as they stand: a run cut short by its time limit keeps the
    models it finished (a GPU lease is minutes long)."""
    report["elapsed_s"] = time.perf_counter() - started
    table = _table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    (args.table or args.json.with_suffix(".md")).write_text(table + "\n")
    return table


def _environment(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "cpu_threads": torch.get_num_threads(),
        "sparse_backends": available_backends(),
        "sparse_libraries": library_status(),
    }


def _scenes(size: tuple[int, int], seed: int) -> list[torch.Tensor]:
    """Synthetic street scenes as (1, 3, H, W) uint8, laid out as a camera driver delivers them."""
    return [
        torch.from_numpy(generate_scene(seed + i, size=size).image).permute(2, 0, 1)[None]
        for i in range(SCENES)
    ]


def _models(
    names: list[str] | None, calibration: list[torch.Tensor], fraction: float
) -> list[tuple[str, Callable[[], tuple[dict, SparseRefinePipeline]]]]:
    """(name, loader) per model; a loader gives the JSON entry to fill and a CPU pipeline."""

    def checkpoint(name: str):
        return lambda: ({"source": "checkpoint"}, init_model(name, "cpu"))

    def random_init(family: str, config: dict | None = None):
        def load():
            return {
                "source": "random-init",
                "note": f"no trained checkpoint: random weights, tau selects {fraction:.0%}",
                **({"config": config} if config else {}),
            }, _random_pipeline(family, calibration, fraction, config or {})

        return load

    try:
        families = dense_model_names()
    except ImportError as error:  # a family's library (transformers) is missing: list none
        print(f"built-in model families unavailable: {error}", flush=True)
        families = []
    if names is None:
        names = checkpoint_names()
        if not names:
            return [(family, random_init(family)) for family in families]
    shipped = set(checkpoint_names())
    loaders = []
    for name in names:
        if name in PAPER_SIZED:
            loaders.append((name, random_init(*PAPER_SIZED[name])))
        elif name in families and name not in shipped:
            loaders.append((name, random_init(name)))
        else:
            loaders.append((name, checkpoint(name)))
    return loaders


def _random_pipeline(
    family: str, calibration: list[torch.Tensor], fraction: float, config: dict
) -> SparseRefinePipeline:
    """Family ``family`` with random weights; ``tau`` selects ``fraction`` of the pixels of the
    ``calibration`` images (the timed ones), as a trained model's calibration would."""
    dense = build_dense_model(family, NUM_CLASSES, **config).eval()
    refiner = SparseRefine(NUM_CLASSES)
    with torch.inference_mode():
        values = torch.cat(
            [
                entropy(refiner.run_dense(dense, refiner.preprocess(x)[1])).flatten()
                for x in calibration
            ]
        )
    refiner.tau = float(torch.quantile(values, 1.0 - fraction))
    return SparseRefinePipeline(dense, refiner, "cpu")


@torch.inference_mode()
def _correctness(
    cpu: SparseRefinePipeline,
    device: SparseRefinePipeline,
    scenes: list[torch.Tensor],
    max_in_flight: int,
) -> dict:
    images = torch.cat(scenes)  # one batch: more selected pixels to compare
    model_cpu, model_dev = cpu.model, device.model
    full_cpu, low_cpu = model_cpu.preprocess(images)
    logits_cpu = model_cpu.run_dense(cpu.dense_model, low_cpu)
    full_dev, low_dev = model_dev.preprocess(images.to(device.device))
    logits_dev = model_dev.run_dense(device.dense_model, low_dev)
    # Refine both on the CPU's selection, so the logits compare pixel for pixel.
    selection = model_cpu.select(logits_cpu, full_cpu.shape[-2:])
    fused_cpu = model_cpu.ensembler(*model_cpu.refine(full_cpu, logits_cpu, selection))[0]
    moved = selection.to(device.device)
    fused_dev = model_dev.ensembler(*model_dev.refine(full_dev, logits_dev, moved))[0]
    result_cpu = cpu(images)
    result_dev = device(images)
    streamed = list(StreamedPipeline(device, max_in_flight).run_stream(scenes))
    sequential = [device(s) for s in scenes]
    return {
        "dense_logits_max_abs_diff": _max_diff(logits_dev, logits_cpu),
        "fused_logits_max_abs_diff": _max_diff(fused_dev, fused_cpu),
        "selected_pixels": int(selection.coords.shape[0]),
        "classes_agreement_vs_cpu": _agreement(result_dev.classes, result_cpu.classes),
        "refine_mask_agreement_vs_cpu": _agreement(result_dev.refine_mask, result_cpu.refine_mask),
        "streamed_equals_sequential": all(
            torch.equal(s.classes, q.classes) for s, q in zip(streamed, sequential, strict=True)
        ),
        "streamed_classes_agreement": _agreement(
            torch.cat([s.classes for s in streamed]), torch.cat([q.classes for q in sequential])
        ),
        "sparse_backends": _backends(model_dev, full_dev, logits_dev, moved, fused_dev),
    }


def _backends(
    model: SparseRefine,
    full: torch.Tensor,
    low_logits: torch.Tensor,
    selection: Selection,
    reference: torch.Tensor,
) -> dict:
    """Each registered non-reference backend's fused logits against the torch backend's."""
    results = {}
    for name in available_backends():
        if name == model.refiner.backend:
            continue
        other = SparseRefine.from_config({**model.config, "backend": name})
        other.load_state_dict(model.state_dict())
        other = other.to(full.device).eval()
        fused = other.ensembler(*other.refine(full, low_logits, selection))[0]
        results[name] = {
            "fused_logits_max_abs_diff": _max_diff(fused, reference),
            "classes_agreement": _agreement(fused.argmax(1), reference.argmax(1)),
        }
    return results


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max()) if a.numel() else 0.0


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.cpu() == b.cpu()).float().mean()) if a.numel() else 1.0


def _timings(
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
        "dense_gflops_full_res": _dense_gflops(model, dense, scenes[0].to(device)),
        "dense_full_res": _time_calls(partial(dense_alone, full_resolution=True), batches, warm),
        "dense_low_res": _time_calls(partial(dense_alone, full_resolution=False), batches, warm),
        "sequential": _time_calls(sequential, batches, warm),
    }
    # Each stage synchronised (StageTimer): where a sequential frame's time goes.
    timings["sequential"]["stage_ms"] = {
        stage: statistics.median(s[stage] for s in stages[warmup:]) for stage in stages[-1]
    }
    variants = [(f"streamed_{p}", pipeline, p) for p in ["fp32", *precisions]]
    if args.compile:
        compiled = SparseRefinePipeline(dense, model, device, compile_mode=args.compile_mode)
        variants.append((COMPILED, compiled, "fp32"))
    reference = None
    for key, runner, precision in variants:
        streamed = StreamedPipeline(runner, args.max_in_flight, precision)
        try:
            entry, results = _time_stream(streamed, batches, warm)
        except Exception as error:  # a variant this machine cannot run
            if reference is None:
                raise
            timings[key] = {"error": f"{type(error).__name__}: {error}"}
            continue
        if reference is None:
            reference = results
        else:
            entry["classes_agreement_vs_fp32"] = _agreement(
                torch.cat(results), torch.cat(reference)
            )
        timings[key] = entry
    timings["selected_fraction"] = statistics.mean(selected)
    return timings


@torch.inference_mode()
def _dense_gflops(model: SparseRefine, dense: Callable, images: torch.Tensor) -> float:
    """Floating-point operations (multiply-adds count 2) of one dense pass at full resolution."""
    full, _ = model.preprocess(images)
    with FlopCounterMode(display=False) as counter:
        dense(full)
    return counter.get_total_flops() / 1e9


def _profile(
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


def _time_calls(fn: Callable, batches: list[torch.Tensor], warm: list[torch.Tensor]) -> dict:
    """Synchronous calls (each returns host results): frames/s and median latency."""
    for images in warm:
        fn(images)
    latencies = []
    started = time.perf_counter()
    for images in batches:
        start = time.perf_counter()
        fn(images)
        latencies.append(time.perf_counter() - start)
    return _rates(len(batches), time.perf_counter() - started, latencies)


def _time_stream(
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
    rates = {**_rates(len(batches), time.perf_counter() - started, latencies), "warmup_s": warmup_s}
    return rates, [result.classes.clone() for result in streamed.run_stream(batches)]


def _rates(count: int, elapsed: float, latencies: list[float]) -> dict:
    return {
        "frames_per_s": count / elapsed,
        "latency_ms": statistics.median(latencies) * 1e3,
    }


def _table(report: dict) -> str:
    env, settings = report["environment"], report["settings"]
    width, height = settings["size"]
    variants = [f"streamed_{p}" for p in settings["precisions"]]
    variants += [COMPILED] if settings["compile"] else []
    head = [
        "model", "dense GFLOPs", "full-res dense", "low-res dense", "SparseRefine sequential",
        "SparseRefine streamed", *(f"{v.replace('_', ' ')} (agree)" for v in variants),
        "selected", "vs CPU (classes)", "streamed = sequential",
    ]  # fmt: skip
    lines = [
        f"{env['device_name'] or env['device']} ({env['device']}), torch {env['torch']}, "
        f"CUDA {env['cuda']}, {width}x{height}, {settings['frames']} frames; "
        "cells: frames/s, median latency ms",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for entry in report["models"]:
        if "skipped" in entry or "error" in entry or "timings" not in entry:
            why = entry.get("skipped") or _last_line(entry.get("error", "")) or "not finished"
            lines.append(f"| {entry['name']} | {why} |")
            continue
        t, c = entry["timings"], entry["correctness"]
        name = entry["name"] + (" (random init)" if entry["source"] == "random-init" else "")
        cells = [
            name,
            f"{t['dense_gflops_full_res']:.3g}",
            _cell(t["dense_full_res"]),
            _cell(t["dense_low_res"]),
            _cell(t["sequential"]),
            _cell(t["streamed_fp32"]),
            *(_cell(t[v], agreement=True) for v in variants),
            f"{t['selected_fraction']:.1%}",
            f"{c['classes_agreement_vs_cpu']:.2%}",
            "yes" if c["streamed_equals_sequential"] else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def _cell(entry: dict, agreement: bool = False) -> str:
    if "error" in entry:
        return f"failed: {entry['error'][:80]}"
    cell = f"{entry['frames_per_s']:.1f} / {entry['latency_ms']:.1f}"
    return f"{cell} ({entry['classes_agreement_vs_fp32']:.2%})" if agreement else cell


if __name__ == "__main__":
    sys.exit(main())
