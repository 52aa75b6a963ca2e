"""``sparserefine soak``: the node under sustained camera traffic, as a long drive would feed it.

Starts ``sparserefine_node`` (its defaults, or ``--model``/``--device``) and publishes a
generated scene as bgr8 frames at ``--rate`` Hz for ``--duration`` seconds (Fast DDS
LARGE_DATA, a private domain). Every second it reads the node's resident memory; for every
``segmentation`` it gets back, the age of the frame it answers (arrival minus publish time).
A camera faster than inference must cost nothing but skipped frames: the node serves the newest
frame only, so no served frame should be older than two inference periods (the median time
between outputs), and memory should stop growing once warmed up. Not a test: minutes long.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sparserefine_ros.tools.arguments import parse_size

RSS_GROWTH_LIMIT_MB = 50.0
RSS_WINDOW_S = 60.0
AGE_LIMIT_PERIODS = 2.0
# The node's /diagnostics totals the soak reports (its last message before the end).
NODE_COUNTERS = ("frames_received", "frames_processed", "frames_replaced_by_newer")


def register(subparsers) -> None:
    parser = subparsers.add_parser("soak", help="the node under sustained camera traffic",
                                   description=__doc__)  # fmt: skip
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of frames")
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--size", type=parse_size, default=(2048, 1024), help="WIDTHxHEIGHT")
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds excluded from the memory growth and ages")  # fmt: skip
    parser.add_argument("--model", default="", help="model of the node (default model)")
    parser.add_argument("--device", default="cpu", help="device of the node")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.duration <= args.warmup or args.rate <= 0 or args.warmup < 0:
        print("sparserefine soak: error: need --rate > 0 and --duration > --warmup >= 0",
              file=sys.stderr)  # fmt: skip
        return 2
    # Before rclpy starts: the same private domain and transport for the node and this camera.
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    frame = scene(args.size)
    command = [sys.executable, "-m", "sparserefine_ros.ros.node", "--ros-args",
               "-p", f"device:={args.device}"]  # fmt: skip
    if args.model:
        command += ["-p", f"model:={args.model}"]
    node = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(node.stdout), daemon=True).start()
    try:
        result = _drive(args, frame, node, log)
    finally:
        if node.poll() is None:
            node.send_signal(2)
            node.wait(timeout=60)
    result["node_exit_code"] = node.returncode
    _print(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def scene(size: tuple[int, int]):
    """One generated street scene (RGB, ``size`` = width x height)."""
    from sparserefine_ros.data.cityscapes import find_samples, read_image
    from sparserefine_ros.data.writer import write_drive

    with tempfile.TemporaryDirectory() as folder:
        write_drive(folder, frames=1, size=size, split="soak", workers=1)
        return read_image(find_samples(folder, "soak")[0].image)


def _rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), None)
    return None if kb is None else int(kb) / 1024.0


def _drive(args, rgb, node: subprocess.Popen, log: list[str]) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from sparserefine_ros.ros.image_codec import to_image_msg

    rclpy.init()
    client = rclpy.create_node("soak_camera")
    arrivals: dict[int, float] = {}

    def keep(msg) -> None:
        arrivals.setdefault(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec,
                            time.monotonic())  # fmt: skip

    counters: dict[str, int] = {}

    def count(msg) -> None:  # the node's own totals: frames that reached it, frames it served
        for status in msg.status:
            values = {v.key: v.value for v in status.values}
            counters.update({key: int(values[key]) for key in NODE_COUNTERS if key in values})

    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    client.create_subscription(Image, "segmentation", keep, reliable)
    client.create_subscription(DiagnosticArray, "/diagnostics", count, 10)
    camera = client.create_publisher(Image, "image", reliable)
    message = to_image_msg(rgb[..., ::-1], "bgr8", Header(frame_id="soak_camera"))
    deadline = time.monotonic() + 180.0
    while not (camera.get_subscription_count() and any("serving" in line for line in log)):
        if node.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"sparserefine_node did not start:\n{''.join(log)[-3000:]}")
        rclpy.spin_once(client, timeout_sec=0.1)
    sent: dict[int, float] = {}
    rss: list[tuple[float, float]] = []
    start = next_rss = time.monotonic()
    index = 0
    while time.monotonic() - start < args.duration and node.poll() is None:
        due = start + index / args.rate
        rclpy.spin_once(client, timeout_sec=0.0)  # outputs are timed on arrival, even if late
        while (now := time.monotonic()) < due:
            rclpy.spin_once(client, timeout_sec=due - now)
        message.header.stamp = client.get_clock().now().to_msg()
        sent[message.header.stamp.sec * 10**9 + message.header.stamp.nanosec] = time.monotonic()
        camera.publish(message)
        index += 1
        if time.monotonic() >= next_rss:
            rss.append((time.monotonic() - start, _rss_mb(node.pid) or 0.0))
            next_rss += 1.0
    end = time.monotonic() + 5.0  # the last frame's output
    while time.monotonic() < end:
        rclpy.spin_once(client, timeout_sec=0.1)
    client.destroy_node()
    rclpy.try_shutdown()
    return {**_summary(args, sent, arrivals, rss, start), "node_counters": counters}


def _summary(args, sent, arrivals, rss, start) -> dict:
    served = sorted((sent[stamp], arrived) for stamp, arrived in arrivals.items() if stamp in sent)
    warm = [(s, a) for s, a in served if s - start >= args.warmup]
    periods = [b[1] - a[1] for a, b in itertools.pairwise(warm)]
    period = statistics.median(periods) if periods else None
    ages = [a - s for s, a in warm]
    # Resident memory swings by a frame's buffers within each inference (about 100 MB at
    # 2048x1024): growth compares the median of the first and the last RSS_WINDOW_S seconds
    # after warm-up, not two single samples.
    first = [mb for t, mb in rss if args.warmup <= t < args.warmup + RSS_WINDOW_S]
    last = [mb for t, mb in rss if t >= args.duration - RSS_WINDOW_S and t >= args.warmup]
    growth = statistics.median(last) - statistics.median(first) if first and last else None
    oldest = max(ages) if ages else None
    rss_mb = {"after_warmup": None, "end": None, "max": None}
    if first and last:
        rss_mb = {"after_warmup": statistics.median(first), "end": statistics.median(last),
                  "max": max(mb for t, mb in rss if t >= args.warmup)}  # fmt: skip
    return {
        "size": list(args.size),
        "rate_hz": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "sent": len(sent),
        "served": len(served),
        "served_after_warmup": len(warm),
        "inference_period_s": period,
        "age_s": {"median": statistics.median(ages), "max": oldest} if ages else None,
        "oldest_in_periods": oldest / period if period else None,
        "older_than_limit": sum(age > AGE_LIMIT_PERIODS * period for age in ages)
        if period
        else None,
        "rss_mb": rss_mb,
        "rss_growth_mb": growth,
        "rss_trace": [[round(t, 1), round(mb, 1)] for t, mb in rss],
        "meets": {
            "rss_growth": growth is not None and growth < RSS_GROWTH_LIMIT_MB,
            "age": bool(period) and oldest / period <= AGE_LIMIT_PERIODS,
        },
    }


def _print(result: dict) -> None:
    print(f"{result['sent']} frames sent at {result['rate_hz']:g} Hz, {result['served']} served "
          f"(node exit code {result['node_exit_code']})")  # fmt: skip
    if result["node_counters"]:
        print(
            "the node's totals: "
            + ", ".join(f"{k} {v}" for k, v in result["node_counters"].items())
        )
    if result["inference_period_s"]:
        age, periods = result["age_s"], result["oldest_in_periods"]
        over = f"{result['older_than_limit']} of {result['served_after_warmup']} over it"
        print(f"after warm-up: inference period {result['inference_period_s'] * 1e3:.0f} ms, "
              f"frame age median {age['median'] * 1e3:.0f} ms, max {age['max'] * 1e3:.0f} ms "
              f"({periods:.2f} periods, limit {AGE_LIMIT_PERIODS:g}; {over})")  # fmt: skip
    if result["rss_growth_mb"] is not None:
        rss, growth = result["rss_mb"], result["rss_growth_mb"]
        print(f"node RSS (median of {RSS_WINDOW_S:g} s) {rss['after_warmup']:.0f} MB after "
              f"warm-up, {rss['end']:.0f} MB at the end (growth {growth:+.1f} MB, limit "
              f"{RSS_GROWTH_LIMIT_MB:g}; peak {rss['max']:.0f} MB)")  # fmt: skip
