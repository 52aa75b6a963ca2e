"""sparserefine_node: SparseRefine segmentation of one or more camera streams.

Thin by design: parameters (parameters.py), cameras (camera.py), the device (device.py), health
(health.py), image conversion (image_messages.py, image_codec.py) and the method
(sparserefine_ros.method, via sparserefine_ros.models) live elsewhere; this file wires topics to
the pipeline. Image callbacks only keep the newest frame of each camera; one worker thread runs
the model on whatever is waiting, batching cameras whose frames share a size.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections import defaultdict, deque

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import ColorRGBA

from sparserefine_ros.allocator import retain_freed_memory
from sparserefine_ros.image_messages import ImageError, compressed_to_rgb, image_to_rgb
from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.method.streaming import StreamedPipeline
from sparserefine_ros.models import DEFAULT_MODEL, init_model
from sparserefine_ros.msg import ClassInfo, SegmentationStats
from sparserefine_ros.ros.camera import Camera
from sparserefine_ros.ros.device import EXIT_DEVICE_LOST, class_id_format, device_lost, torch_device
from sparserefine_ros.ros.health import PeriodCounts, camera_health
from sparserefine_ros.ros.image_codec import output_messages
from sparserefine_ros.ros.parameters import (
    ParameterError,
    check_tunable,
    declare_and_read,
)
from sparserefine_ros.segmentation_stats import segmentation_stats_fields

_WARN_THROTTLE_S = 5.0
_LEVELS = {"OK": DiagnosticStatus.OK, "WARN": DiagnosticStatus.WARN,
           "ERROR": DiagnosticStatus.ERROR}  # fmt: skip


class SparseRefineNode(Node):
    def __init__(self) -> None:
        super().__init__("sparserefine_node")
        self.config = declare_and_read(self)
        scale = self.config.dense_scale
        self.pipeline = init_model(
            self.config.model or DEFAULT_MODEL,
            device=torch_device(self.config.device),
            compile_mode=self.config.compile_mode,
            fixed_stage=self.config.fixed_stage,
            **({} if scale is None else {"scale": scale}),
        )
        refiner = self.pipeline.model
        self._calibrated = {"entropy_threshold": refiner.tau,
                            "max_selected_fraction": refiner.max_fraction}  # fmt: skip
        self._tuned = {
            "entropy_threshold": self.config.entropy_threshold,
            "max_selected_fraction": self.config.max_selected_fraction,
        }
        self._apply_selection(self._tuned)
        self.overlay_alpha = self.config.overlay_alpha
        self.runner = StreamedPipeline(
            self.pipeline, max_in_flight=2, precision=self.config.precision
        )
        self.palette = self._palette()
        self.class_ids = class_id_format(len(self.pipeline.class_names))
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self.cameras = [
            Camera(self, name, self.config, self._on_frame) for name in self.config.cameras or ("",)
        ]
        class_info = self._class_info()
        for camera in self.cameras:
            camera.class_info.publish(class_info)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)
        self.exit_code = 0
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker = threading.Thread(target=self._serve, name="sparserefine", daemon=True)
        self._worker.start()
        refiner = self.pipeline.model
        self.get_logger().info(
            f"serving {', '.join(c.topic for c in self.cameras)} with model "
            f"'{self.config.model or DEFAULT_MODEL}' on {self.pipeline.device}: dense scale "
            f"{refiner.scale}, tau {refiner.tau}, budget {refiner.max_fraction}"
        )
        if self.config.cameras and self.resolve_topic_name("image") != self._own("image"):
            self.get_logger().warning(
                "'image' is remapped but the parameter 'cameras' is set: the node subscribes to "
                "<camera>/image for each camera; remap those instead"
            )

    def _apply_selection(self, tuned: dict) -> None:
        """Set tau and the budget of the live pipeline; None: the model's calibrated value."""
        tau, fraction = (
            self._calibrated[name] if tuned[name] is None else tuned[name]
            for name in ("entropy_threshold", "max_selected_fraction")
        )
        self.pipeline.model.tune(tau, fraction)

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Run-time changes (``ros2 param set``): tunable parameters only, each checked; all or
        nothing."""
        try:
            checked = {p.name: check_tunable(p.name, p.value) for p in parameters}
        except ParameterError as error:
            return SetParametersResult(successful=False, reason=str(error))
        selection = {**self._tuned, **{k: v for k, v in checked.items() if k in self._tuned}}
        self._apply_selection(selection)
        self._tuned = selection
        self.overlay_alpha = checked.get("overlay_alpha", self.overlay_alpha)
        changed = ", ".join(f"{p.name} {p.value}" for p in parameters)
        self.get_logger().info(f"set {changed}")
        return SetParametersResult(successful=True)

    def _palette(self) -> np.ndarray:
        num_classes = len(self.pipeline.class_names)
        if not self.config.class_colors:
            return np.asarray(self.pipeline.palette, dtype=np.uint8)
        colors = np.asarray(self.config.class_colors, dtype=np.uint8).reshape(-1, 3)
        if len(colors) != num_classes:
            raise ParameterError(
                "class_colors", f"has {len(colors)} colours, the model has {num_classes} classes"
            )
        return colors

    def _class_info(self) -> ClassInfo:
        info = ClassInfo()
        info.header.stamp = self.get_clock().now().to_msg()
        info.ids = list(range(len(self.pipeline.class_names)))
        info.names = list(self.pipeline.class_names)
        info.colors = [
            ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)
            for r, g, b in self.palette.tolist()
        ]
        return info

    def _own(self, name: str) -> str:
        """``name`` in this node's namespace, as it resolves without remapping."""
        namespace = self.get_namespace().rstrip("/")
        return f"{namespace}/{name}"

    def _on_frame(self, camera: Camera, msg) -> None:
        with self._lock:
            camera.counters.received += 1
            camera.counters.period.received += 1
            if camera.pending is not None:
                camera.counters.replaced += 1
            camera.pending = msg
            self._lock.notify()

    def _serve(self) -> None:
        """Worker loop, supervised: an error in one batch is logged, counted and reported and
        the loop goes on; an error that leaves the device unusable ends the process with
        ``EXIT_DEVICE_LOST``; errors while shutting down (the context is gone) end it quietly."""
        in_flight: deque = deque()  # (StreamedResult, [(camera, header, rgb), ...])
        while not self._stop.is_set():
            try:
                self._serve_once(in_flight)
            except Exception as error:  # the worker must outlive any one batch
                in_flight.clear()
                if self._stop.is_set() or not self.context.ok():
                    return
                if device_lost(error):
                    self._lose_device(error)
                    return
                self.get_logger().error(
                    f"worker: {type(error).__name__}: {error}",
                    throttle_duration_sec=_WARN_THROTTLE_S,
                )

    def _serve_once(self, in_flight: deque) -> None:
        """Take the waiting frames, submit them, publish what is done. On a GPU the newest batch
        stays in flight while newer frames wait, so its refinement overlaps their dense pass."""
        overlap = self.runner.device.type == "cuda"
        with self._lock:
            self._lock.wait_for(
                lambda: self._stop.is_set() or any(c.pending is not None for c in self.cameras),
                0.0 if in_flight else 0.2,
            )
            frames = [(c, c.pending) for c in self.cameras if c.pending is not None]
            for camera, _ in frames:
                camera.pending = None
        for group in self._decode(frames):
            batch = torch.from_numpy(np.stack([rgb for _, _, rgb in group])).permute(0, 3, 1, 2)
            in_flight.append((self.runner.submit(batch), group))
        keep = 1 if overlap and frames else 0
        while len(in_flight) > keep:
            self._publish_batch(*in_flight.popleft())

    def _decode(self, frames) -> list[list]:
        """Frames that someone wants outputs of, as RGB arrays grouped by size (one batch each)."""
        by_size = defaultdict(list)
        for camera, msg in frames:
            if not camera.has_subscribers():
                with self._lock:
                    camera.counters.idle += 1
                    camera.counters.period.idle += 1
                continue
            try:
                rgb = (
                    compressed_to_rgb(msg)
                    if isinstance(msg, CompressedImage)
                    else image_to_rgb(msg)
                )
            except ImageError as error:
                self._reject(camera, str(error))
                continue
            by_size[rgb.shape].append((camera, msg.header, rgb))
        return list(by_size.values())

    def _publish_batch(self, handle, group) -> None:
        try:
            result = handle.result()
        except Exception as error:  # the model's fault (out of memory, wrong output): drop
            if device_lost(error):
                raise
            reason = f"inference failed: {type(error).__name__}: {error}"
            for camera, _, _ in group:
                with self._lock:
                    camera.counters.failed += 1
                    camera.counters.period.failed += 1
                    camera.counters.last_error = reason
            self.get_logger().error(
                f"{', '.join(c.name for c, _, _ in group)}: {reason}",
                throttle_duration_sec=_WARN_THROTTLE_S,
            )
            return
        for index, (camera, header, rgb) in enumerate(group):
            self._publish(camera, header, rgb, result, index)

    def _lose_device(self, error: Exception) -> None:
        self.get_logger().fatal(
            f"the device failed and cannot be used again in this process: {error}; exiting "
            f"with status {EXIT_DEVICE_LOST} so that a supervisor (launch respawn) restarts it"
        )
        self.exit_code = EXIT_DEVICE_LOST
        self._stop.set()
        self.context.try_shutdown()  # ends the spin in the main thread

    def _reject(self, camera: Camera, reason: str) -> None:
        with self._lock:
            camera.counters.rejected += 1
            camera.counters.period.rejected += 1
            camera.counters.last_error = reason
        self.get_logger().warning(
            f"{camera.name}: dropped frame: {reason}", throttle_duration_sec=_WARN_THROTTLE_S
        )

    def _publish(self, camera: Camera, header, rgb: np.ndarray, result, index: int) -> None:
        dtype, encoding = self.class_ids
        publishers = camera.outputs
        wanted = [name for name, pub in publishers.items() if pub.get_subscription_count()]
        messages = output_messages(
            wanted, header, rgb, result.classes[index].numpy().astype(dtype),
            lambda: result.entropy[index].numpy(), lambda: result.refine_mask[index].numpy(),
            self.palette, self.overlay_alpha, encoding,
        )  # fmt: skip
        for name, message in messages.items():
            publishers[name].publish(message)
        latency_ms = self._latency_ms(header)
        if camera.stats.get_subscription_count():
            fields = segmentation_stats_fields(result, index, self.pipeline.model)
            camera.stats.publish(SegmentationStats(header=header, latency_ms=latency_ms, **fields))
        with self._lock:
            camera.counters.processed += 1
            camera.counters.period.processed += 1
            if math.isfinite(latency_ms):
                camera.counters.period_latency_ms.append(latency_ms)

    def _latency_ms(self, header) -> float:
        """Image stamp to now on the node's clock; NaN for an unstamped image, or under sim time
        before the first /clock message (the clock still reads 0)."""
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        now = self.get_clock().now().nanoseconds
        if stamp == 0 or now == 0:
            return math.nan
        return (now - stamp) / 1e6

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        period = self.config.diagnostics_period
        for camera in self.cameras:
            with self._lock:
                counters = camera.counters
                this_period, latencies = counters.period, counters.period_latency_ms
                counters.period, counters.period_latency_ms = PeriodCounts(), []
                snapshot = (counters.received, counters.processed, counters.replaced,
                            counters.rejected, counters.failed, counters.idle,
                            counters.last_error)  # fmt: skip
            received, processed, replaced, rejected, failed, idle, last_error = snapshot
            rate = this_period.processed / period
            level, message = camera_health(this_period, rate, last_error)
            values = {
                "frames_received": received,
                "frames_processed": processed,
                "frames_replaced_by_newer": replaced,
                "frames_rejected": rejected,
                "frames_failed": failed,
                "frames_skipped_no_subscribers": idle,
                "rate_hz": f"{rate:.2f}",
                "latency_ms_mean": f"{np.mean(latencies):.1f}" if latencies else "n/a",
                "device": str(self.pipeline.device),
                "last_error": last_error,
            }
            array.status.append(
                DiagnosticStatus(
                    level=_LEVELS[level],
                    name=f"{self.get_name()}: {camera.name}",
                    message=message,
                    hardware_id=str(self.pipeline.device),
                    values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
                )
            )
        self._diagnostics.publish(array)

    def stop(self) -> None:
        """Stop the worker; safe to call twice."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._worker.join(timeout=10.0)


def main(argv: list[str] | None = None) -> int:
    """0 after SIGINT or SIGTERM, 2 if start-up fails, EXIT_DEVICE_LOST if the device fails."""
    retain_freed_memory()
    rclpy.init(args=argv)
    node = None
    try:
        node = SparseRefineNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ParameterError, CheckpointError) as error:
        rclpy.logging.get_logger("sparserefine_node").fatal(f"cannot start: {error}")
        return 2
    finally:
        # A second SIGINT (launch forwards one to its children) must not cut the drain short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return node.exit_code


if __name__ == "__main__":
    sys.exit(main())
