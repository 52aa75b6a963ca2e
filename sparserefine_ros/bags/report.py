"""Scores, timings and the Markdown report of a run over a bag, offline or online.

:class:`Evaluation` takes one frame at a time (predictions of each mode, their latencies, the
refined pixel count, the label if any) and gives the JSON summary, keyed as
``sparserefine evaluate``'s (mIoU in percent, latency in ms; modes that did not run, or mIoU
without labels, are null), and a report folder: ``report.md``, plots, overlay frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from sparserefine_ros.evaluation.metrics import SegmentationMetric, mean_iou
from sparserefine_ros.evaluation.selection import SelectionDiagnostic, selection_sentence
from sparserefine_ros.models.evaluation import MODES

PICTURES = 3  # overlay frames in a report
PERCENTILES = (50, 90, 99)
_LABELS = {
    "dense_full": "dense, full res.",
    "dense_low": "dense, low res.",
    "sparserefine": "SparseRefine",
}
_COLOURS = {"dense_full": "tab:red", "dense_low": "tab:gray", "sparserefine": "tab:blue"}


class Evaluation:
    """Accumulates a run frame by frame; ``modes`` are those of :data:`MODES` that run.

    ``info`` (model, settings, source) is copied into the summary and the report's header.
    """

    def __init__(self, class_names: list[str], modes: tuple[str, ...], info: dict) -> None:
        unknown = set(modes) - set(MODES)
        if unknown or "sparserefine" not in modes:
            raise ValueError(f"modes must include sparserefine and be among {MODES}: {modes}")
        self.class_names = list(class_names)
        self.modes = tuple(m for m in MODES if m in modes)
        self.info = dict(info)
        self.metrics = {m: SegmentationMetric(len(self.class_names)) for m in self.modes}
        self.diagnostic = SelectionDiagnostic(len(self.class_names))
        self.diagnosed = 0
        self.latency: dict[str, list[float]] = {m: [] for m in self.modes}
        self.timeline: list[tuple[int, dict[str, float]]] = []  # (stamp, per-frame mIoU)
        self.pictures: list[tuple[int, np.ndarray]] = []  # (stamp, RGB overlay)
        self.frames = self.labelled = self.selected = self.pixels = 0
        self.first_stamp: int | None = None
        self.size: tuple[int, int] | None = None  # (width, height) of the first frame

    def add(
        self,
        stamp: int,
        predictions: dict[str, np.ndarray],
        latency_ms: dict[str, float],
        selected: int,
        label: np.ndarray | None,
        refine_mask: np.ndarray | None = None,
    ) -> None:
        """One frame: (H, W) class maps and latencies of every mode, refined pixel count; with
        the refine mask and a dense_low prediction, the selection diagnostic too (with its
        full-resolution oracle when a dense_full prediction is there)."""
        classes = predictions["sparserefine"]
        if self.first_stamp is None:
            self.first_stamp, self.size = stamp, (classes.shape[1], classes.shape[0])
        self.frames += 1
        self.selected += selected
        self.pixels += classes.size
        for mode in self.modes:
            self.latency[mode].append(float(latency_ms[mode]))
        if label is None:
            return
        self.labelled += 1
        for mode in self.modes:
            self.metrics[mode].update(predictions[mode], label[None])
        if refine_mask is not None and "dense_low" in predictions:
            self.diagnostic.update(
                predictions["dense_low"], predictions["sparserefine"], refine_mask, label,
                predictions.get("dense_full"),
            )  # fmt: skip
            self.diagnosed += 1
        num_classes = len(self.class_names)
        self.timeline.append(
            (stamp, {m: 100.0 * mean_iou(predictions[m], label, num_classes) for m in self.modes})
        )

    def add_picture(self, stamp: int, overlay_rgb: np.ndarray) -> None:
        self.pictures.append((stamp, overlay_rgb))

    def summary(self) -> dict:
        """The JSON summary (see the module docstring)."""
        if self.frames == 0:
            raise ValueError("no frames were evaluated")
        scores = {m: self.metrics[m].compute() for m in self.modes} if self.labelled else {}

        def percent(mode: str, part: str) -> float | None:
            return 100.0 * scores[mode][part].miou if mode in scores else None

        def per_class(mode: str) -> dict[str, float | None]:
            iou = zip(self.class_names, scores[mode]["all"].iou, strict=True)
            return {name: None if np.isnan(v) else 100.0 * v for name, v in iou}

        latency = {m: float(np.median(self.latency[m])) if m in self.modes else None for m in MODES}
        refined = self.latency["sparserefine"]
        latency.update({f"p{q}": float(np.percentile(refined, q)) for q in PERCENTILES})
        return {
            **self.info,
            "miou": {m: percent(m, "all") for m in MODES},
            "boundary_miou": {m: percent(m, "boundary") for m in MODES},
            "per_class_iou": {m: per_class(m) for m in scores},
            "latency_ms": latency,
            "selected_fraction": self.selected / self.pixels,
            "frames": self.frames,
            "labelled_frames": self.labelled,
            "size": list(self.size),
            "per_frame_miou": [{"stamp_ns": stamp, **miou} for stamp, miou in self.timeline],
            "selection": self.diagnostic.compute() if self.diagnosed else None,
        }

    def write(self, folder: Path, summary: dict) -> None:
        """``report.md`` with its plots (``plots/``) and overlay frames (``frames/``)."""
        (folder / "plots").mkdir(parents=True)
        (folder / "frames").mkdir()
        figures = [("latency", "latency histogram", self._plot_latency())]
        if self.labelled:
            figures.append(("per_class_iou", "per-class IoU", self._plot_per_class(summary)))
            figures.append(("miou_over_time", "mIoU over time", self._plot_timeline()))
        for name, _, figure in figures:
            figure.savefig(folder / "plots" / f"{name}.png", dpi=100)
        pictures = []
        for stamp, rgb in self.pictures:
            path = Path("frames") / f"overlay_{stamp}.png"
            if not cv2.imwrite(str(folder / path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {folder / path}")
            pictures.append((stamp, path))
        text = _markdown(summary, self.class_names, self.modes, figures, pictures, self.first_stamp)
        (folder / "report.md").write_text(text)

    def _plot_latency(self) -> Figure:
        figure = Figure(figsize=(7, 3.5), layout="constrained")
        axes = figure.subplots()
        for mode in self.modes:
            axes.hist(self.latency[mode], bins=30, alpha=0.6, color=_COLOURS[mode],
                      label=_LABELS[mode])  # fmt: skip
        axes.set(xlabel="latency per frame (ms)", ylabel="frames", title="Latency")
        axes.legend()
        return figure

    def _plot_per_class(self, summary: dict) -> Figure:
        figure = Figure(figsize=(9, 4), layout="constrained")
        axes = figure.subplots()
        x = np.arange(len(self.class_names))
        width = 0.8 / len(self.modes)
        for i, mode in enumerate(self.modes):
            values = [summary["per_class_iou"][mode][n] for n in self.class_names]
            heights = [np.nan if v is None else v for v in values]
            axes.bar(x + (i - (len(self.modes) - 1) / 2) * width, heights, width,
                     color=_COLOURS[mode], label=_LABELS[mode])  # fmt: skip
        axes.set_xticks(x, self.class_names, rotation=45, ha="right")
        axes.set(ylabel="IoU (%)", ylim=(0, 100), title="Per-class IoU")
        axes.legend()
        return figure

    def _plot_timeline(self) -> Figure:
        figure = Figure(figsize=(7, 3.5), layout="constrained")
        axes = figure.subplots()
        seconds = [(stamp - self.first_stamp) / 1e9 for stamp, _ in self.timeline]
        for mode in self.modes:
            axes.plot(seconds, [scores[mode] for _, scores in self.timeline], marker=".",
                      color=_COLOURS[mode], label=_LABELS[mode])  # fmt: skip
        axes.set(xlabel="time since first frame (s)", ylabel="mIoU of the frame (%)",
                 title="mIoU over time")  # fmt: skip
        axes.legend()
        return figure


def write_json(path: Path, summary: dict) -> None:
    path.write_text(json.dumps(summary, indent=1))


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _markdown(summary, class_names, modes, figures, pictures, first_stamp) -> str:
    width, height = summary["size"]
    latency = summary["latency_ms"]
    settings = ", ".join(
        f"{key} {summary[key]}" for key in ("model", "scale", "tau", "max_fraction", "device")
        if key in summary
    )  # fmt: skip
    lines = [
        f"# SparseRefine evaluation of {summary.get('source', 'a bag')}",
        "",
        f"{summary['frames']} frames at {width}x{height}, {summary['labelled_frames']} with "
        f"ground truth. {settings}.",
        "",
        "| mode | mIoU (%) | boundary mIoU (%) | median latency (ms) |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {_LABELS[m]} | {_cell(summary['miou'][m])} | {_cell(summary['boundary_miou'][m])} "
        f"| {_cell(latency[m], 1)} |"
        for m in modes
    ]
    lines += [
        "",
        f"SparseRefine latency per frame: p50 {latency['p50']:.1f} ms, p90 {latency['p90']:.1f} ms,"
        f" p99 {latency['p99']:.1f} ms. Refined pixels: "
        f"{100 * summary['selected_fraction']:.2f} % of all pixels.",
        "",
    ]
    if summary.get("selection"):
        lines += [selection_sentence(summary["selection"]), ""]
    lines += [f"![{title}](plots/{name}.png)\n" for name, title, _ in figures]
    if summary["per_class_iou"]:
        lines += ["## Per-class IoU (%)", "", "| class | " + " | ".join(_LABELS[m] for m in modes)
                  + " |", "|---|" + "---:|" * len(modes)]  # fmt: skip
        lines += [
            f"| {name} | "
            + " | ".join(_cell(summary["per_class_iou"][m][name]) for m in modes)
            + " |"
            for name in class_names
        ]
        lines.append("")
    if pictures:
        lines += ["## Frames (SparseRefine overlay)", ""]
        lines += [f"t = {(stamp - first_stamp) / 1e9:.2f} s (stamp {stamp} ns)\n\n"
                  f"![frame {stamp}]({path.as_posix()})\n" for stamp, path in pictures]  # fmt: skip
    return "\n".join(lines)
