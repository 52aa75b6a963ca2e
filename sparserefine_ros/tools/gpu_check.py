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
import sys
import time
import traceback
from pathlib import Path

import torch

from sparserefine_ros.device_check.correctness import check_correctness
from sparserefine_ros.device_check.report import describe_environment, markdown_table
from sparserefine_ros.device_check.timing import profile_stages, time_cameras, time_model
from sparserefine_ros.device_check.zoo import PAPER_SIZED, model_zoo, scene_batches
from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.method.pipeline import COMPILE_MODES, SparseRefinePipeline
from sparserefine_ros.method.streaming import PRECISIONS
from sparserefine_ros.tools.arguments import parse_size

FULL_SIZE = (2048, 1024)


QUICK_SIZE = (128, 64)


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
        "--batch",
        type=int,
        nargs="+",
        metavar="N",
        help="also time N cameras of --size served as one batch, for each N (e.g. 1 2 4 6)",
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
        "--fixed-stage",
        action="store_true",
        help="the --compile variant also compiles the fixed-shape sparse stage as one graph "
        "(with --compile-mode reduce-overhead: replayed as a CUDA graph)",
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
        "environment": describe_environment(device),
        "settings": {
            "size": list(size),
            "check_size": list(check_size),
            "frames": frames,
            "warmup": warmup,
            "precisions": precisions,
            "max_in_flight": args.max_in_flight,
            "compile": args.compile and args.compile_mode,
            "fixed_stage": args.fixed_stage,
            "batch": args.batch or [],
            "quick": args.quick,
        },
        "models": [],
    }
    timed = scene_batches(size, args.seed)
    checked = scene_batches(check_size, args.seed)
    for name, load in model_zoo(args.models, timed, args.fraction):
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
            entry["correctness"] = check_correctness(
                pipeline, device_pipeline, checked, args.max_in_flight
            )
            print(f"{name}: timing at {size[0]}x{size[1]}", flush=True)
            entry["timings"] = time_model(device_pipeline, timed, frames, warmup, precisions, args)
            if args.batch:
                print(f"{name}: timing {args.batch} cameras per batch", flush=True)
                entry["cameras"] = time_cameras(
                    device_pipeline, timed, args.batch, frames, warmup, args.max_in_flight
                )
            if args.profile:
                profile_stages(name, device_pipeline, timed, args)
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
    table = markdown_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    (args.table or args.json.with_suffix(".md")).write_text(table + "\n")
    return table


if __name__ == "__main__":
    sys.exit(main())
