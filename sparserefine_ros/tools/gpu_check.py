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
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.nn import functional as F

from sparserefine_ros.data.scenes import generate_scene
from sparserefine_ros.method import entropy
from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.method.pipeline import Selection, SparseRefine, SparseRefinePipeline
from sparserefine_ros.method.sparse import available_backends
from sparserefine_ros.method.sparse.cuda_backends import library_status
from sparserefine_ros.method.streaming import PRECISIONS, StreamedPipeline
from sparserefine_ros.models import (
    build_dense_model,
    checkpoint_names,
    dense_model_names,
    init_model,
)
from sparserefine_ros.tools.dataset import parse_size

FULL_SIZE = (2048, 1024)
QUICK_SIZE = (128, 64)
NUM_CLASSES = 19
SCENES = 2  # distinct frames, cycled through the timed runs
COMPILED = "streamed_fp32_compiled"


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
        "--models", nargs="+", help="checkpoint names/paths or family names (default: shipped)"
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
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument(
        "--fraction", type=float, default=0.05, help="selected share for random-init models"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time streamed with torch.compile'd dense model"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: torch's; quick: 1, steady on a busy host)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, few frames, one thread (CI)"
    )
    parser.add_argument("--seed", type=int, default=0)


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
            "compile": args.compile,
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
        print(f"{name}: checking against the CPU at {check_size[0]}x{check_size[1]}", flush=True)
        entry["correctness"] = _correctness(pipeline, device_pipeline, checked, args.max_in_flight)
        print(f"{name}: timing at {size[0]}x{size[1]}", flush=True)
        entry["timings"] = _timings(device_pipeline, timed, frames, warmup, precisions, args)
        report["models"].append(entry)
    report["elapsed_s"] = time.perf_counter() - started
    table = _table(report)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    table_path = args.table or args.json.with_suffix(".md")
    table_path.write_text(table + "\n")
    return 0


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

    def random_init(family: str):
        def load():
            return {
                "source": "random-init",
                "note": f"no trained checkpoint: random weights, tau selects {fraction:.0%}",
            }, _random_pipeline(family, calibration, fraction)

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
    return [
        (name, random_init(name) if name in families and name not in shipped else checkpoint(name))
        for name in names
    ]


def _random_pipeline(
    family: str, calibration: list[torch.Tensor], fraction: float
) -> SparseRefinePipeline:
    """Family ``family`` with random weights; ``tau`` selects ``fraction`` of the pixels of the
    ``calibration`` images (the timed ones), as a trained model's calibration would."""
    dense = build_dense_model(family, NUM_CLASSES).eval()
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
    timings = {
        "dense_full_res": _time_calls(_dense_only(model, dense, device, False), batches, warm),
        "dense_low_res": _time_calls(_dense_only(model, dense, device, True), batches, warm),
        "sequential": _time_calls(pipeline, batches, warm),
    }
    variants = [(f"streamed_{p}", pipeline, p) for p in ["fp32", *precisions]]
    if args.compile:
        compiled = SparseRefinePipeline(torch.compile(dense), model, device)
        variants.append((COMPILED, compiled, "fp32"))
    reference = None
    for key, runner, precision in variants:
        streamed = StreamedPipeline(runner, args.max_in_flight, precision)
        entry, results = _time_stream(streamed, batches, warm)
        if reference is None:
            reference = results
        else:
            entry["classes_agreement_vs_fp32"] = _agreement(
                torch.cat([r.classes for r in results]), torch.cat([r.classes for r in reference])
            )
        timings[key] = entry
    timings["selected_fraction"] = statistics.mean(
        sum(r.num_selected) / r.classes.numel() for r in reference
    )
    return timings


def _dense_only(
    model: SparseRefine, dense: Callable, device: torch.device, low_res: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The dense model alone on a uint8 frame, class map on the host: at the refiner's scale
    (nearest upsampling, as SparseRefine does) or at full resolution (bilinear logits)."""

    @torch.inference_mode()
    def segment(images: torch.Tensor) -> torch.Tensor:
        full, low = model.preprocess(images.to(device))
        if not low_res:
            return model.run_dense(dense, full).argmax(1).cpu()
        classes = model.run_dense(dense, low).argmax(1, keepdim=True).float()
        return F.interpolate(classes, full.shape[-2:], mode="nearest")[:, 0].long().cpu()

    return segment


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
) -> tuple[dict, list]:
    """Frames/s and median latency (handing the frame in to getting its result) of a stream."""
    list(streamed.run_stream(warm))
    pulled = []

    def stamped(items: Iterable[torch.Tensor]):
        for images in items:
            pulled.append(time.perf_counter())
            yield images

    results, latencies = [], []
    started = time.perf_counter()
    for index, result in enumerate(streamed.run_stream(stamped(batches))):
        latencies.append(time.perf_counter() - pulled[index])
        results.append(result)
    return _rates(len(batches), time.perf_counter() - started, latencies), results


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
        "model", "full-res dense", "low-res dense", "SparseRefine sequential",
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
        if "skipped" in entry:
            lines.append(f"| {entry['name']} | skipped: {entry['skipped']} |")
            continue
        t, c = entry["timings"], entry["correctness"]
        name = entry["name"] + (" (random init)" if entry["source"] == "random-init" else "")
        cells = [
            name,
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


def _cell(entry: dict, agreement: bool = False) -> str:
    cell = f"{entry['frames_per_s']:.1f} / {entry['latency_ms']:.1f}"
    return f"{cell} ({entry['classes_agreement_vs_fp32']:.2%})" if agreement else cell


if __name__ == "__main__":
    sys.exit(main())
