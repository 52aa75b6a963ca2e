"""The online path end to end: `sparserefine replay` plays a bag to a real sparserefine_node
process, the evaluator node scores the node's outputs against the bag's labels and writes the
report; its per-frame mIoU equals the offline pipeline's on the same frames."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from ros_harness import NodeProcess, RosClient
from sensor_msgs.msg import Image

from sparserefine_ros.bags import BagReader, write_drive_bag
from sparserefine_ros.evaluation.metrics import mean_iou
from sparserefine_ros.models import init_model
from sparserefine_ros.ros.replay import replay

pytestmark = pytest.mark.slow

FRAMES, FPS = 6, 5.0


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "drive"
    return write_drive_bag(path, FRAMES, FPS, seed=5, size=(128, 64), progress=False)


def test_replay_node_and_evaluator_write_the_report(bag, model_dir, tmp_path):
    node = NodeProcess({"model": str(model_dir), "reliability": "reliable"}, "/camera")
    summary_path = tmp_path / "online.json"
    evaluator = NodeProcess(
        {"json": str(summary_path), "max_idle_s": "3.0"},
        "/camera",
        module="sparserefine_ros.ros.evaluator_node",
    )
    try:
        node.wait_for_log("serving")
        evaluator.wait_for_log("receiving the node's outputs")  # matched to the node
        start = time.monotonic()
        # From 0.3 s into the bag: frames 2..5 (bag times ~0.2 s apart), played twice as fast.
        sent = replay(bag, rate=2.0, start_offset=0.3, wait_for_subscribers=30.0)
        elapsed = time.monotonic() - start
        assert sent == 2 * 4
        assert elapsed > 0.25  # paced: 0.6 s of bag at rate 2 cannot go out at once
        assert evaluator.wait_exit(timeout=60) == 0, evaluator.log
    finally:
        node.stop()
        evaluator.stop()

    summary = json.loads(summary_path.read_text())
    counts = {k: summary[k] for k in ("frames", "labelled_frames", "labels_without_output")}
    assert 1 <= counts["labelled_frames"] == counts["frames"] <= 4, (counts, evaluator.log)
    assert counts["frames"] + counts["labels_without_output"] == 4, counts
    assert summary["miou"]["dense_low"] is None and summary["latency_ms"]["dense_low"] is None
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    assert 0 < summary["selected_fraction"] <= 0.2 + 1e-3  # the model's budget
    report = tmp_path / "online_report"
    assert (report / "report.md").is_file()
    assert (report / "plots" / "miou_over_time.png").is_file()
    assert list((report / "frames").glob("overlay_*.png"))

    # The same frames offline: the node's classes, hence the per-frame mIoU, are the pipeline's.
    pipeline = init_model(model_dir)
    with BagReader(bag, label_topic="/camera/labels") as reader:
        frames = {f.stamp_ns: f for f in reader.frames()}
    stamps = sorted(frames)
    online = summary["per_frame_miou"]
    assert {row["stamp_ns"] for row in online} <= set(stamps[2:])
    for row in online:
        frame = frames[row["stamp_ns"]]
        images = torch.from_numpy(np.ascontiguousarray(frame.rgb.transpose(2, 0, 1)))[None]
        classes = pipeline(images).classes[0].numpy()
        offline = 100.0 * mean_iou(classes, frame.label, len(pipeline.class_names))
        assert row["sparserefine"] == pytest.approx(offline, abs=0.05)


def test_replay_cli_loops_until_interrupted(bag):
    client = RosClient("loop_listener")
    try:
        received = client.subscribe(Image, "/camera/labels")
        command = [sys.executable, "-m", "sparserefine_ros.tools.cli", "replay", str(bag),
                   "--topics", "/camera/labels", "--rate", "10", "--loop",
                   "--wait-for-subscribers", "30"]  # fmt: skip
        player = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)  # fmt: skip
        try:
            assert client.wait_for(lambda: len(received) > 2 * FRAMES, timeout=60)
        finally:
            player.send_signal(signal.SIGINT)
            output, _ = player.communicate(timeout=30)
        assert player.returncode == 0, output
        assert "Traceback" not in output
    finally:
        client.close()
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in received]
    assert stamps[FRAMES : 2 * FRAMES] == stamps[:FRAMES]  # the same bag again, stamps unchanged
