"""Calibration of tau and the budget on val: the most accurate setting that stays fast enough."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from sparserefine_ros.data.cityscapes import CityscapesDataset
from sparserefine_ros.evaluation.metrics import SegmentationMetric
from sparserefine_ros.method.entropy import upsampled_class_map
from sparserefine_ros.method.sparserefine import SparseRefine, class_maps
from sparserefine_ros.models.segmenter import with_overrides


@dataclass
class CalibrationRule:
    """What calibration optimises: the most accurate setting whose median latency on val keeps
    ``min_speedup`` over the dense model at full resolution, or, with ``latency_budget_ms``,
    stays within that budget. When no setting qualifies, the fastest one is taken."""

    min_speedup: float = 3.0
    latency_budget_ms: float | None = None

    def admits(self, latency_ms: float, full_ms: float) -> bool:
        if self.latency_budget_ms is not None:
            return latency_ms <= self.latency_budget_ms
        return full_ms / latency_ms >= self.min_speedup


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def calibrate(
    dense_model: Callable,
    model: SparseRefine,
    dataset: CityscapesDataset,
    taus: Sequence[float],
    fractions: Sequence[float | None],
    rule: CalibrationRule,
    limit: int,
) -> dict:
    """Score every (tau, budget) setting on val (mIoU, refined share, median latency from
    normalized image to class map) and choose one by ``rule``. The dense model runs once per
    image at the dense scale (timed once, added to every setting) and once at full resolution
    (the reference latency)."""
    settings = [(float(t), f) for t in taus for f in fractions]
    trials = {(t, f): with_overrides(model, tau=t, max_fraction=f) for t, f in settings}
    metrics = {s: SegmentationMetric(model.num_classes) for s in settings}
    selected = {s: 0 for s in settings}
    latency: dict = {s: [] for s in settings}
    full_latency: list[float] = []
    pixels = 0
    device = model.mean.device
    count = min(limit, len(dataset))
    for index in range(count):
        image, label = dataset[index]
        images = image[None].to(device)
        start = time.perf_counter()
        upsampled_class_map(
            model.run_dense(dense_model, model.normalize(images)), None, images.shape[-2:]
        )
        full_latency.append(_ms_since(start))
        start = time.perf_counter()
        full, low = model.preprocess(images)
        low_logits = model.run_dense(dense_model, low)
        dense_ms = _ms_since(start)
        pixels += label.numel()
        for setting, trial in trials.items():
            start = time.perf_counter()
            output = trial(full, low_logits)
            classes = class_maps(output)[0]
            latency[setting].append(dense_ms + _ms_since(start))
            metrics[setting].update(classes.cpu(), label[None])
            selected[setting] += output.selection.coords.shape[0]
    full_ms = statistics.median(full_latency)
    table = []
    for t, f in settings:
        ms = statistics.median(latency[t, f])
        table.append({"tau": t, "max_fraction": f,
                      "miou": 100.0 * metrics[t, f].compute()["all"].miou,
                      "fraction": selected[t, f] / pixels, "latency_ms": ms,
                      "speedup": full_ms / ms})  # fmt: skip
    admitted = [row for row in table if rule.admits(row["latency_ms"], full_ms)]
    if admitted:  # ties go to the fewer refined pixels
        chosen = max(admitted, key=lambda row: (row["miou"], -row["fraction"]))
    else:
        chosen = min(table, key=lambda row: row["latency_ms"])
    return {**chosen, **asdict(rule), "met_rule": bool(admitted), "full_latency_ms": full_ms,
            "images": count, "table": table}  # fmt: skip
