"""``sparserefine make-bag`` and ``sparserefine eval-bag``: generated drives as rosbag2 files, and
the pipeline evaluated on any recorded bag (read directly, every frame, no ROS graph)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sparserefine_ros.bags import (
    DEFAULT_IMAGE_TOPIC,
    DEFAULT_LABEL_TOPIC,
    STORAGES,
    BagError,
    BagReader,
    default_report_dir,
    evaluate_bag,
    write_drive_bag,
)
from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.models import DEFAULT_MODEL, init_model
from sparserefine_ros.tools.arguments import parse_size


def register(subparsers) -> None:
    make = subparsers.add_parser(
        "make-bag", help="record a generated drive as a rosbag2 (camera + ground-truth labels)"
    )
    make.add_argument("--out", type=Path, required=True, help="bag folder to create")
    make.add_argument(
        "--storage",
        choices=sorted(STORAGES),
        default="mcap",
        help="rosbag2 storage: mcap or sqlite3",
    )
    make.add_argument("--frames", type=int, default=30, help="frames in the drive")
    make.add_argument("--fps", type=float, default=15.0, help="camera rate of the drive (Hz)")
    make.add_argument("--size", type=parse_size, default=(2048, 1024), help="WIDTHxHEIGHT")
    make.add_argument("--speed", type=float, default=10.0, help="m/s")
    make.add_argument("--seed", type=int, default=0, help="seed of the drive")
    make.add_argument(
        "--image-topic", default=DEFAULT_IMAGE_TOPIC, help="topic the frames are written to"
    )
    make.add_argument("--label-topic", default=DEFAULT_LABEL_TOPIC, help="mono8 train ids")
    make.set_defaults(func=_make)

    ev = subparsers.add_parser(
        "eval-bag", help="mIoU, latency and a report of the pipeline on a recorded bag"
    )
    ev.add_argument("bag", type=Path, help="rosbag2 folder, or its .mcap / .db3 file")
    ev.add_argument("--json", type=Path, required=True, help="summary JSON to write")
    ev.add_argument(
        "--report",
        type=Path,
        help="report folder to create (default: beside the JSON, <name>_report)",
    )
    ev.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC, help="Image or CompressedImage")
    ev.add_argument("--label-topic",
                    help=f"mono8 ground truth matched by stamp (default: {DEFAULT_LABEL_TOPIC} "
                    "if the bag has it, else no mIoU)")  # fmt: skip
    ev.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or checkpoint dir")
    ev.add_argument("--dense-full", action="store_true",
                    help="also run the dense model at full resolution")  # fmt: skip
    ev.add_argument("--storage", choices=sorted(STORAGES), default="mcap",
                    help="storage of the output bag")  # fmt: skip
    ev.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ev.set_defaults(func=_evaluate)


def _fail(command: str, message: str) -> int:
    print(f"sparserefine {command}: error: {message}", file=sys.stderr)
    return 1


def _make(args) -> int:
    if args.frames < 1 or args.fps <= 0:
        return _fail("make-bag", "--frames must be >= 1 and --fps > 0")
    try:
        write_drive_bag(args.out, args.frames, args.fps, args.seed, args.size, args.speed,
                        args.storage, args.image_topic, args.label_topic)  # fmt: skip
    except (BagError, OSError, ValueError) as error:
        return _fail("make-bag", str(error))
    print(f"wrote {args.frames} frames ({args.image_topic}, {args.label_topic}) to {args.out}")
    return 0


def _evaluate(args) -> int:
    torch.set_num_threads(args.threads)
    report = args.report or default_report_dir(args.json)
    try:
        label_topic = args.label_topic
        if label_topic is None:
            with BagReader(args.bag, args.image_topic) as probe:
                label_topic = DEFAULT_LABEL_TOPIC if DEFAULT_LABEL_TOPIC in probe.topics else None
            if label_topic is None:
                print(f"no {DEFAULT_LABEL_TOPIC} in the bag: latency only, no mIoU")
        pipeline = init_model(args.model, args.device)
        with BagReader(args.bag, args.image_topic, label_topic) as reader:
            summary = evaluate_bag(pipeline, reader, args.json, report, str(args.model),
                                   args.dense_full, args.storage)  # fmt: skip
    except (BagError, CheckpointError, OSError) as error:
        return _fail("eval-bag", str(error))
    _print(summary)
    print(f"summary in {args.json}, report in {report}/report.md")
    return 0


def _print(summary: dict) -> None:
    latency = summary["latency_ms"]
    print(f"{summary['frames']} frames, {summary['labelled_frames']} with labels")
    print(f"{'mode':<14}{'mIoU':>8}{'latency ms':>12}")
    for mode, miou in summary["miou"].items():
        if latency[mode] is not None:
            cell = "-" if miou is None else f"{miou:.2f}"
            print(f"{mode:<14}{cell:>8}{latency[mode]:>12.1f}")
    print(f"SparseRefine latency p50 {latency['p50']:.1f} ms, p90 {latency['p90']:.1f} ms, "
          f"p99 {latency['p99']:.1f} ms; refined {100 * summary['selected_fraction']:.2f}% "
          "of pixels")  # fmt: skip
