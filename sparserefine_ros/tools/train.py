"""``sparserefine train dense|refiner``: thin CLI over :mod:`sparserefine_ros.training`.

Multi-GPU or multi-node: run the same command under ``torchrun --nproc-per-node N``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.tools.arguments import parse_floats, parse_fractions, parse_shape
from sparserefine_ros.training import (
    DENSE_LOSSES,
    PRECISIONS,
    CalibrationRule,
    RefinerSettings,
    TrainConfig,
    train_dense,
    train_refiner,
)


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(v) for v in text.split(","))
    return low, high


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _common(parser: argparse.ArgumentParser, iterations: int, lr: float, wd: float) -> None:
    parser.add_argument("--data", required=True, help="Cityscapes-layout root (train, val splits)")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument(
        "--iterations", type=int, default=iterations, help="total iterations of the schedule"
    )
    parser.add_argument("--batch-size", type=int, default=2, help="crops per step, per process")
    parser.add_argument("--crop", type=parse_shape, default=(512, 1024),
                        help="training crop, WIDTHxHEIGHT")  # fmt: skip
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=wd, help="AdamW weight decay")
    parser.add_argument("--warmup", type=int, default=50, help="iterations of linear warm-up")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of initial weights, data order and augmentation")  # fmt: skip
    parser.add_argument("--val-every", type=int, default=500, help="iterations between val checks")
    parser.add_argument("--val-images", type=int, default=8, help="val images used for metrics")
    parser.add_argument("--save-every", type=int, default=250,
                        help="iterations between resumable states and checkpoints")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (under torchrun: the rank's GPU)")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue from --out's state")
    parser.add_argument("--stop-at", type=int, help="stop after this iteration, resumable")
    parser.add_argument("--card-note", default="", help="text for the model card (e.g. data)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a dense model or a refiner")
    sub = parser.add_subparsers(dest="train_command", required=True)

    dense = sub.add_parser("dense", help="train a dense model of a registered family")
    start = dense.add_mutually_exclusive_group(required=True)
    # No `choices`: listing the families imports transformers, too slow for every CLI start.
    start.add_argument(
        "--arch", help="family to train from scratch (sparserefine models --families)"
    )
    start.add_argument("--init", help="fine-tune the dense model of this checkpoint (name or dir)")
    dense.add_argument(
        "--model-config", type=json.loads, default={},
        help='JSON of arch kwargs; with --init, modules to add (e.g. {"context_bins": [1, 2]})',
    )  # fmt: skip
    dense.add_argument("--loss", choices=DENSE_LOSSES, default="ce",
                       help="ce: cross-entropy; ohem: over the hard pixels only")  # fmt: skip
    dense.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="bf16: autocast the forward pass (fast on CPUs with AMX)")  # fmt: skip
    dense.add_argument("--scale-range", type=_pair, default=(0.5, 2.0),
                       help="random rescale of the image before cropping, MIN,MAX")  # fmt: skip
    dense.add_argument(
        "--class-aware", type=float, default=0.0,
        help="share of crops centred on a class drawn uniformly from the split's classes",
    )  # fmt: skip
    dense.add_argument("--teacher", help="checkpoint whose logits are soft targets")
    dense.add_argument("--distill", type=float, default=0.0,
                       help="weight in [0, 1] of the teacher's targets")  # fmt: skip
    _common(dense, iterations=2000, lr=2e-3, wd=0.01)
    dense.set_defaults(func=_dense)

    refiner = sub.add_parser("refiner", help="train a refiner over a frozen dense model")
    refiner.add_argument("--dense", required=True, help="model name, checkpoint dir or file")
    refiner.add_argument("--tau", type=float, default=0.1, help="entropy threshold in training")
    refiner.add_argument("--max-fraction", type=float, help="budget in training (share per crop)")
    refiner.add_argument("--scale", type=float, default=0.5, help="dense input scale")
    refiner.add_argument("--widths", type=_ints, default=(16, 32, 64, 128), help="per level")
    refiner.add_argument("--blocks", type=int, default=1,
                         help="residual blocks per level (0: the stem alone)")  # fmt: skip
    refiner.add_argument("--use-coords", action="store_true",
                         help="also read the site's normalized image coordinates")  # fmt: skip
    refiner.add_argument("--use-probs", action="store_true",
                         help="also read the dense model's class probabilities")  # fmt: skip
    refiner.add_argument("--patch", type=int, default=1,
                         help="odd side of the full-res RGB window a site reads")  # fmt: skip
    refiner.add_argument("--context", type=int, default=1,
                         help="odd side of the dense probability window read")  # fmt: skip
    refiner.add_argument("--residual", action="store_true",
                         help="refiner output corrects the dense logits instead of replacing "
                         "them (starts as the dense prediction)")  # fmt: skip
    refiner.add_argument("--stem-kernel", type=int, choices=(1, 3), default=3,
                         help="first layer: 3 (submanifold 3x3) or 1 (per site)")  # fmt: skip
    refiner.add_argument("--guide", type=int, default=1,
                         help="odd side (>= 3) of the window of dense cells the colour-guided "
                         "upsampling weighs per site; 1: none")  # fmt: skip
    refiner.add_argument("--guide-dim", type=int, default=16,
                         help="width of the guided upsampling's queries and keys")  # fmt: skip
    refiner.add_argument("--dense-images", type=int, default=200,
                         help="train images the dense model runs on once (whole images, at the "
                         "dense scale and, with --distill, full resolution); crops come from "
                         "these")  # fmt: skip
    refiner.add_argument("--distill", type=float, default=0.0,
                         help="weight in [0, 1] of the dense model's full-resolution prediction "
                         "as the target, against the labels' 1 - weight")  # fmt: skip
    refiner.add_argument(
        "--calibrate-taus", type=parse_floats, default=[0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    )
    refiner.add_argument("--calibrate-fractions", type=parse_fractions, default=[None, 0.1, 0.05],
                         help="max selected share per image; 'none' = no budget")  # fmt: skip
    refiner.add_argument("--min-speedup", type=float, default=3.0,
                         help="calibrate to the most accurate setting at least this much faster "
                         "than the dense model at full resolution (on this machine)")  # fmt: skip
    refiner.add_argument("--latency-budget-ms", type=float,
                         help="instead: the most accurate setting within this latency")  # fmt: skip
    _common(refiner, iterations=1000, lr=3e-4, wd=0.05)
    refiner.set_defaults(func=_refiner)


def _config(args) -> TrainConfig:
    if args.threads:
        torch.set_num_threads(args.threads)
    return TrainConfig(
        data=args.data, out=args.out, iterations=args.iterations, batch_size=args.batch_size,
        crop=args.crop, lr=args.lr, weight_decay=args.weight_decay,
        warmup=args.warmup, seed=args.seed, val_every=args.val_every, val_images=args.val_images,
        save_every=args.save_every, workers=args.workers, device=args.device, resume=args.resume,
        stop_at=args.stop_at,
        **({"loss": args.loss, "precision": args.precision, "scale_range": args.scale_range,
            "class_aware": args.class_aware, "teacher": args.teacher, "distill": args.distill}
           if "loss" in args else {}),
    )  # fmt: skip


def _fail(error: Exception) -> int:
    print(f"sparserefine train: error: {error}", file=sys.stderr)
    return 1


def _dense(args) -> int:
    try:
        out = train_dense(_config(args), args.arch, args.model_config, args.card_note, args.init)
    except (OSError, CheckpointError, TypeError, ValueError) as error:
        return _fail(error)
    if out is not None:
        print(f"wrote {out}")
    return 0


def _refiner(args) -> int:
    settings = RefinerSettings(
        tau=args.tau, max_fraction=args.max_fraction, scale=args.scale, widths=args.widths,
        blocks=args.blocks, use_coords=args.use_coords, use_probs=args.use_probs,
        patch=args.patch, context=args.context, distill=args.distill, residual=args.residual,
        stem_kernel=args.stem_kernel, guide=args.guide, guide_dim=args.guide_dim,
        dense_images=args.dense_images,
    )  # fmt: skip
    try:
        out = train_refiner(
            _config(args), args.dense, settings, args.calibrate_taus, args.calibrate_fractions,
            CalibrationRule(args.min_speedup, args.latency_budget_ms), args.card_note,
        )  # fmt: skip
    except (OSError, CheckpointError, ValueError) as error:
        return _fail(error)
    if out is not None:
        print(f"wrote {out}")
    return 0
