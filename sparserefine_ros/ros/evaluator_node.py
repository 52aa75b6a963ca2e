"""sparserefine_evaluator: scores a running sparserefine_node against a ground-truth label topic
(typically both fed by ``ros2 bag play`` or ``sparserefine replay``) and, when it ends, writes
the same JSON summary and report as ``sparserefine eval-bag``.

It subscribes, in its namespace, to the node's ``segmentation``, ``segmentation_stats``,
``class_info`` and (for a few report pictures) ``overlay``, and to ``label_topic`` (mono8 train
ids stamped like their images). Outputs and labels are matched by header stamp. Latency is the
node's own per-frame inference time (``segmentation_stats.inference_ms``), which does not depend
on clocks; the node does not publish the dense-only modes, so their numbers are null. It ends
on Ctrl-C / SIGTERM, or by itself ``max_idle_s`` seconds after the last output.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import Image

from sparserefine_ros.bags.evaluate import default_report_dir
from sparserefine_ros.bags.io import BagError, mono8_array, staged, stamp_ns
from sparserefine_ros.bags.report import PICTURES, Evaluation, write_json
from sparserefine_ros.image_messages import ImageError, image_to_rgb
from sparserefine_ros.msg import ClassInfo, SegmentationStats

_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_LABEL_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)  # labels come in bursts
_LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class EvaluatorNode(Node):
    def __init__(self) -> None:
        super().__init__("sparserefine_evaluator")
        describe = {
            "label_topic": ("labels", "Ground-truth topic: mono8 train ids, stamped like images."),
            "json": ("", "Summary JSON to write at the end (required)."),
            "report_dir": ("", "Report folder to create; empty: beside the JSON, <name>_report."),
            "max_idle_s": (0.0, "End this long after the last output; 0: only on Ctrl-C."),
        }
        for name, (default, text) in describe.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=text))
        value = {name: self.get_parameter(name).value for name in describe}
        if not value["json"]:
            raise ValueError("parameter 'json': the summary path is required")
        if value["max_idle_s"] < 0:
            raise ValueError("parameter 'max_idle_s': must be >= 0")
        self.json_path = Path(value["json"])
        self.report_dir = Path(value["report_dir"] or default_report_dir(self.json_path))
        self.max_idle_s = value["max_idle_s"]
        self.done = Future()
        self.evaluation: Evaluation | None = None
        self.class_names: list[str] | None = None
        self.labels: dict[int, np.ndarray] = {}
        self.outputs: dict[int, np.ndarray] = {}
        self.stats: dict[int, SegmentationStats] = {}
        self.overlays: dict[int, np.ndarray] = {}
        self.scored: set[int] = set()
        self.labels_without_output = 0
        self.last_output = time.monotonic()
        self.create_subscription(ClassInfo, "class_info", self._on_class_info, _LATCHED)
        self.create_subscription(Image, "segmentation", self._on_segmentation, _QOS)
        self.create_subscription(SegmentationStats, "segmentation_stats", self._on_stats, _QOS)
        self.create_subscription(Image, value["label_topic"], self._on_label, _LABEL_QOS)
        self._overlay = self.create_subscription(Image, "overlay", self._on_overlay, _QOS)
        if self.max_idle_s > 0:
            self.create_timer(min(0.5, self.max_idle_s), self._check_idle)
        self.get_logger().info(
            f"evaluating {self.get_namespace()} against {value['label_topic']}; "
            f"report: {self.json_path}, {self.report_dir}"
        )

    def _on_class_info(self, msg: ClassInfo) -> None:
        if self.class_names is None:  # the node's latched table: its outputs will reach us too
            self.get_logger().info(f"receiving the node's outputs ({len(msg.names)} classes)")
        self.class_names = list(msg.names)
        self._match()

    def _on_label(self, msg: Image) -> None:
        try:
            self.labels[stamp_ns(msg.header)] = mono8_array(msg)
        except ImageError as error:
            self.get_logger().warning(f"ignored a label: {error}", throttle_duration_sec=5.0)
            return
        self._match()

    def _on_segmentation(self, msg: Image) -> None:
        self.last_output = time.monotonic()
        self.outputs[stamp_ns(msg.header)] = mono8_array(msg)
        self._match()

    def _on_stats(self, msg: SegmentationStats) -> None:
        self.last_output = time.monotonic()
        self.stats[stamp_ns(msg.header)] = msg
        self._match()

    def _on_overlay(self, msg: Image) -> None:
        if self._overlay is None:  # a message already in flight when the pictures were done
            return
        self.overlays[stamp_ns(msg.header)] = image_to_rgb(msg)
        self._add_pictures()

    def _add_pictures(self) -> None:
        """An overlay joins the report once its frame is scored: the topics arrive in any order."""
        if self.evaluation is None:
            return
        for stamp in sorted(self.overlays):
            if stamp in self.scored and len(self.evaluation.pictures) < PICTURES:
                self.evaluation.add_picture(stamp, self.overlays.pop(stamp))
        if len(self.evaluation.pictures) >= PICTURES:  # enough: stop costing the node overlays
            self.destroy_subscription(self._overlay)
            self._overlay = None
            self.overlays.clear()

    def _match(self, final: bool = False) -> None:
        """Score every frame with output and stats whose label is in, and frames older than
        one so scored (their label would have come first: none will). ``final``: all."""
        if self.class_names is None:
            return
        complete = [s for s in self.outputs if s in self.stats]
        labelled = [s for s in complete if s in self.labels]
        newest = None if final else max(labelled, default=None)
        for stamp in sorted(complete):
            if final or stamp in self.labels or (newest is not None and stamp < newest):
                self._score(stamp)
        if newest is not None or final:
            stale = [s for s in self.labels if final or s < newest]
            self.labels_without_output += len(stale)
            for stamp in stale:
                del self.labels[stamp]

    def _score(self, stamp: int) -> None:
        classes, stats = self.outputs.pop(stamp), self.stats.pop(stamp)
        label = self.labels.pop(stamp, None)
        if label is not None and label.shape != classes.shape:
            self.get_logger().warning(
                f"label stamped {stamp} is {label.shape[1]}x{label.shape[0]}, the output "
                f"{classes.shape[1]}x{classes.shape[0]}: frame scored without it",
                throttle_duration_sec=5.0,
            )
            label = None
        if self.evaluation is None:
            self.evaluation = Evaluation(
                self.class_names,
                ("sparserefine",),
                {
                    "source": f"live topics in {self.get_namespace()}",
                    # float32 in the message: rounded back to the value that was set
                    "scale": round(stats.dense_width / stats.input_width, 6),
                    "tau": round(stats.entropy_threshold, 6),
                    "max_fraction": None
                    if stats.max_selected_fraction >= 1.0
                    else round(stats.max_selected_fraction, 6),
                },
            )
        self.evaluation.add(
            stamp,
            {"sparserefine": classes},
            {"sparserefine": stats.inference_ms},
            stats.selected_pixels,
            label,
        )
        self.scored.add(stamp)
        self._add_pictures()

    def _check_idle(self) -> None:
        if self.evaluation is not None and time.monotonic() - self.last_output > self.max_idle_s:
            self.done.set_result(True)

    def finish(self) -> int:
        """Score what is pending and write the summary and report; 1 if there was nothing."""
        self._match(final=True)
        if self.evaluation is None:
            self.get_logger().error("no frames with outputs received: nothing written")
            return 1
        summary = self.evaluation.summary()
        summary["labels_without_output"] = self.labels_without_output
        try:
            with staged(self.json_path) as json_scratch, staged(self.report_dir) as folder:
                self.evaluation.write(folder, summary)
                write_json(json_scratch, summary)
        except (BagError, OSError) as error:
            self.get_logger().error(f"cannot write the report: {error}")
            return 1
        miou = summary["miou"]["sparserefine"]
        self.get_logger().info(
            f"{summary['frames']} frames ({summary['labelled_frames']} labelled), mIoU "
            f"{'n/a' if miou is None else f'{miou:.2f}'}, inference p50 "
            f"{summary['latency_ms']['p50']:.1f} ms; wrote {self.json_path} and {self.report_dir}"
        )
        return 0


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv)
    node = None
    code = 0
    try:
        node = EvaluatorNode()
        rclpy.spin_until_future_complete(node, node.done)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as error:
        rclpy.logging.get_logger("sparserefine_evaluator").fatal(f"cannot start: {error}")
        return 2
    finally:
        if node is not None:
            code = node.finish()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
