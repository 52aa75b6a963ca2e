"""Real ROS 2 plumbing for the node tests: the node in its own process, a client node here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class NodeProcess:
    """A node of this package (by default sparserefine_node) started as a real process with
    ``-p name:=value`` parameters."""

    def __init__(
        self,
        parameters: dict[str, str],
        namespace: str = "",
        module: str = "sparserefine_ros.ros.node",
        params_file: str | None = None,
    ) -> None:
        args = [sys.executable, "-m", module, "--ros-args"]
        if params_file is not None:
            args += ["--params-file", params_file]
        for name, value in parameters.items():
            args += ["-p", f"{name}:={value}"]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
        )
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def log(self) -> str:
        return "".join(self.output)

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if self.process.poll() is not None:
                raise AssertionError(f"node exited ({self.process.returncode}):\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no '{text}' in {timeout} s:\n{self.log}")
            time.sleep(0.05)

    def wait_exit(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self, sig: int = signal.SIGINT) -> int:
        """SIGINT, as Ctrl-C or `ros2 launch` would (or ``sig``: systemd and docker send
        SIGTERM); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.wait_exit(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode


class RosClient:
    """A node in this process, spun in a background thread, with collecting subscriptions."""

    def __init__(self, name: str = "test_client") -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self.received: dict[str, list] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except ExternalShutdownException:  # close() shut the context down
            pass

    def subscribe(self, msg_type, topic: str, qos: QoSProfile = RELIABLE) -> list:
        messages = self.received.setdefault(topic, [])

        def keep(msg) -> None:
            with self._lock:
                messages.append(msg)

        self.node.create_subscription(msg_type, topic, keep, qos)
        return messages

    def publisher(self, msg_type, topic: str, qos: QoSProfile = RELIABLE):
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if condition():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def resend_until(
        self,
        send: Callable[[], None],
        condition: Callable[[], bool],
        node: NodeProcess,
        every: float = 2.0,
        timeout: float = 30.0,
    ) -> None:
        """Call ``send`` until ``condition`` holds: the first messages can beat discovery."""
        deadline = time.monotonic() + timeout
        while not self.wait_for(condition, timeout=0.0):
            assert time.monotonic() < deadline, f"not met in {timeout} s:\n{node.log}"
            send()
            self.wait_for(condition, timeout=every)

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 30.0) -> None:
        assert self.wait_for(lambda: publisher.get_subscription_count() >= count, timeout), (
            f"no subscriber on {publisher.topic_name} after {timeout} s"
        )

    def close(self) -> None:
        # Shutting the context down first ends the spin loop; then nothing uses the node.
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()


def image_msg(rgb: np.ndarray, encoding: str = "rgb8", stamp_ns: int = 0, frame_id: str = "cam"):
    """An Image message of an (H, W, 3) uint8 RGB array in the given 8-bit encoding."""
    import cv2

    converted = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
        "bgra8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA),
        "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
    }[encoding]
    converted = np.ascontiguousarray(converted)
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = converted.shape[:2]
    msg.encoding = encoding
    msg.step = converted.strides[0]
    msg.data = converted.tobytes()
    return msg
