"""sparserefine_node as users run it: a real process, real rclpy topics, a real (tiny) model."""

import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL_CLASSES as CLASSES
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from ros_harness import LATCHED, RELIABLE, NodeProcess, RosClient, image_msg
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from sparserefine_ros.method import SparseRefine
from sparserefine_ros.models import DEFAULT_MODEL, init_model, load_segmenter, save_segmenter
from sparserefine_ros.msg import ClassInfo, SegmentationStats

pytestmark = pytest.mark.slow

OUTPUTS = {
    "segmentation": "mono8",
    "segmentation_color": "rgb8",
    "overlay": "rgb8",
    "entropy": "32FC1",
    "refine_mask": "mono8",
}


@pytest.fixture
def client():
    client = RosClient()
    yield client
    client.close()


def scene(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@contextmanager
def serving(model_dir, **parameters) -> Iterator[NodeProcess]:
    """The node, started and serving, for the block; then stopped as Ctrl-C would, and checked
    to have exited cleanly (unless the block failed: its error is the one to see)."""
    node = NodeProcess({"model": str(model_dir), **parameters})
    try:
        node.wait_for_log("serving")
        yield node
    finally:
        code = node.stop()
    assert code == 0, node.log


def wait_for_frame(client: RosClient, messages: list, stamp_ns: int, timeout: float = 30.0):
    def stamp(msg) -> int:
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    assert client.wait_for(lambda: any(stamp(m) == stamp_ns for m in messages), timeout), (
        f"no output stamped {stamp_ns}"
    )
    return next(m for m in messages if stamp(m) == stamp_ns)


def test_single_camera_publishes_every_output_at_input_size(model_dir, client):
    with serving(model_dir) as node:
        received = {topic: client.subscribe(Image, topic) for topic in OUTPUTS}
        stats = client.subscribe(SegmentationStats, "segmentation_stats")
        info = client.subscribe(ClassInfo, "class_info", LATCHED)
        publisher = client.publisher(Image, "image")
        client.wait_for_subscribers(publisher)
        rgb = scene(97, 131, seed=1)  # odd sizes: the dense model runs at 48x65
        stamp_ns = 1_700_000_000_123_456_789
        # Subscriptions of this client may still be matching: resend until all outputs arrive.
        client.resend_until(
            lambda: publisher.publish(image_msg(rgb, "bgr8", stamp_ns, frame_id="front_optical")),
            lambda: all(received.values()) and bool(stats),
            node,
        )

        for topic, encoding in OUTPUTS.items():
            msg = wait_for_frame(client, received[topic], stamp_ns)
            assert msg.encoding == encoding, topic
            assert (msg.height, msg.width) == (97, 131), topic
            assert msg.header.frame_id == "front_optical", topic

        classes = np.frombuffer(
            wait_for_frame(client, received["segmentation"], stamp_ns).data, np.uint8
        ).reshape(97, 131)
        expected = init_model(model_dir)(torch.from_numpy(rgb).permute(2, 0, 1)[None])
        assert (classes == expected.classes[0].numpy()).mean() > 0.999
        mask = np.frombuffer(
            wait_for_frame(client, received["refine_mask"], stamp_ns).data, np.uint8
        ).reshape(97, 131)
        np.testing.assert_array_equal(mask > 0, expected.refine_mask[0].numpy())
        assert set(np.unique(mask)) <= {0, 255}
        entropy_msg = wait_for_frame(client, received["entropy"], stamp_ns)
        entropy = np.frombuffer(entropy_msg.data, np.float32).reshape(97, 131)
        assert 0.0 <= entropy.min() and entropy.max() <= math.log(len(CLASSES)) + 1e-4

        frame_stats = wait_for_frame(client, stats, stamp_ns)
        assert (frame_stats.input_height, frame_stats.input_width) == (97, 131)
        assert (frame_stats.dense_height, frame_stats.dense_width) == expected.dense_size
        assert frame_stats.selected_pixels == int(mask.astype(bool).sum())
        budget = math.ceil(0.2 * 97 * 131)
        assert 0 < frame_stats.selected_pixels <= budget
        assert frame_stats.selected_fraction == pytest.approx(
            frame_stats.selected_pixels / (97 * 131)
        )
        assert frame_stats.entropy_threshold == pytest.approx(1.0)
        assert frame_stats.inference_ms > 0 and frame_stats.latency_ms > 0

        assert client.wait_for(lambda: bool(info))
        assert list(info[0].names) == CLASSES and list(info[0].ids) == list(range(5))
        assert len(info[0].colors) == 5


@pytest.mark.parametrize("camera_qos", ["reliable", "best_effort"])
def test_default_reliability_serves_reliable_and_late_best_effort_cameras(
    model_dir, client, camera_qos
):
    """``best_available`` (the default) is resolved when the node subscribes, before any camera
    publishes: a reliable camera is served reliably, a best-effort one (sensor-data QoS, started
    after the node) makes the node switch its subscription to best effort and is served too."""
    qos = RELIABLE if camera_qos == "reliable" else qos_profile_sensor_data
    with serving(model_dir) as node:
        segmentation = client.subscribe(Image, "segmentation")
        publisher = client.publisher(Image, "image", qos)
        client.wait_for_subscribers(publisher)
        rgb = scene(32, 48, seed=4)
        client.resend_until(
            lambda: publisher.publish(image_msg(rgb, "rgb8", 21)),
            lambda: bool(segmentation),
            node,
            every=0.5,
        )
        switched = "best effort from now on" in node.log
        assert switched == (camera_qos == "best_effort"), node.log


def test_compiled_fixed_stage_serves_the_eager_classes(model_dir, client):
    """``compile_mode: default`` with ``fixed_stage``: the node compiles the dense model and the
    fixed-shape sparse stage (one graph) at its first frame (inductor's C++ on the CPU) and then
    serves the classes the eager pipeline gives."""
    with serving(model_dir, compile_mode="default", fixed_stage=True) as node:
        segmentation = client.subscribe(Image, "segmentation")
        publisher = client.publisher(Image, "image")
        client.wait_for_subscribers(publisher)
        rgb = scene(64, 96, seed=2)
        stamp_ns = 1_700_000_000_000_000_002
        client.resend_until(
            lambda: publisher.publish(image_msg(rgb, "rgb8", stamp_ns)),
            lambda: bool(segmentation),
            node,
            timeout=180.0,
        )
        msg = wait_for_frame(client, segmentation, stamp_ns)
        classes = np.frombuffer(msg.data, np.uint8).reshape(64, 96)
        expected = init_model(model_dir)(torch.from_numpy(rgb).permute(2, 0, 1)[None])
        assert (classes == expected.classes[0].numpy()).mean() > 0.999


def test_bad_frames_are_dropped_and_the_node_keeps_serving(model_dir, client):
    # Reliable on both sides: every bad frame reaches the node (best effort may lose the first).
    with serving(model_dir, reliability="reliable") as node:
        segmentation = client.subscribe(Image, "segmentation")
        publisher = client.publisher(Image, "image", RELIABLE)
        client.wait_for_subscribers(publisher)
        rgb = scene(32, 48, seed=2)
        bad = {
            "unsupported encoding": image_msg(rgb, "rgb8", 11),
            "wrong step": image_msg(rgb, "rgb8", 12),
            "short data": image_msg(rgb, "rgb8", 13),
            "empty": image_msg(rgb, "rgb8", 14),
        }
        bad["unsupported encoding"].encoding = "yuv422"
        bad["wrong step"].step = 10
        bad["short data"].data = bytes(100)
        bad["empty"].height, bad["empty"].width, bad["empty"].data = 0, 0, b""

        def serve(stamp: int) -> None:
            """A good frame, resent until its output is back (the node then sees our topics)."""
            client.resend_until(
                lambda: publisher.publish(image_msg(rgb, "rgba8", stamp)),
                lambda: any(m.header.stamp.nanosec == stamp for m in segmentation),
                node,
            )

        serve(10)
        for msg in bad.values():
            publisher.publish(msg)
            time.sleep(0.3)  # one at a time: the node keeps only the newest frame
        serve(15)
        assert node.process.poll() is None
        assert "dropped frame: unsupported encoding 'yuv422'" in node.log
        stamps = {m.header.stamp.nanosec for m in segmentation}
        assert stamps == {10, 15}, "a malformed frame produced output"


class TupleOutput(torch.nn.Module):
    """A user's TorchScript model that returns a tuple where logits are expected."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 19, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y


@pytest.fixture
def failing_model_dir(tmp_path):
    path = tmp_path / "tuple.pt"
    torch.jit.save(torch.jit.script(TupleOutput()), str(path))
    segmenter = load_segmenter(path)
    segmenter.refiner = SparseRefine(19, widths=(8,))
    return save_segmenter(tmp_path / "tuple", segmenter)


def test_a_failing_model_is_reported_and_the_node_keeps_serving(failing_model_dir, client):
    with serving(failing_model_dir, diagnostics_period=0.5) as node:
        diagnostics = client.subscribe(DiagnosticArray, "/diagnostics")
        client.subscribe(Image, "segmentation")
        publisher = client.publisher(Image, "image")
        client.wait_for_subscribers(publisher)

        def failures(at_least: int):
            for array in reversed(diagnostics):
                status = array.status[0]
                values = {kv.key: kv.value for kv in status.values}
                if int(values["frames_failed"]) >= at_least:
                    return status, values
            return None

        for count in (1, 2):  # the worker survives the first failure and fails again
            client.resend_until(
                lambda: publisher.publish(image_msg(scene(32, 48, seed=6), "rgb8", 41)),
                lambda count=count: failures(count) is not None,
                node,
                every=1.0,
            )
        status, values = failures(2)
        assert status.level == DiagnosticStatus.ERROR, status.message
        assert "failed in inference" in status.message
        assert values["last_error"].startswith("inference failed: ")
        assert node.process.poll() is None
        assert "Traceback" not in node.log


def set_parameters(client: RosClient, **values):
    """Results of one SetParameters call to the node (what ``ros2 param set`` sends)."""
    service = client.node.create_client(SetParameters, "/sparserefine_node/set_parameters")
    assert service.wait_for_service(timeout_sec=30.0)
    request = SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    )
    future = service.call_async(request)
    assert client.wait_for(future.done, timeout=30.0)
    return future.result().results


def test_selection_and_overlay_are_tunable_at_run_time(model_dir, client):
    with serving(model_dir) as node:
        stats = client.subscribe(SegmentationStats, "segmentation_stats")
        publisher = client.publisher(Image, "image")
        client.wait_for_subscribers(publisher)
        [result] = set_parameters(client, entropy_threshold=0.25)
        assert result.successful, result.reason
        [result] = set_parameters(client, max_selected_fraction=0.05)
        assert result.successful, result.reason

        def serve(stamp: int) -> SegmentationStats:
            """Stats of one frame, resent until they are back."""
            client.resend_until(
                lambda: publisher.publish(image_msg(scene(64, 96, seed=8), "rgb8", stamp)),
                lambda: any(m.header.stamp.nanosec == stamp for m in stats),
                node,
            )
            return next(m for m in stats if m.header.stamp.nanosec == stamp)

        served = serve(51)
        assert served.entropy_threshold == pytest.approx(0.25)
        assert served.max_selected_fraction == pytest.approx(0.05)
        assert 0 < served.selected_fraction <= 0.05 + 4 / (64 * 96)  # whole 2x2 blocks

        for values, named in (
            ({"entropy_threshold": -0.5}, "entropy_threshold"),
            ({"max_selected_fraction": 0.0}, "max_selected_fraction"),
            ({"overlay_alpha": 2.0}, "overlay_alpha"),
            ({"model": "other"}, "model"),
        ):
            [result] = set_parameters(client, **values)
            assert not result.successful, values
            assert named in result.reason, result.reason
        # -1 restores the model's calibrated threshold (1.0 for this checkpoint)
        [result] = set_parameters(client, entropy_threshold=-1.0)
        assert result.successful, result.reason
        assert serve(52).entropy_threshold == pytest.approx(1.0)


SHIPPED_PARAMS = Path(__file__).resolve().parents[1] / "config" / "sparserefine.yaml"


def test_the_shipped_params_file_starts_the_default_model(client):
    node = NodeProcess({}, params_file=str(SHIPPED_PARAMS))
    try:
        node.wait_for_log("serving")
        assert f"model '{DEFAULT_MODEL}' on cpu" in node.log
        segmentation = client.subscribe(Image, "segmentation")
        publisher = client.publisher(Image, "image")
        client.wait_for_subscribers(publisher)
        client.resend_until(
            lambda: publisher.publish(image_msg(scene(64, 128, seed=9), "rgb8", 61)),
            lambda: bool(segmentation),
            node,
        )
        assert (segmentation[0].height, segmentation[0].width) == (64, 128)
    finally:
        code = node.stop()
    assert code == 0, node.log


def test_cameras_share_one_model_and_keep_their_own_topics(model_dir, client):
    with serving(model_dir, cameras="[front, left]") as node:
        outputs = {cam: client.subscribe(Image, f"{cam}/segmentation") for cam in ("front", "left")}
        publishers = {cam: client.publisher(Image, f"{cam}/image") for cam in ("front", "left")}
        for publisher in publishers.values():
            client.wait_for_subscribers(publisher)
        sizes = {"front": (40, 64), "left": (36, 50)}

        def send() -> None:
            for cam, publisher in publishers.items():
                publisher.publish(image_msg(scene(*sizes[cam], seed=3), "rgb8", 21, frame_id=cam))

        client.resend_until(send, lambda: all(outputs.values()), node)
        for cam, messages in outputs.items():
            assert messages[0].header.frame_id == cam
            assert (messages[0].height, messages[0].width) == sizes[cam]
        assert "serving /front/image, /left/image" in node.log


def test_a_burst_is_served_newest_frame_first(model_dir, client):
    """Frames arriving faster than inference are replaced, not queued: the last one is served.

    Reliable QoS on both sides, so DDS delivers every frame and only the node's policy drops.
    """
    with serving(model_dir, reliability="reliable", diagnostics_period=0.5):
        segmentation = client.subscribe(Image, "segmentation")
        diagnostics = client.subscribe(DiagnosticArray, "/diagnostics")
        publisher = client.publisher(Image, "image", RELIABLE)
        client.wait_for_subscribers(publisher)
        rgb = scene(480, 640, seed=4)
        sent = 30
        for index in range(1, sent + 1):
            publisher.publish(image_msg(rgb, "rgb8", stamp_ns=index))
            time.sleep(0.01)
        last = wait_for_frame(client, segmentation, sent, timeout=60)
        assert last is not None
        served = [m.header.stamp.nanosec for m in segmentation]
        assert served == sorted(set(served)), "outputs out of order or repeated"

        def settled() -> dict:
            """The newest diagnostics once every frame received is accounted for."""
            for array in reversed(diagnostics):
                values = {kv.key: int(kv.value) for kv in array.status[0].values
                          if kv.key.startswith("frames_")}  # fmt: skip
                if values["frames_processed"] == len(served):
                    return values
            return {}

        # Every frame that arrived (DDS's depth-1 history may drop some first) is either served
        # or replaced by a newer one before the worker took it: none queued, none lost.
        assert client.wait_for(lambda: bool(settled()), timeout=30)
        values = settled()
        handled = sum(values[k] for k in ("frames_processed", "frames_replaced_by_newer",
                                          "frames_rejected", "frames_failed",
                                          "frames_skipped_no_subscribers"))  # fmt: skip
        assert values["frames_received"] == handled, values
        assert values["frames_received"] <= sent


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_inference_drains_and_exits_cleanly(model_dir, client, sig):
    """Frames keep coming and every output is subscribed, so the signal lands while the worker
    infers or publishes: the worker must finish before the context goes, without a traceback."""
    node = NodeProcess({"model": str(model_dir), "reliability": "reliable"})
    try:
        node.wait_for_log("serving")
        outputs = [client.subscribe(Image, topic) for topic in OUTPUTS]
        publisher = client.publisher(Image, "image", RELIABLE)
        client.wait_for_subscribers(publisher)
        rgb = scene(480, 640, seed=5)
        client.resend_until(
            lambda: publisher.publish(image_msg(rgb, "rgb8", stamp_ns=1)),
            lambda: all(outputs),
            node,
            every=0.2,
        )
        for index in range(2, 12):  # a steady stream, then the signal in the middle of it
            publisher.publish(image_msg(rgb, "rgb8", stamp_ns=index))
            time.sleep(0.05)
    finally:
        code = node.stop(sig)
    assert code == 0, node.log
    for problem in ("Traceback", "RCLError", "context is invalid", "KeyboardInterrupt"):
        assert problem not in node.log, node.log


def test_no_subscribers_no_inference(model_dir, client):
    with serving(model_dir, diagnostics_period=0.5) as node:
        diagnostics = client.subscribe(DiagnosticArray, "/diagnostics")
        publisher = client.publisher(Image, "image")
        client.wait_for_subscribers(publisher)

        def skipped() -> dict:
            for array in reversed(diagnostics):
                values = {kv.key: kv.value for kv in array.status[0].values}
                if int(values["frames_skipped_no_subscribers"]) > 0:
                    return values
            return {}

        client.resend_until(
            lambda: publisher.publish(image_msg(scene(32, 48, seed=5), "rgb8", 31)),
            lambda: bool(skipped()),
            node,
            every=1.0,
        )
        assert skipped()["frames_processed"] == "0"


def test_latency_follows_sim_time(model_dir, client):
    with serving(model_dir, use_sim_time="true") as node:
        stats = client.subscribe(SegmentationStats, "segmentation_stats")
        clock = client.publisher(Clock, "/clock")
        publisher = client.publisher(Image, "image")
        client.wait_for_subscribers(publisher)
        client.wait_for_subscribers(clock)
        sim_now = 5_000_000_000_000  # 5000 s

        def timed() -> list:  # NaN until the node's clock has had its first /clock message
            return [s for s in stats if math.isfinite(s.latency_ms)]

        def send() -> None:
            clock.publish(Clock(clock=_time(sim_now)))
            time.sleep(0.2)
            publisher.publish(image_msg(scene(32, 48, seed=6), "rgb8", sim_now - 500_000_000))

        client.resend_until(send, lambda: bool(timed()), node)
        assert timed()[0].latency_ms == pytest.approx(500.0, abs=1.0)


def _time(ns: int):
    from builtin_interfaces.msg import Time

    sec, nanosec = divmod(ns, 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"dense_scale": "1.5"}, "dense_scale"),
        ({"dense_scale": "0.0"}, "dense_scale"),
        ({"device": "gpu"}, "device"),
        (
            {"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "cuda:99"},
            "device",
        ),
        ({"cameras": "[front, front]"}, "cameras"),
        ({"cameras": "['bad name']"}, "cameras"),
        ({"reliability": "sometimes"}, "reliability"),
        ({"precision": "fp64"}, "precision"),
        ({"compile_mode": "fast"}, "compile_mode"),
        ({"class_colors": "[1, 2]"}, "class_colors"),
        ({"class_colors": "[0, 0, 0]"}, "class_colors"),  # 1 colour for 5 classes
        ({"overlay_alpha": "2.0"}, "overlay_alpha"),
        ({"entropy_threshold": "'high'"}, "entropy_threshold"),
    ],
)
def test_bad_parameters_stop_start_up_naming_the_parameter(model_dir, parameters, named):
    node = NodeProcess({"model": str(model_dir), **parameters})
    assert node.wait_exit(timeout=60) == 2, node.log
    assert f"parameter '{named}'" in node.log
    assert "Traceback" not in node.log


@pytest.mark.parametrize("model", ["/nonexistent/checkpoint", "not-a-shipped-model"])
def test_a_bad_model_stops_start_up_naming_it(model):
    node = NodeProcess({"model": model})
    assert node.wait_exit(timeout=60) == 2, node.log
    assert model in node.log and "Traceback" not in node.log
