"""Accuracy and speed of a segmenter in its three modes, as the method is judged.

Modes, all at the evaluation resolution: the dense model at full resolution (logits resized
bilinearly to the image), the dense model at the low scale (what SparseRefine starts from,
upsampled nearest as the pipeline does), and low scale + SparseRefine. The modes run one after
the other on each image, so a busy machine slows them alike; latency is the median over images
of the wall time from uint8 image to class map.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from sparserefine_ros.data.cityscapes import CityscapesDataset
from sparserefine_ros.evaluation.metrics import SegmentationMetric
from sparserefine_ros.evaluation.selection import SelectionDiagnostic
from sparserefine_ros.method.entropy import upsampled_class_map
from sparserefine_ros.method.pipeline import SparseRefinePipeline
from sparserefine_ros.method.selection import upsample_nearest

from .segmenter import SegmenterPipeline, with_overrides

MODES = ("dense_full", "dense_low", "sparserefine")


@torch.inference_mode()
def dense_predict(
    pipeline: SparseRefinePipeline, images: torch.Tensor, full_resolution: bool
) -> torch.Tensor:
    """Class map (B, H, W) on the CPU of the dense model alone on uint8 images (B, 3, H, W):
    at full resolution, or at the pipeline's dense scale upsampled nearest as the pipeline
    does; either way the class map of the logits upsampled bilinearly to the model's input."""
    model, images = pipeline.model, images.to(pipeline.device)
    if full_resolution:
        logits = model.run_dense(pipeline.dense_model, model.normalize(images))
        return upsampled_class_map(logits, None, images.shape[-2:]).cpu()
    low = model.preprocess(images)[1]
    logits = model.run_dense(pipeline.dense_model, low)
    classes = upsampled_class_map(logits, None, low.shape[-2:])
    return upsample_nearest(classes, images.shape[-2:]).cpu()


@torch.inference_mode()
def dense_forward_ms(pipeline: SparseRefinePipeline, images: torch.Tensor) -> dict[str, float]:
    """Wall time (ms) of the dense model's forward alone, on the normalized image at full
    resolution and at the pipeline's dense scale: their ratio is the ceiling of the speed-up
    SparseRefine can reach (everything else it does is overhead)."""
    model = pipeline.model
    full, low = model.normalize(images), model.preprocess(images)[1]
    times = {}
    for name, x in (("full", full), ("low", low)):
        start = time.perf_counter()
        out = pipeline.dense_model(x)
        if pipeline.device.type == "cuda":
            torch.cuda.synchronize(pipeline.device)
        del out
        times[name] = (time.perf_counter() - start) * 1e3
    return times


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - start) * 1e3


