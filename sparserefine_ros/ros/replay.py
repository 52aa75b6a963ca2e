"""Bag playback onto live ROS 2 topics with the bag's timing, where ``ros2 bag play`` is missing
(rosbag2 is not on PyPI, so a pip-only ROS 2 has no player).

Messages go out as the recorded CDR bytes, unchanged (header stamps included), at their bag
times scaled by ``rate``, optionally from ``start_offset`` seconds into the bag and in a loop;
``clock`` also publishes the bag time on ``/clock`` for nodes running with ``use_sim_time``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from sparserefine_ros.bags.io import BagError, open_bag, raw_messages

_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_SUBSCRIBER_POLL_S = 0.05
_ACK_TIMEOUT_S = 5.0


def message_class(msgtype: str):
    """The rclpy class of ``pkg/msg/Name``; BagError if its package is not installed."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise BagError(f"message type {msgtype} is not installed in this environment") from None


def replay(
    path: str | Path,
    topics: Sequence[str] = (),
    rate: float = 1.0,
    start_offset: float = 0.0,
    loop: bool = False,
    clock: bool = False,
    wait_for_subscribers: float = 0.0,
    log=print,
) -> int:
    """Publish the bag (``topics`` only, if given) and return the number of messages sent.

    ``wait_for_subscribers`` > 0 waits up to that many seconds, before the first message, for
    every played topic to have a subscriber, so a freshly started graph misses nothing.
    Returns when the bag ends (never with ``loop``, until Ctrl-C).
    """
    if rate <= 0 or start_offset < 0:
        raise BagError("rate must be > 0 and start offset >= 0")
    reader = open_bag(Path(path))
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("sparserefine_replay", context=context)
    try:
        connections = [c for c in reader.connections if not topics or c.topic in topics]
        missing = set(topics) - {c.topic for c in connections}
        if missing or not connections:
            have = ", ".join(sorted({c.topic for c in reader.connections})) or "none"
            raise BagError(f"{path}: no topic {', '.join(sorted(missing))}; the bag has: {have}")
        publishers = {
            c.id: node.create_publisher(message_class(c.msgtype), c.topic, _QOS)
            for c in connections
        }
        clock_publisher = node.create_publisher(Clock, "/clock", _QOS) if clock else None
        if wait_for_subscribers > 0:
            _wait_for_subscribers(publishers.values(), wait_for_subscribers, log)
        start = reader.start_time + round(start_offset * 1e9)
        sent = 0
        while True:
            wall_start = time.monotonic()
            for connection, time_ns, raw in raw_messages(reader, connections):
                if time_ns < start:
                    continue
                time.sleep(max(0.0, wall_start + (time_ns - start) / 1e9 / rate - time.monotonic()))
                if clock_publisher is not None:
                    sec, nanosec = divmod(time_ns, 1_000_000_000)
                    clock_publisher.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))
                publishers[connection.id].publish(bytes(raw))
                sent += 1
            if not loop:
                # Subscribers still owed messages lose them if the publishers go away now.
                for publisher in publishers.values():
                    publisher.wait_for_all_acked(Duration(seconds=_ACK_TIMEOUT_S))
                return sent
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        reader.close()


def _wait_for_subscribers(publishers, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    waiting = [p for p in publishers if p.get_subscription_count() == 0]
    while waiting and time.monotonic() < deadline:
        time.sleep(_SUBSCRIBER_POLL_S)
        waiting = [p for p in waiting if p.get_subscription_count() == 0]
    if waiting:
        log(f"no subscriber after {timeout:g} s on {', '.join(p.topic_name for p in waiting)}; "
            "playing anyway")  # fmt: skip
