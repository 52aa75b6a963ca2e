"""One camera of the node: its subscription, its output publishers, its counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image

from sparserefine_ros.msg import ClassInfo, SegmentationStats
from sparserefine_ros.ros.health import PeriodCounts
from sparserefine_ros.ros.image_codec import OUTPUTS
from sparserefine_ros.ros.parameters import NodeConfig

_OUTPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
_LATCHED_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
    history=HistoryPolicy.KEEP_LAST,
)


def input_reliability(name: str) -> ReliabilityPolicy:
    """The image subscription's reliability. ``best_available`` exists from Iron on; where the
    distribution lacks it (Humble) it falls back to best effort, which matches every camera."""
    if name == "reliable":
        return ReliabilityPolicy.RELIABLE
    if name == "best_available":
        return getattr(ReliabilityPolicy, "BEST_AVAILABLE", ReliabilityPolicy.BEST_EFFORT)
    return qos_profile_sensor_data.reliability


@dataclass
class CameraCounters:
    """What /diagnostics reports for one camera: totals, and the current period's counts."""

    received: int = 0
    processed: int = 0
    replaced: int = 0  # frames overwritten by a newer one before the worker took them
    rejected: int = 0
    failed: int = 0
    idle: int = 0  # frames skipped because nobody subscribed to any output
    last_error: str = ""
    period: PeriodCounts = field(default_factory=PeriodCounts)  # reset each period
    period_latency_ms: list[float] = field(default_factory=list)  # reset each period


class Camera:
    """One camera's subscription and output publishers, and its newest waiting frame."""

    def __init__(self, node: Node, name: str, config: NodeConfig, on_frame) -> None:
        self.name = name or "image"
        prefix = f"{name}/" if name else ""
        self.counters = CameraCounters()
        self.pending = None  # newest unprocessed message, guarded by the node's lock
        qos = QoSProfile(
            depth=1,
            history=HistoryPolicy.KEEP_LAST,
            reliability=input_reliability(config.reliability),
            durability=qos_profile_sensor_data.durability,
        )
        if config.input_transport == "compressed":
            subscription = node.create_subscription(
                CompressedImage, f"{prefix}image/compressed", lambda m: on_frame(self, m), qos
            )
        else:
            subscription = node.create_subscription(
                Image, f"{prefix}image", lambda m: on_frame(self, m), qos
            )
        self.topic = subscription.topic_name  # after remapping, for the log
        # The image outputs by name (``image_codec.OUTPUTS``), then the per-frame statistics.
        self.outputs = {
            name: node.create_publisher(Image, f"{prefix}{name}", _OUTPUT_QOS) for name in OUTPUTS
        }
        self.stats = node.create_publisher(
            SegmentationStats, f"{prefix}segmentation_stats", _OUTPUT_QOS
        )
        self.class_info = node.create_publisher(ClassInfo, f"{prefix}class_info", _LATCHED_QOS)

    def has_subscribers(self) -> bool:
        publishers = (*self.outputs.values(), self.stats)
        return any(publisher.get_subscription_count() > 0 for publisher in publishers)
