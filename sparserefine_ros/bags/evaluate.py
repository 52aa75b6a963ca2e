"""Offline evaluation of a bag: every frame, in order, straight from the file (no DDS).

Each frame runs through the modes exactly as ``sparserefine evaluate`` runs an image (same
functions, same warm-up, same metric), so both tools give the same numbers on the same frames.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sparserefine_ros.models.evaluation import dense_predict
from sparserefine_ros.models.segmenter import SegmenterPipeline
from sparserefine_ros.segmentation_stats import segmentation_stats_fields
from sparserefine_ros.visualization import colorize, overlay

from .io import BagError, BagReader, BagWriter, Frame, image_msg, make_header, staged
from .report import PICTURES, Evaluation, write_json
from .types import typestore

OVERLAY_ALPHA = 0.5
OUTPUT_BAG = "segmentation_bag"


def default_report_dir(json_path: str | Path) -> Path:
    """Where the report goes unless told: beside the JSON, named after it."""
    json_path = Path(json_path)
    return json_path.with_name(f"{json_path.stem}_report")


def evaluate_bag(
    pipeline: SegmenterPipeline,
    reader: BagReader,
    json_path: str | Path,
    report_dir: str | Path,
    model: str = "",
    dense_full: bool = False,
    storage: str = "mcap",
    progress: bool = True,
) -> dict:
    """Evaluate every frame of ``reader``; write the JSON summary and the report folder (with
    the output bag of the node's topics) and return the summary. Nothing is left behind if any
    frame fails."""
    if reader.image_count == 0:
        raise BagError(f"{reader.path}: topic {reader.image_topic} has no messages")
    modes = {
        "dense_low": lambda x: dense_predict(pipeline, x, full_resolution=False),
        "sparserefine": pipeline,
    }
    if dense_full:
        modes = {"dense_full": lambda x: dense_predict(pipeline, x, full_resolution=True), **modes}
    evaluation = Evaluation(
        pipeline.class_names,
        tuple(modes),
        {
            "source": str(reader.path),
            "model": model,
            "image_topic": reader.image_topic,
            "label_topic": reader.label_topic,
            "scale": pipeline.model.scale,
            "tau": pipeline.model.tau,
            "max_fraction": pipeline.model.max_fraction,
            "threads": torch.get_num_threads(),
            "device": str(pipeline.device),
        },
    )
    pictured = set(np.linspace(0, reader.image_count - 1, PICTURES).round().astype(int).tolist())
    namespace = reader.image_topic.rsplit("/", 1)[0]
    with staged(json_path) as json_scratch, staged(report_dir) as folder:
        folder.mkdir()
        with BagWriter(folder / OUTPUT_BAG, storage) as out:
            frames = tqdm(reader.frames(), total=reader.image_count, desc="eval-bag",
                          unit="frame", disable=not progress)  # fmt: skip
            for index, frame in enumerate(frames):
                images = torch.from_numpy(np.ascontiguousarray(frame.rgb.transpose(2, 0, 1)))[None]
                if index == 0:  # warm-up, as `sparserefine evaluate` does
                    for fn in modes.values():
                        fn(images)
                    _write_class_info(out, namespace, frame, pipeline)
                outputs, latency = {}, {}
                for mode, fn in modes.items():
                    start = time.perf_counter()
                    outputs[mode] = fn(images)
                    latency[mode] = (time.perf_counter() - start) * 1e3
                result = outputs["sparserefine"]
                predictions = {m: o.numpy()[0] for m, o in outputs.items() if m != "sparserefine"}
                predictions["sparserefine"] = result.classes[0].numpy()
                evaluation.add(
                    frame.stamp_ns, predictions, latency, int(result.num_selected[0]), frame.label,
                    result.refine_mask[0].numpy(),
                )  # fmt: skip
                color = _write_outputs(out, namespace, frame, result, latency["sparserefine"],
                                       pipeline)  # fmt: skip
                if index in pictured:
                    evaluation.add_picture(frame.stamp_ns, overlay(frame.rgb, color, OVERLAY_ALPHA))
        summary = evaluation.summary()
        evaluation.write(folder, summary)
        write_json(json_scratch, summary)
    return summary


def _write_outputs(out: BagWriter, namespace: str, frame: Frame, result, latency_ms, pipeline):
    """The node's topics for one frame, stamped like the image; returns the colour image."""
    classes = result.classes[0].numpy().astype(np.uint8)
    color = colorize(classes, pipeline.palette)
    out.write(f"{namespace}/segmentation", frame.time_ns, image_msg(classes, "mono8", frame.header))
    out.write(f"{namespace}/segmentation_color", frame.time_ns,
              image_msg(color, "rgb8", frame.header))  # fmt: skip
    out.write(f"{namespace}/entropy", frame.time_ns,
              image_msg(result.entropy[0].numpy(), "32FC1", frame.header))  # fmt: skip
    stats = typestore().types["sparserefine_ros/msg/SegmentationStats"](
        header=frame.header,
        latency_ms=latency_ms,  # offline there is no transport: the pipeline's wall time
        **segmentation_stats_fields(result, 0, pipeline.model),
    )
    out.write(f"{namespace}/segmentation_stats", frame.time_ns, stats)
    return color


def _write_class_info(out: BagWriter, namespace: str, frame: Frame, pipeline) -> None:
    """The class table the segmentation ids refer to, once, as the node latches it."""
    types = typestore().types
    info = types["sparserefine_ros/msg/ClassInfo"](
        header=make_header(frame.stamp_ns, frame.header.frame_id),
        ids=np.arange(len(pipeline.class_names), dtype=np.uint16),
        names=list(pipeline.class_names),
        colors=[
            types["std_msgs/msg/ColorRGBA"](r / 255.0, g / 255.0, b / 255.0, 1.0)
            for r, g, b in pipeline.palette.tolist()
        ],
    )
    out.write(f"{namespace}/class_info", frame.time_ns, info)
