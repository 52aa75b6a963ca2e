"""``sparserefine evaluate``: accuracy and speed of dense full / dense low / SparseRefine.

Optionally sweeps tau and the budget and plots the speed/accuracy curve.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from sparserefine_ros.evaluation.selection import selection_sentence
from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.method.pipeline import COMPILE_MODES
from sparserefine_ros.models.evaluation import (
    MODES,
    evaluate_segmenter,
    plot_speed_accuracy,
    sweep_segmenter,
)
from sparserefine_ros.models.segmenter import init_model
from sparserefine_ros.tools.arguments import parse_floats, parse_fractions, parse_shape


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="mIoU and latency of the three modes")
    parser.add_argument("--model", required=True, help="shipped model name or checkpoint dir")
    parser.add_argument("--data", type=Path, required=True, help="Cityscapes-layout root")
    parser.add_argument("--split", default="test", help="split of --data to evaluate")
    parser.add_argument("--size", type=parse_shape, default=(1024, 2048), help="WIDTHxHEIGHT")
    parser.add_argument("--limit", type=int, help="evaluate the first N images only")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--scale", type=float, help="override the dense scale")
    parser.add_argument("--tau", type=float, help="override the calibrated tau")
    parser.add_argument("--max-fraction", type=float, help="override the calibrated budget")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="none",
                        help="torch.compile the dense model and the per-pixel statistics "
                        "(every mode; the first image compiles)")  # fmt: skip
    parser.add_argument("--fixed-stage", action="store_true",
                        help="run SparseRefine's sparse stage on fixed shapes (compiled as one "
                        "graph with --compile-mode)")  # fmt: skip
    parser.add_argument(
        "--sweep-taus", type=parse_floats, help="also sweep these taus, e.g. 0.1,0.3"
    )
    parser.add_argument("--sweep-fractions", type=parse_fractions, default=[None],
                        help="budgets for the sweep; 'none' = no budget")  # fmt: skip
    parser.add_argument("--plot", type=Path, help="PNG of the sweep's speed/accuracy curve")
    parser.set_defaults(func=run)


def run(args) -> int:
    torch.set_num_threads(args.threads)
    overrides = {
        k: v for k, v in (("scale", args.scale), ("tau", args.tau),
                          ("max_fraction", args.max_fraction)) if v is not None
    }  # fmt: skip
    try:
        pipeline = init_model(args.model, args.device, args.compile_mode, args.fixed_stage,
                              **overrides)  # fmt: skip
        result = evaluate_segmenter(pipeline, args.data, args.split, args.size, args.limit)
        if args.sweep_taus:
            result["sweep"] = sweep_segmenter(
                pipeline, args.data, args.sweep_taus, args.sweep_fractions, args.split,
                args.size, args.limit,
            )  # fmt: skip
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"sparserefine evaluate: error: {error}", file=sys.stderr)
        return 1
    result.update(model=str(args.model), data=str(args.data), split=args.split)
    _print(result, pipeline.class_names)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot and "sweep" in result:
        plot_speed_accuracy(result, result["sweep"], args.plot, f"{args.model} on {args.split}")
    return 0


def _print(result: dict, class_names: list[str]) -> None:
    w, h = result["size"]
    print(
        f"{result['model']} on {result['split']}: {result['images']} images at {w}x{h}, scale "
        f"{result['scale']:g}, tau {result['tau']:g}, budget {result['max_fraction']}"
    )
    print(f"{'mode':<14}{'mIoU':>8}{'boundary':>10}{'latency ms':>12}")
    for mode in MODES:
        print(f"{mode:<14}{result['miou'][mode]:>8.2f}{result['boundary_miou'][mode]:>10.2f}"
              f"{result['latency_ms'][mode]:>12.1f}")  # fmt: skip
    forward = result["dense_forward_ms"]
    print(f"selected fraction {100 * result['selected_fraction']:.2f}%, "
          f"speed-up over full resolution {result['speedup']:.2f}x; dense forward alone "
          f"{forward['full']:.0f} ms full, {forward['low']:.0f} ms low: ceiling "
          f"{result['speedup_ceiling']:.2f}x")  # fmt: skip
    stages = ", ".join(f"{stage} {ms:.0f}" for stage, ms in result["stage_ms"].items())
    print(f"SparseRefine stages, median ms: {stages}")
    print(selection_sentence(result["selection"]))
    print(f"{'class IoU':<15}" + "".join(f"{mode:>14}" for mode in MODES))
    for name in class_names:
        cells = [result["per_class_iou"][mode][name] for mode in MODES]
        print(
            f"{name:<15}" + "".join("             -" if c is None else f"{c:>14.2f}" for c in cells)
        )
    for row in result.get("sweep", []):
        share = 100 * row["selected_fraction"]
        print(f"sweep tau {row['tau']:g} budget {row['max_fraction']}: mIoU {row['miou']:.2f}, "
              f"{row['latency_ms']:.1f} ms, selected {share:.2f}%")  # fmt: skip
        print(f"  {selection_sentence(row['selection'])}")
