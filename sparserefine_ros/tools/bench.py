"""``sparserefine bench``: cost of the sparse refinement stages against dense convolution.

Times, at a camera resolution and for several shares of selected pixels, the three stages that
SparseRefine adds to a low-resolution dense model: building the neighbour/down maps, the sparse
UNet forward pass and the gated ensembler. For scale it times a dense stack of as many 3x3
convs as the UNet's finest level has, at the same width, at full and half resolution. Selected
pixels are bands along the edges of random blobs, clustered like real entropy selections.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from sparserefine_ros.method import GatedEnsembler, SparseRefiner, select_uncertain
from sparserefine_ros.method.sparse import SparseTensor, submanifold_conv3x3
from sparserefine_ros.method.sparse.functional import STRATEGIES
from sparserefine_ros.method.timing import StageTimer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time sparse refinement against dense convolution",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    parser.add_argument("--height", type=int, default=1024, help="image height (px)")
    parser.add_argument("--width", type=int, default=2048, help="image width (px)")
    parser.add_argument(
        "--fractions", type=float, nargs="+", default=[0.02, 0.05, 0.1], help="selected shares"
    )
    parser.add_argument(
        "--channels", type=int, default=16, help="UNet width at full resolution (doubles per level)"
    )
    parser.add_argument("--levels", type=int, default=4, help="UNet levels")
    parser.add_argument("--num-classes", type=int, default=19, help="classes of the refiner")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default: torch's); 1 is steadier on a busy host"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and weights")
    parser.set_defaults(func=run)


def boundary_selection(height: int, width: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """(N, 3) coords of ``ceil(fraction * height * width)`` pixels nearest to blob edges.

    Blobs are thresholded smooth noise (about 64-pixel features); pixels are ranked by how many
    dilations of the edge map reach them, ties in raster order, so the result is deterministic.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, max(3, height // 64), max(3, width // 64), generator=generator)
    smooth = F.interpolate(noise, (height, width), mode="bilinear", align_corners=False)
    # Threshold at the median: half the image is blob, so there are always edges to grow from.
    blobs = (smooth > smooth.median()).float()
    reached = F.max_pool2d(blobs, 3, 1, 1) - blobs  # outer boundary of each blob
    score = reached.clone()
    target = math.ceil(fraction * height * width)
    while 0 < int(reached.sum()) < target:
        grown = F.max_pool2d(reached, 3, 1, 1)
        if torch.equal(grown, reached):  # whole image reached
            break
        reached = grown
        score += reached
    mask = select_uncertain(score[0], tau=0.0, max_fraction=fraction)
    return torch.nonzero(mask)


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    widths = tuple(args.channels * 2**level for level in range(args.levels))
    refiner = SparseRefiner(args.num_classes, widths).to(device).eval()
    ensembler = GatedEnsembler(args.num_classes).to(device).eval()
    shape = (args.height, args.width)
    results = {
        "config": {
            "height": args.height,
            "width": args.width,
            "channels": args.channels,
            "widths": list(widths),
            "num_classes": args.num_classes,
            "repeats": args.repeats,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
    }
    with torch.inference_mode():
        # As many 3x3 convs as the UNet has at full resolution: stem, encoder, decoder blocks.
        results["dense_stack"] = _bench_dense_stack(
            args.channels, 1 + 4 * refiner.blocks[0], shape, args.repeats, device
        )
        results["sparse"] = [
            _bench_sparse(
                refiner,
                ensembler,
                boundary_selection(*shape, fraction, args.seed).to(device),
                shape,
                args.repeats,
            )
            | {"fraction": fraction}
            for fraction in args.fractions
        ]
    print(_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _bench_dense_stack(
    channels: int, num_convs: int, shape: tuple[int, int], repeats: int, device: torch.device
) -> dict:
    layers = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False)]
        layers += [nn.BatchNorm2d(channels), nn.ReLU()]
    stack = nn.Sequential(*layers).to(device).eval()
    result = {"num_convs": num_convs}
    for key, (height, width) in (
        ("full_res_ms", shape),
        ("half_res_ms", (shape[0] // 2, shape[1] // 2)),
    ):
        image = torch.randn(1, channels, height, width, device=device)
        result[key] = _median_ms(partial(stack, image), repeats, device)
    return result


def _bench_sparse(
    refiner: SparseRefiner,
    ensembler: GatedEnsembler,
    coords: torch.Tensor,
    shape: tuple[int, int],
    repeats: int,
) -> dict:
    device = coords.device
    num = coords.shape[0]
    feats = torch.randn(num, refiner.in_channels, device=device)
    maps_ms = _median_ms(
        lambda: refiner.build_maps(SparseTensor(coords, feats, 1, shape)), repeats, device
    )
    warm = refiner.build_maps(SparseTensor(coords, feats, 1, shape))
    unet_ms = _median_ms(lambda: refiner(warm), repeats, device)
    logits = torch.randn(2, num, refiner.num_classes, device=device)
    ensembler_ms = _median_ms(lambda: ensembler(logits[0], logits[1]), repeats, device)
    channels = refiner.widths[0]
    level0 = warm.replace(torch.randn(num, channels, device=device))
    weight = torch.randn(channels, channels, 3, 3, device=device)
    conv_ms = {
        strategy: _median_ms(
            partial(submanifold_conv3x3, level0, weight, strategy=strategy),
            repeats,
            device,
        )
        for strategy in STRATEGIES
    }
    return {
        "num_selected": num,
        "map_build_ms": maps_ms,
        "unet_forward_ms": unet_ms,
        "ensembler_ms": ensembler_ms,
        "total_ms": maps_ms + unet_ms + ensembler_ms,
        "subm_conv_ms": conv_ms,
    }


def _median_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``repeats`` runs after one untimed warm-up run."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        timer = StageTimer(device)
        with timer("run"):
            fn()
        times.append(timer.ms["run"])
    return statistics.median(times)


def _table(results: dict) -> str:
    config, dense = results["config"], results["dense_stack"]
    height, width = config["height"], config["width"]
    lines = [
        f"{width}x{height}, UNet widths {'-'.join(map(str, config['widths']))}, "
        f"{config['num_classes']} classes, {config['device']}, {config['threads']} threads, "
        f"torch {config['torch']}, median of {config['repeats']} (ms)",
        f"dense stack, {dense['num_convs']} x conv3x3 at width {config['channels']}: "
        f"{dense['full_res_ms']:.1f} at {width}x{height}, "
        f"{dense['half_res_ms']:.1f} at {width // 2}x{height // 2}",
        "",
        f"{'selected':>9} {'pixels':>8} {'maps':>8} {'unet':>8} {'ensemble':>9} {'total':>8} "
        f"{'vs dense':>9} {'conv/offset':>12} {'conv/im2col':>12}",
    ]
    for row in results["sparse"]:
        speedup = dense["full_res_ms"] / row["total_ms"] if row["total_ms"] else math.inf
        lines.append(
            f"{row['fraction']:>9.1%} {row['num_selected']:>8} {row['map_build_ms']:>8.1f} "
            f"{row['unet_forward_ms']:>8.1f} {row['ensembler_ms']:>9.2f} {row['total_ms']:>8.1f} "
            f"{speedup:>8.2f}x {row['subm_conv_ms']['per_offset']:>12.1f} "
            f"{row['subm_conv_ms']['im2col']:>12.1f}"
        )
    lines.append(
        "'vs dense': dense stack at full resolution / sparse total; 'conv/...': one 3x3 "
        "submanifold conv at full-resolution width per gather strategy"
    )
    return "\n".join(lines)
