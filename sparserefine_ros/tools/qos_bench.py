"""``sparserefine qos-bench``: time to the first output, and outputs delivered, over real DDS.

For each cell of the grid (node input reliability x camera publisher reliability x number of
output subscriptions x Fast DDS transports) it starts ``sparserefine_node`` and a camera client
as two processes with the same transport setting. The client subscribes to that many outputs
(segmentation, segmentation_color, entropy, refine_mask, overlay, then again from the first),
publishes ``--size`` bgr8 frames every ``--period`` seconds for ``--duration`` seconds once it
has matched the node, and reports the seconds from its first frame to the first
``segmentation`` output and how many frames got one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sparserefine_ros.tools.arguments import parse_size

OUTPUTS = ("segmentation", "segmentation_color", "entropy", "refine_mask", "overlay")
TRANSPORTS = {"default": None, "large_data": "LARGE_DATA"}


def register(subparsers) -> None:
    parser = subparsers.add_parser("qos-bench", help="first output and delivery over real DDS",
                                   description=__doc__)  # fmt: skip
    _arguments(parser)
    parser.set_defaults(func=run)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node-reliability", nargs="+", default=["best_effort", "best_available"],
                        help="the node's `reliability` parameter values to try")  # fmt: skip
    parser.add_argument("--publisher", nargs="+", default=["reliable", "best_effort"],
                        help="camera publisher reliabilities to try")  # fmt: skip
    parser.add_argument("--subscribers", nargs="+", type=int, default=[1, 4, 7],
                        help="output subscriptions of the client")  # fmt: skip
    parser.add_argument("--transports", nargs="+", choices=sorted(TRANSPORTS),
                        default=["large_data"], help="Fast DDS builtin transports")  # fmt: skip
    parser.add_argument("--size", type=parse_size, default=(2048, 1024), help="WIDTHxHEIGHT")
    parser.add_argument("--period", type=float, default=0.5, help="seconds between frames")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of frames per cell, from the match")  # fmt: skip
    parser.add_argument("--model", default="", help="model of the node (default model)")
    parser.add_argument("--json", type=Path, help="write the table here")
    # One cell's camera client, run by the grid in its own process.
    parser.add_argument("--client", help=argparse.SUPPRESS)


def run(args) -> int:
    if args.client:
        return _client(args)
    rows = []
    grid = itertools.product(args.transports, args.node_reliability, args.publisher,
                             args.subscribers)  # fmt: skip
    for index, (transport, node_qos, publisher, subscribers) in enumerate(grid):
        env = {**os.environ, "ROS_DOMAIN_ID": str(100 + index % 100),
               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}  # fmt: skip
        env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
        if TRANSPORTS[transport]:
            env["FASTDDS_BUILTIN_TRANSPORTS"] = TRANSPORTS[transport]
        node_args = ["-p", f"reliability:={node_qos}"]
        if args.model:
            node_args += ["-p", f"model:={args.model}"]
        node = subprocess.Popen(
            [sys.executable, "-m", "sparserefine_ros.ros.node", "--ros-args", *node_args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            cell = json.dumps({"publisher": publisher, "subscribers": subscribers})
            client = subprocess.run(
                [sys.executable, "-m", "sparserefine_ros.tools.cli", "qos-bench", "--client",
                 cell, "--size", f"{args.size[0]}x{args.size[1]}", "--period",
                 str(args.period), "--duration", str(args.duration)],
                env=env, capture_output=True, text=True, timeout=args.duration + 120,
            )  # fmt: skip
            lines = client.stdout.strip().splitlines()
            if client.returncode or not lines:
                raise RuntimeError(f"camera client failed:\n{client.stderr[-2000:]}")
            result = json.loads(lines[-1])
        finally:
            node.send_signal(2)
            node.wait(timeout=30)
        row = {"transport": transport, "node_reliability": node_qos, "publisher": publisher,
               "subscribers": subscribers, **result}  # fmt: skip
        rows.append(row)
        first = "-" if row["first_output_s"] is None else f"{row['first_output_s']:.1f} s"
        print(f"{transport:<10} node {node_qos:<14} camera {publisher:<11} {subscribers} "
              f"outputs: first output {first}, {row['served']}/{row['sent']} frames",
              flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        table = {"size": list(args.size), "period_s": args.period,
                 "duration_s": args.duration, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(table, indent=1))
    return 0


def _client(args) -> int:
    """The camera side of one cell; prints its result as the last line (JSON)."""
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    cell = json.loads(args.client)
    rclpy.init()
    node = rclpy.create_node("qos_bench_camera")
    arrivals: dict[int, float] = {}

    def keep(msg) -> None:
        arrivals.setdefault(msg.header.stamp.nanosec, time.monotonic())

    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    for index in range(cell["subscribers"]):  # beyond 5, a second subscription per topic
        topic = OUTPUTS[index % len(OUTPUTS)]
        callback = keep if index == 0 else (lambda msg: None)
        node.create_subscription(Image, topic, callback, reliable)
    camera_qos = QoSProfile(depth=1, reliability=getattr(ReliabilityPolicy,
                                                         cell["publisher"].upper()))  # fmt: skip
    publisher = node.create_publisher(Image, "image", camera_qos)
    width, height = args.size
    frame = Image(height=height, width=width, encoding="bgr8", step=width * 3)
    frame.data = np.random.default_rng(0).integers(0, 256, height * width * 3, np.uint8).tobytes()
    deadline = time.monotonic() + 60.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    sent: dict[int, float] = {}
    start = time.monotonic()
    while time.monotonic() - start < args.duration:
        index = len(sent) + 1
        frame.header.stamp.nanosec = index
        sent[index] = time.monotonic()
        publisher.publish(frame)
        until = sent[index] + args.period
        while time.monotonic() < until:
            rclpy.spin_once(node, timeout_sec=max(0.0, until - time.monotonic()))
    end = time.monotonic() + 3.0  # the last frames' outputs
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    first = min(arrivals.values()) - start if arrivals else None
    print(json.dumps({"first_output_s": first, "sent": len(sent), "served": len(arrivals)}))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0