def _resize(image: torch.Tensor, label: torch.Tensor, size: tuple[int, int]):
    """Bring an (3, H, W) image and its label to ``size`` = (height, width) if they differ."""
    if tuple(label.shape) == size:
        return image, label
    rgb = cv2.resize(image.permute(1, 2, 0).numpy(), size[::-1], interpolation=cv2.INTER_AREA)
    lab = cv2.resize(label.numpy().astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(rgb).permute(2, 0, 1), torch.from_numpy(lab.astype(np.int64))


def evaluate_segmenter(
    pipeline: SegmenterPipeline,
    data: str | Path,
    split: str = "test",
    size: tuple[int, int] = (1024, 2048),
    limit: int | None = None,
) -> dict:
    """mIoU, boundary mIoU, per-class IoU (percent) and median latency (ms) of the three modes,
    the share of pixels SparseRefine refined and its selection diagnostic, on ``split`` at
    ``size`` (height, width)."""
    dataset = CityscapesDataset(data, split)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise FileNotFoundError(f"no labelled images in {data}/leftImg8bit/{split}")
    num_classes = len(pipeline.class_names)
    metrics = {mode: SegmentationMetric(num_classes) for mode in MODES}
    diagnostic = SelectionDiagnostic(num_classes)
    latency: dict[str, list[float]] = {mode: [] for mode in MODES}
    stages: dict[str, list[float]] = {}
    forward: dict[str, list[float]] = {"full": [], "low": []}
    selected = pixels = 0
    modes = {
        "dense_full": lambda x: dense_predict(pipeline, x, full_resolution=True),
        "dense_low": lambda x: dense_predict(pipeline, x, full_resolution=False),
        "sparserefine": pipeline,
    }
    for index in tqdm(range(count), desc=f"evaluate {split}", dynamic_ncols=True):
        image, label = _resize(*dataset[index], size)
        images = image[None]
        if index == 0:  # warm-up: first calls pay for allocations and kernel selection
            for fn in modes.values():
                fn(images)
            dense_forward_ms(pipeline, images)
        for name, ms in dense_forward_ms(pipeline, images).items():
            forward[name].append(ms)
        for mode, fn in modes.items():  # dense_full first: the diagnostic's full-res oracle
            out, ms = _timed(fn, images)
            latency[mode].append(ms)
            if mode == "dense_full":
                full_classes = out
            if mode == "sparserefine":
                selected += sum(out.num_selected)
                for stage, stage_ms in out.timings_ms.items():
                    stages.setdefault(stage, []).append(stage_ms)
                diagnostic.update(
                    out.dense_classes, out.classes, out.refine_mask, label[None], full_classes
                )
                out = out.classes
            metrics[mode].update(out, label[None])
        pixels += label.numel()
    summary = _summary(pipeline, metrics, latency, stages, selected / pixels, count, size)
    forward_ms = {name: statistics.median(ms) for name, ms in forward.items()}
    return {
        **summary,
        "dense_forward_ms": forward_ms,
        "speedup_ceiling": forward_ms["full"] / forward_ms["low"],
        "selection": diagnostic.compute(),
    }


def _summary(pipeline, metrics, latency, stages, fraction, count, size) -> dict:
    scores = {mode: metrics[mode].compute() for mode in MODES}
    names = pipeline.class_names

    def per_class(score) -> dict:
        return {
            n: (None if np.isnan(v) else 100.0 * v) for n, v in zip(names, score.iou, strict=True)
        }

    median = {mode: statistics.median(latency[mode]) for mode in MODES}
    return {
        "miou": {mode: 100.0 * scores[mode]["all"].miou for mode in MODES},
        "boundary_miou": {mode: 100.0 * scores[mode]["boundary"].miou for mode in MODES},
        "per_class_iou": {mode: per_class(scores[mode]["all"]) for mode in MODES},
        "latency_ms": median,
        "stage_ms": {stage: statistics.median(ms) for stage, ms in stages.items()},
        "speedup": median["dense_full"] / median["sparserefine"],
        "selected_fraction": fraction,
        "images": count,
        "size": [size[1], size[0]],
        "scale": pipeline.model.scale,
        "tau": pipeline.model.tau,
        "max_fraction": pipeline.model.max_fraction,
        "threads": torch.get_num_threads(),
        "device": str(pipeline.device),
    }


def sweep_segmenter(
    pipeline: SegmenterPipeline,
    data: str | Path,
    taus: Sequence[float],
    fractions: Sequence[float | None],
    split: str = "test",
    size: tuple[int, int] = (1024, 2048),
    limit: int | None = None,
) -> list[dict]:
    """SparseRefine's mIoU, median latency, refined share and selection diagnostic for each
    (tau, budget) setting."""
    dataset = CityscapesDataset(data, split)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    settings = [(float(t), f) for t in taus for f in fractions]
    trials = {
        s: SegmenterPipeline(
            pipeline.dense_model,
            with_overrides(pipeline.model, tau=s[0], max_fraction=s[1]),
            pipeline.class_names,
            pipeline.palette,
            pipeline.device,
        )
        for s in settings
    }
    metrics = {s: SegmentationMetric(len(pipeline.class_names)) for s in settings}
    diagnostics = {s: SelectionDiagnostic(len(pipeline.class_names)) for s in settings}
    latency: dict = {s: [] for s in settings}
    selected = dict.fromkeys(settings, 0)
    pixels = 0
    for index in tqdm(range(count), desc="sweep", dynamic_ncols=True):
        image, label = _resize(*dataset[index], size)
        if index == 0:
            trials[settings[0]](image[None])
        full_classes = dense_predict(pipeline, image[None], full_resolution=True)
        for s, trial in trials.items():
            out, ms = _timed(trial, image[None])
            latency[s].append(ms)
            selected[s] += sum(out.num_selected)
            metrics[s].update(out.classes, label[None])
            diagnostics[s].update(
                out.dense_classes, out.classes, out.refine_mask, label[None], full_classes
            )
        pixels += label.numel()
    return [
        {
            "tau": t,
            "max_fraction": f,
            "miou": 100.0 * metrics[t, f].compute()["all"].miou,
            "latency_ms": statistics.median(latency[t, f]),
            "selected_fraction": selected[t, f] / pixels,
            "selection": diagnostics[t, f].compute(),
        }
        for t, f in settings
    ]


def plot_speed_accuracy(summary: dict, sweep: list[dict], path: str | Path, title: str) -> None:
    """PNG of mIoU against median latency: one line per budget over the swept taus (points
    labelled with tau), the two dense modes, and the "full resolution - 0.5" target line."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    for budget in sorted({row["max_fraction"] or 1.0 for row in sweep}, reverse=True):
        rows = sorted((r for r in sweep if (r["max_fraction"] or 1.0) == budget),
                      key=lambda r: r["latency_ms"])  # fmt: skip
        name = "no budget" if budget == 1.0 else f"budget {100 * budget:g}%"
        line = axes.plot([r["latency_ms"] for r in rows], [r["miou"] for r in rows], marker="o",
                         label=f"SparseRefine, {name}")[0]  # fmt: skip
        for r in rows:
            axes.annotate(
                f"{r['tau']:g}",
                (r["latency_ms"], r["miou"]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=8,
                color=line.get_color(),
            )
    dense = (("dense_full", "s", "black", "dense, full resolution"),
             ("dense_low", "D", "grey", f"dense, scale {summary['scale']:g}"))  # fmt: skip
    for mode, marker, colour, label in dense:
        axes.plot(summary["latency_ms"][mode], summary["miou"][mode], marker, markersize=9,
                  color=colour, label=label)  # fmt: skip
    axes.axhline(summary["miou"]["dense_full"] - 0.5, color="grey", linestyle="--", linewidth=1,
                 label="full resolution - 0.5 mIoU")  # fmt: skip
    axes.set(xlabel="median latency per image (ms)", ylabel="mIoU (%)", title=title)
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, title="labels: tau", title_fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
