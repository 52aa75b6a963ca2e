"""``sparserefine dataset``: generate scenes and drives, measure resolution loss, preview."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from sparserefine_ros.data.cityscapes import find_samples, read_image, read_label
from sparserefine_ros.data.writer import SPLIT_IDS, write_drive, write_split
from sparserefine_ros.evaluation.metrics import (
    confusion_matrix,
    resolution_roundtrip,
    scores_from_confusion,
)
from sparserefine_ros.labels import CLASS_NAMES, NUM_CLASSES, colorize
from sparserefine_ros.tools.arguments import parse_size


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="generated street scenes (Cityscapes layout)")
    sub = parser.add_subparsers(dest="dataset_command", required=True)

    gen = sub.add_parser("generate", help="write independent scenes of one split")
    gen.add_argument("--out", type=Path, required=True, help="root of the Cityscapes-layout tree")
    gen.add_argument(
        "--split", choices=sorted(SPLIT_IDS), default="train", help="split to write or read"
    )
    gen.add_argument("--count", type=_positive, default=100, help="number of images")
    gen.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the scenes (image i of a split is rendered from [seed, split, i])",
    )
    gen.add_argument("--size", type=parse_size, default=(2048, 1024), help="WIDTHxHEIGHT")
    gen.add_argument("--workers", type=_positive, default=2, help="rendering processes")
    gen.set_defaults(func=_generate)

    seq = sub.add_parser("sequence", help="write consecutive frames of one drive")
    seq.add_argument("--out", type=Path, required=True, help="folder to write")
    seq.add_argument("--frames", type=_positive, default=150, help="frames in the drive")
    seq.add_argument("--fps", type=float, default=15.0, help="camera rate (Hz)")
    seq.add_argument("--speed", type=float, default=10.0, help="m/s")
    seq.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the scenes (image i of a split is rendered from [seed, split, i])",
    )
    seq.add_argument("--size", type=parse_size, default=(2048, 1024), help="WIDTHxHEIGHT")
    seq.add_argument("--split", default="sequence", help="split to write or read")
    seq.add_argument("--workers", type=_positive, default=2, help="rendering processes")
    seq.set_defaults(func=_sequence)

    loss = sub.add_parser("resolution-loss", help="mIoU of labels kept at 1/factor resolution")
    loss.add_argument("--data", type=Path, required=True, help="root of the Cityscapes-layout tree")
    loss.add_argument("--split", default="val", help="split to write or read")
    loss.add_argument("--factor", type=_positive, default=2, help="resolution divisor")
    loss.add_argument("--json", type=Path, help="also write the table here")
    loss.set_defaults(func=_resolution_loss)

    prev = sub.add_parser("preview", help="picture grid: image, labels, labels at 1/factor")
    prev.add_argument("--data", type=Path, required=True, help="root of the Cityscapes-layout tree")
    prev.add_argument("--out", type=Path, required=True, help="PNG or JPEG file")
    prev.add_argument("--split", default="val", help="split to write or read")
    prev.add_argument("--count", type=_positive, default=4, help="number of images")
    prev.add_argument("--factor", type=_positive, default=2, help="resolution divisor")
    prev.add_argument(
        "--tile-width", type=_positive, default=512, help="width of each picture tile (px)"
    )
    prev.set_defaults(func=_preview)


def _fail(message: str) -> int:
    print(f"sparserefine dataset: error: {message}", file=sys.stderr)
    return 1


def _generate(args) -> int:
    try:
        write_split(args.out, args.split, args.count, args.seed, args.size, args.workers)
    except OSError as e:
        return _fail(str(e))
    print(f"wrote {args.count} {args.split} scenes to {args.out}")
    return 0


def _sequence(args) -> int:
    try:
        meta = write_drive(
            args.out,
            args.frames,
            args.fps,
            args.seed,
            args.size,
            args.speed,
            args.split,
            args.workers,
        )
    except (OSError, ValueError) as e:
        return _fail(str(e))
    print(f"wrote {args.frames} frames to {args.out}; index {meta}")
    return 0


def _samples(data: Path, split: str):
    try:
        samples = find_samples(data, split)
    except FileNotFoundError as e:
        raise SystemExit(_fail(str(e))) from None
    samples = [s for s in samples if s.label is not None]
    if not samples:
        raise SystemExit(_fail(f"no labelled images in {data}/leftImg8bit/{split}"))
    return samples


def _resolution_loss(args) -> int:
    samples = _samples(args.data, args.split)
    matrix = 0
    for sample in samples:
        gt = read_label(sample)
        matrix = matrix + confusion_matrix(resolution_roundtrip(gt, args.factor), gt, NUM_CLASSES)
    scores = scores_from_confusion(matrix)
    pixels = np.asarray(matrix).sum(axis=1)
    print(f"labels at 1/{args.factor} resolution vs full, {len(samples)} images of {args.split}")
    print(f"{'class':<15}{'IoU %':>8}{'loss %':>8}{'pixels %':>10}")
    for name, iou, n in zip(CLASS_NAMES, scores.iou, pixels, strict=True):
        if np.isnan(iou):
            print(f"{name:<15}{'-':>8}{'-':>8}{0.0:>10.3f}")
        else:
            print(
                f"{name:<15}{100 * iou:>8.2f}{100 * (1 - iou):>8.2f}{100 * n / pixels.sum():>10.3f}"
            )
    print(f"{'mIoU':<15}{100 * scores.miou:>8.2f}{100 * (1 - scores.miou):>8.2f}")
    print(f"{'pixel acc.':<15}{100 * scores.pixel_accuracy:>8.2f}")
    if args.json:
        table = scores.as_dict(CLASS_NAMES)
        table.update(images=len(samples), split=args.split, factor=args.factor)
        args.json.write_text(json.dumps(table, indent=1))
    return 0


def _preview(args) -> int:
    samples = _samples(args.data, args.split)[: args.count]
    rows = []
    for sample in samples:
        image, gt = read_image(sample.image), read_label(sample)
        h, w = gt.shape
        size = (args.tile_width, round(args.tile_width * h / w))
        tiles = [
            cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            cv2.resize(colorize(gt), size, interpolation=cv2.INTER_NEAREST),
            cv2.resize(
                colorize(resolution_roundtrip(gt, args.factor)),
                size,
                interpolation=cv2.INTER_NEAREST,
            ),
        ]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        return _fail(f"could not write {args.out} (use a .png or .jpg name)")
    print(f"wrote {args.out} ({len(samples)} rows: image | labels | labels at 1/{args.factor})")
    return 0
