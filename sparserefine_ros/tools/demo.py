"""`sparserefine demo`: the whole product on a generated drive, no camera, GPU or ROS install.

Renders a short drive, starts sparserefine_node in its own process, publishes the frames as a
camera stream over real ROS 2 topics, records what the node publishes, and writes pictures and
a summary (throughput, latency, selected share, mIoU against the generated labels).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

DEMO_SEED = 7
PICTURES = 3  # frames saved as overlay / entropy PNGs
ZOOMS = 3  # crops where refinement changed the most labelled pixels for the better
ZOOM_SIZE = 192  # full-resolution pixels on a side of a zoomed crop


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the node on a generated drive over real ROS 2 topics",
        description=__doc__,
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument("--model", default="", help="model name or checkpoint (default model)")
    parser.add_argument("--frames", type=int, default=12, help="frames in the drive")
    parser.add_argument("--rate", type=float, default=1.0, help="camera rate in Hz")
    parser.add_argument("--size", default="2048x1024", help="image size WxH")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.set_defaults(func=run)


def run(args) -> int:
    from sparserefine_ros.tools.arguments import parse_size

    size = parse_size(args.size)
    if args.frames < 1 or args.rate <= 0:
        print("error: --frames must be >= 1 and --rate > 0", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # Before rclpy starts: a private domain on this machine, and the large-data transport that
    # megapixel frames need (see README, "Large images").
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    frames, labels = _render_drive(args.out / "drive", args.frames, size)
    recording = _stream_through_node(args, frames)
    summary = _summarise(args, frames, labels, recording)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary, args.out)
    return 0


def _render_drive(folder: Path, count: int, size: tuple[int, int]):
    from sparserefine_ros.data.cityscapes import find_samples, read_image, read_label
    from sparserefine_ros.data.writer import write_drive

    print(f"[1/3] rendering a {count}-frame drive at {size[0]}x{size[1]}")
    write_drive(folder, frames=count, seed=DEMO_SEED, size=size, split="demo")
    samples = find_samples(folder, "demo")
    return [read_image(s.image) for s in samples], [read_label(s) for s in samples]


class _Recorder:
    """This process's ROS side: the camera publisher and the subscriptions to the node."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from sparserefine_ros.msg import SegmentationStats

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("sparserefine_demo_camera", context=self.context)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.camera = self.node.create_publisher(Image, "/demo/image", qos)
        self.lock = threading.Lock()
        self.outputs: dict[str, dict[int, object]] = {}
        for topic, msg_type in (
            ("segmentation", Image),
            ("overlay", Image),
            ("entropy", Image),
            ("segmentation_stats", SegmentationStats),
        ):
            store = self.outputs.setdefault(topic, {})
            self.node.create_subscription(
                msg_type, f"/demo/{topic}", lambda m, s=store: self._keep(s, m), 10
            )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:  # close() shut the context down
            pass

    def _keep(self, store: dict, msg) -> None:
        with self.lock:
            store[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = msg

    def received(self, topic: str) -> dict:
        with self.lock:
            return dict(self.outputs[topic])

    def close(self) -> None:
        import rclpy

        # Shutting the context down first ends the spin loop; then nothing uses the node.
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()


def _stream_through_node(args, frames: list[np.ndarray]) -> dict:
    from tqdm import tqdm

    from sparserefine_ros.ros.image_codec import to_image_msg

    print("[2/3] starting sparserefine_node and streaming the drive to it")
    command = [
        sys.executable, "-m", "sparserefine_ros.ros.node", "--ros-args", "-r", "__ns:=/demo",
        "-p", f"model:={args.model or _default_model()}", "-p", f"device:={args.device}",
    ]  # fmt: skip
    node = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(node.stdout), daemon=True).start()
    recorder = _Recorder()
    try:
        _wait(lambda: recorder.camera.get_subscription_count() > 0 and _ready(log), node, log)
        _wait(lambda: all(recorder.node.count_publishers(f"/demo/{t}") for t in recorder.outputs),
              node, log)  # fmt: skip
        _handshake(recorder, frames[0], node, log)
        sent: dict[int, int] = {}  # stamp -> frame index
        start = time.monotonic()
        for index, rgb in enumerate(tqdm(frames, desc="camera", unit="frame")):
            time.sleep(max(0.0, start + index / args.rate - time.monotonic()))
            msg = to_image_msg(rgb, "rgb8", _header(recorder.node))
            sent[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = index
            recorder.camera.publish(msg)
        # The node serves the newest frame last; give it time to finish it.
        _wait(lambda: max(sent) in recorder.received("segmentation_stats"), node, log, 120.0)
        duration = time.monotonic() - start
        return {
            "sent": sent,
            "duration_s": duration,
            **{
                topic: {stamp: m for stamp, m in recorder.received(topic).items() if stamp in sent}
                for topic in recorder.outputs
            },
        }
    finally:
        recorder.close()
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            node.wait(timeout=30)


def _handshake(recorder: _Recorder, rgb: np.ndarray, node, log, timeout: float = 120.0) -> None:
    """Send a first frame, once a second, until the node's outputs for it arrive.

    The node skips frames while none of its outputs has a subscriber, and discovery can show the
    node this process's subscriptions seconds after this process sees the node's publishers: the
    drive's first frames would be skipped. The frame that comes back also warms the model up
    (its first call allocates), as a camera's first second would; it is not scored.
    """
    from sparserefine_ros.ros.image_codec import to_image_msg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = to_image_msg(rgb, "rgb8", _header(recorder.node))
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        recorder.camera.publish(msg)

        def back(stamp=stamp) -> bool:
            return all(stamp in recorder.received(topic) for topic in recorder.outputs)

        if _wait(back, node, log, 1.0, fail=False):
            return
    raise SystemExit(f"sparserefine_node served no frame in {timeout:.0f} s:\n{''.join(log)}")


def _ready(log: list[str]) -> bool:
    return any("serving" in line for line in log)


def _wait(
    condition, node: subprocess.Popen, log: list[str], timeout: float = 120.0, fail: bool = True
) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (exit, or False when not
    ``fail``); exit if the node's process ends."""
    deadline = time.monotonic() + timeout
    while not condition():
        if node.poll() is not None:
            raise SystemExit(f"sparserefine_node exited ({node.returncode}):\n{''.join(log)}")
        if time.monotonic() > deadline:
            if not fail:
                return False
            raise SystemExit(f"timed out waiting for sparserefine_node:\n{''.join(log)}")
        time.sleep(0.05)
    return True


def _header(node):
    from std_msgs.msg import Header

    return Header(stamp=node.get_clock().now().to_msg(), frame_id="demo_camera")


def _summarise(args, frames, labels, recording) -> dict:
    from sparserefine_ros.evaluation.metrics import SegmentationMetric
    from sparserefine_ros.models import init_model
    from sparserefine_ros.visualization import colorize, entropy_heatmap

    print("[3/3] scoring the node's output and writing pictures")
    pipeline = init_model(args.model or _default_model(), device=args.device)
    num_classes = len(pipeline.class_names)
    metric_node, metric_dense = SegmentationMetric(num_classes), SegmentationMetric(num_classes)
    served = sorted(set(recording["segmentation_stats"]) & set(recording["segmentation"]))
    height, width = frames[0].shape[:2]
    # Pictures come from frames whose every output arrived.
    pictured = [s for s in served if s in recording["overlay"] and s in recording["entropy"]]
    for stamp in served:
        index = recording["sent"][stamp]
        segmentation = recording["segmentation"][stamp]
        classes = np.frombuffer(segmentation.data, np.uint8).reshape(height, width)
        metric_node.update(classes, labels[index])
        if stamp in pictured[:PICTURES]:
            overlay = np.frombuffer(recording["overlay"][stamp].data, np.uint8)
            _save(args.out / f"overlay_{index:03d}.png", overlay.reshape(height, width, 3))
            entropy = np.frombuffer(recording["entropy"][stamp].data, np.float32)
            heat = entropy_heatmap(
                entropy.reshape(height, width), np.log(len(pipeline.class_names))
            )
            _save(args.out / f"entropy_{index:03d}.png", heat)
    # The low-resolution dense prediction is not a node output: compute it here, same model.
    candidates = []
    for stamp in served:
        index = recording["sent"][stamp]
        dense = pipeline(_batch(frames[index])).dense_classes[0].numpy()
        metric_dense.update(dense, labels[index])
        refined = np.frombuffer(recording["segmentation"][stamp].data, np.uint8)
        candidates += _zoom_windows(index, dense, refined.reshape(height, width), labels[index])
    zooms = sorted(candidates, key=lambda c: -c[0])[:ZOOMS]
    for rank, (_, index, y, x, side, dense, refined) in enumerate(zooms):
        window = (slice(y, y + side), slice(x, x + side))
        panels = [frames[index][window]] + [
            colorize(m[window], pipeline.palette) for m in (dense, refined, labels[index])
        ]
        titles = ["image", "dense, low resolution", "SparseRefine", "ground truth"]
        _save(args.out / f"zoom_{rank}.png", _grid(panels, titles, width=384))
    first = recording["sent"][served[0]]
    result = pipeline(_batch(frames[first]))
    node_classes = np.frombuffer(recording["segmentation"][served[0]].data, np.uint8)
    panels = [
        frames[first],
        colorize(result.dense_classes[0].numpy(), pipeline.palette),
        colorize(node_classes.reshape(height, width), pipeline.palette),
        colorize(labels[first], pipeline.palette),
    ]
    titles = ["image", "dense, low resolution", "SparseRefine", "ground truth"]
    _save(args.out / "side_by_side.png", _grid(panels, titles))
    stats = [recording["segmentation_stats"][s] for s in served]
    latencies = np.array([s.latency_ms for s in stats])
    scores, dense_scores = metric_node.compute(), metric_dense.compute()
    return {
        "frames_sent": len(recording["sent"]),
        "frames_served": len(served),
        "camera_rate_hz": args.rate,
        "output_rate_hz": len(served) / recording["duration_s"],
        "latency_ms": {
            p: float(np.percentile(latencies, q))
            for p, q in (("p50", 50), ("p90", 90), ("p99", 99))
        },
        "inference_ms_median": float(np.median([s.inference_ms for s in stats])),
        "selected_fraction_mean": float(np.mean([s.selected_fraction for s in stats])),
        "image_size": [width, height],
        "dense_size": [stats[0].dense_width, stats[0].dense_height],
        "miou": {
            "sparserefine": 100.0 * scores["all"].miou,
            "dense_low": 100.0 * dense_scores["all"].miou,
        },
        "boundary_miou": {
            "sparserefine": 100.0 * scores["boundary"].miou,
            "dense_low": 100.0 * dense_scores["boundary"].miou,
        },
        "gain": {
            "miou": 100.0 * (scores["all"].miou - dense_scores["all"].miou),
            "boundary_miou": 100.0 * (scores["boundary"].miou - dense_scores["boundary"].miou),
        },
        "zooms": [
            {"frame": index, "top": y, "left": x, "net_pixels_fixed": int(net)}
            for net, index, y, x, _, _, _ in zooms
        ],
        "model": args.model or _default_model(),
        "device": args.device,
    }


def _default_model() -> str:
    from sparserefine_ros.models import DEFAULT_MODEL

    return DEFAULT_MODEL


def _batch(rgb: np.ndarray):
    import torch

    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def _zoom_windows(index: int, dense: np.ndarray, refined: np.ndarray, label: np.ndarray):
    """The frame's best square window of ``ZOOM_SIZE`` (less on a smaller frame): (net pixels
    refinement got right, frame index, top, left, side, dense map, refined map), or nothing
    where refinement changed nothing for the better. Net = pixels turned right minus pixels
    turned wrong (labelled pixels only)."""
    valid = label != 255
    gain = ((refined == label) & (dense != label) & valid).astype(np.float32)
    gain -= ((refined != label) & (dense == label) & valid).astype(np.float32)
    height, width = label.shape
    side = min(ZOOM_SIZE, height, width)
    summed = cv2.boxFilter(gain, -1, (side, side), normalize=False, anchor=(0, 0),
                           borderType=cv2.BORDER_CONSTANT)  # fmt: skip
    summed = summed[: height - side + 1, : width - side + 1]
    y, x = np.unravel_index(int(np.argmax(summed)), summed.shape)
    best = float(summed[y, x])
    return [(best, index, int(y), int(x), side, dense, refined)] if best > 0 else []


def _grid(panels: list[np.ndarray], titles: list[str], width: int = 512) -> np.ndarray:
    """Panels side by side, ``width`` px wide each (nearest: pixels stay visible), captioned."""
    tiles = []
    for panel, title in zip(panels, titles, strict=True):
        tile = cv2.resize(panel, (width, width * panel.shape[0] // panel.shape[1]),
                          interpolation=cv2.INTER_NEAREST)  # fmt: skip
        bar = np.full((28, width, 3), 255, np.uint8)
        cv2.putText(bar, title, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([bar, tile]))
    return np.hstack(tiles)


def _save(path: Path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))


def _print_summary(summary: dict, out: Path) -> None:
    latency, miou, boundary = summary["latency_ms"], summary["miou"], summary["boundary_miou"]
    gain = summary["gain"]
    print(
        f"\nSparseRefine demo ({summary['model']}, {summary['device']}, "
        f"{summary['image_size'][0]}x{summary['image_size'][1]}, dense at "
        f"{summary['dense_size'][0]}x{summary['dense_size'][1]}):\n"
        f"  frames: {summary['frames_sent']} sent at {summary['camera_rate_hz']:g} Hz, "
        f"{summary['frames_served']} served ({summary['output_rate_hz']:.2f} frames/s)\n"
        f"  latency (stamp to output): p50 {latency['p50']:.0f} ms, p90 {latency['p90']:.0f} ms, "
        f"p99 {latency['p99']:.0f} ms; inference median {summary['inference_ms_median']:.0f} ms\n"
        f"  refined pixels: {100 * summary['selected_fraction_mean']:.1f} % per frame\n"
        f"  mIoU: SparseRefine {miou['sparserefine']:.1f}, dense at low resolution "
        f"{miou['dense_low']:.1f} (near class edges: {boundary['sparserefine']:.1f} vs "
        f"{boundary['dense_low']:.1f})\n"
        f"  SparseRefine's gain over the low-resolution prediction: {gain['miou']:+.2f} mIoU, "
        f"{gain['boundary_miou']:+.2f} near class edges\n"
        f"  zoomed crops where refinement fixed the most pixels: "
        f"{len(summary['zooms'])} (zoom_*.png)\n"
        f"  pictures and summary.json in {out}/"
    )
