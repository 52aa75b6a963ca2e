"""One camera of the node: its subscription, its output publishers, its counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSPolicyKind,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image

try:
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

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
    """The image subscription's first reliability. ``best_available`` asks for reliable
    delivery (Iron's BEST_AVAILABLE, or RELIABLE where the distribution lacks it, Humble): DDS
    resolves BEST_AVAILABLE when the subscription is made, to reliable if no camera publishes
    yet, so a best-effort camera that starts later would never match; ``Camera`` then switches
    to best effort."""
    if name == "reliable":
        return ReliabilityPolicy.RELIABLE
    if name == "best_available":
        return getattr(ReliabilityPolicy, "BEST_AVAILABLE", ReliabilityPolicy.RELIABLE)
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
        self._node, self._on_frame = node, on_frame
        self._switch_timer = None
        if config.input_transport == "compressed":
            self._type, self._topic = CompressedImage, f"{prefix}image/compressed"
        else:
            self._type, self._topic = Image, f"{prefix}image"
        self.subscription = self._subscribe(
            input_reliability(config.reliability), fall_back=config.reliability == "best_available"
        )
        self.topic = self.subscription.topic_name  # after remapping, for the log
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

    def _subscribe(self, reliability: ReliabilityPolicy, fall_back: bool = False):
        """The image subscription, depth 1; with ``fall_back``, a camera publishing best effort
        (incompatible with reliable delivery) makes it switch to best effort."""
        qos = QoSProfile(
            depth=1,
            history=HistoryPolicy.KEEP_LAST,
            reliability=reliability,
            durability=qos_profile_sensor_data.durability,
        )
        events = (
            SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
            if fall_back
            else None
        )
        return self._node.create_subscription(
            self._type,
            self._topic,
            lambda msg: self._on_frame(self, msg),
            qos,
            event_callbacks=events,
        )

    def _on_incompatible_qos(self, info) -> None:
        if info.last_policy_kind == QoSPolicyKind.RELIABILITY and self._switch_timer is None:
            # Not here: the subscription must not be destroyed inside its own event handler.
            self._switch_timer = self._node.create_timer(0.0, self._switch_to_best_effort)

    def _switch_to_best_effort(self) -> None:
        self._node.destroy_timer(self._switch_timer)
        self._node.destroy_subscription(self.subscription)
        self.subscription = self._subscribe(ReliabilityPolicy.BEST_EFFORT)
        self._node.get_logger().warning(
            f"a best-effort publisher on {self.topic}: its image subscription is best effort "
            "from now on (reliability best_available)"
        )
