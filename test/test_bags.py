"""Bags offline: make-bag and eval-bag through the CLI on small generated drives, both storage
formats, bad bags, and the numbers against ``sparserefine evaluate`` on the same frames."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import printed_by_fresh_interpreter
from rosbags.rosbag2 import Reader

from sparserefine_ros.bags import BagReader, BagWriter
from sparserefine_ros.bags.io import image_msg, make_header
from sparserefine_ros.bags.types import typestore
from sparserefine_ros.data.writer import write_drive
from sparserefine_ros.models import init_model
from sparserefine_ros.models.evaluation import evaluate_segmenter
from sparserefine_ros.tools.cli import main

FRAMES, FPS, SEED, SIZE = 4, 10.0, 3, (128, 64)
START = 1_727_568_000 * 1_000_000_000
SUFFIX = {"mcap": ".mcap", "sqlite3": ".db3"}


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """The same generated drive recorded in both storage formats with `sparserefine make-bag`."""
    folder = tmp_path_factory.mktemp("bags")
    for storage in ("mcap", "sqlite3"):
        assert main(["make-bag", "--out", str(folder / storage), "--storage", storage,
                     "--frames", str(FRAMES), "--fps", str(FPS), "--seed", str(SEED),
                     "--size", f"{SIZE[0]}x{SIZE[1]}"]) == 0  # fmt: skip
    return folder


def eval_bag(bag, out, *extra):
    return main(["eval-bag", str(bag), "--json", str(out / "summary.json"), *extra])


def assert_nothing_written(out) -> None:
    """No outputs and no scratch folders left behind."""
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_make_bag_records_camera_and_labels_with_realistic_stamps(bags, storage):
    assert {p.suffix for p in (bags / storage).iterdir()} == {".yaml", SUFFIX[storage]}
    with Reader(bags / storage) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {"/camera/image": "sensor_msgs/msg/Image",
                          "/camera/labels": "sensor_msgs/msg/Image"}  # fmt: skip
        messages = [
            (c.topic, t, typestore().deserialize_cdr(raw, c.msgtype))
            for c, t, raw in reader.messages()
        ]
    images = [(t, m) for topic, t, m in messages if topic == "/camera/image"]
    labels = [m for topic, _, m in messages if topic == "/camera/labels"]
    assert len(images) == len(labels) == FRAMES
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in images]
    assert [lab.header.stamp.sec * 10**9 + lab.header.stamp.nanosec for lab in labels] == stamps
    assert np.allclose(np.diff(stamps), 1e9 / FPS, atol=2e6)  # camera rate with trigger jitter
    assert all(0 < t - s < 20_000_000 for (t, _), s in zip(images, stamps, strict=True))
    assert (images[0][1].encoding, labels[0].encoding) == ("rgb8", "mono8")
    assert (images[0][1].width, images[0][1].height) == SIZE
    assert images[0][1].header.frame_id == "camera_optical_frame"
    assert set(np.unique(labels[0].data)) <= set(range(19)) | {255}


def test_eval_bag_numbers_equal_evaluate_on_the_same_frames(bags, model_dir, tmp_path):
    out = tmp_path / "eval"
    assert eval_bag(bags / "mcap", out, "--model", str(model_dir), "--dense-full") == 0
    summary = json.loads((out / "summary.json").read_text())

    # The same drive as a Cityscapes-layout folder, through `sparserefine evaluate`'s function.
    write_drive(tmp_path / "drive", FRAMES, FPS, SEED, SIZE, workers=1)
    expected = evaluate_segmenter(init_model(model_dir), tmp_path / "drive", "sequence", SIZE[::-1])
    assert summary["frames"] == summary["labelled_frames"] == FRAMES
    for mode in ("dense_full", "dense_low", "sparserefine"):
        assert summary["miou"][mode] == pytest.approx(expected["miou"][mode], abs=1e-9), mode
        assert summary["boundary_miou"][mode] == pytest.approx(expected["boundary_miou"][mode])
        assert summary["per_class_iou"][mode] == pytest.approx(expected["per_class_iou"][mode])
        assert summary["latency_ms"][mode] > 0
    assert summary["selected_fraction"] == pytest.approx(expected["selected_fraction"])
    assert summary["selection"] == pytest.approx(expected["selection"])
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert latency["p50"] == pytest.approx(latency["sparserefine"])
    assert len(summary["per_frame_miou"]) == FRAMES

    report = out / "summary_report"
    text = (report / "report.md").read_text()
    for name in ("latency", "per_class_iou", "miou_over_time"):
        assert (report / "plots" / f"{name}.png").is_file()
        assert f"plots/{name}.png" in text
    overlays = sorted((report / "frames").glob("overlay_*.png"))
    assert len(overlays) == 3
    assert cv2.imread(str(overlays[0])).shape == (SIZE[1], SIZE[0], 3)
    assert f"{summary['miou']['sparserefine']:.2f}" in text
    assert f"oracle mIoU {summary['selection']['oracle_miou']:.2f}" in text


def test_output_bag_carries_the_node_topics_and_custom_stats(bags, model_dir, tmp_path):
    out = tmp_path / "eval"
    assert eval_bag(bags / "sqlite3", out, "--model", str(model_dir), "--storage", "sqlite3") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["miou"]["dense_full"] is None and summary["latency_ms"]["dense_full"] is None
    assert isinstance(summary["miou"]["sparserefine"], float)

    output_bag = out / "summary_report" / "segmentation_bag"
    assert {p.suffix for p in output_bag.iterdir()} == {".yaml", ".db3"}
    with Reader(output_bag) as reader:
        counts = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        assert counts == {
            "/camera/segmentation": ("sensor_msgs/msg/Image", FRAMES),
            "/camera/segmentation_color": ("sensor_msgs/msg/Image", FRAMES),
            "/camera/entropy": ("sensor_msgs/msg/Image", FRAMES),
            "/camera/segmentation_stats": ("sparserefine_ros/msg/SegmentationStats", FRAMES),
            "/camera/class_info": ("sparserefine_ros/msg/ClassInfo", 1),
        }
        # The stats definition is the node's own: same type hash as the rosidl build.
        stats_connection = next(c for c in reader.connections if c.topic.endswith("_stats"))
        assert stats_connection.digest == typestore().hash_rihs01(stats_connection.msgtype)
        decoded = {}
        for c, _, raw in reader.messages():
            decoded.setdefault(c.topic, []).append(typestore().deserialize_cdr(raw, c.msgtype))
    pipeline = init_model(model_dir)
    with BagReader(bags / "sqlite3") as source:
        first = next(source.frames())
    expected = pipeline(torch.from_numpy(first.rgb.transpose(2, 0, 1).copy())[None])
    segmentation = decoded["/camera/segmentation"][0]
    assert segmentation.header == first.header and segmentation.encoding == "mono8"
    classes = segmentation.data.reshape(SIZE[1], SIZE[0])
    np.testing.assert_array_equal(classes, expected.classes[0].numpy())
    entropy = decoded["/camera/entropy"][0]
    assert entropy.encoding == "32FC1"
    np.testing.assert_allclose(
        entropy.data.view(np.float32).reshape(SIZE[1], SIZE[0]), expected.entropy[0].numpy()
    )
    stats = decoded["/camera/segmentation_stats"][0]
    assert stats.selected_pixels == expected.num_selected[0]
    assert (stats.input_width, stats.input_height) == SIZE
    assert list(decoded["/camera/class_info"][0].names) == pipeline.class_names


def write_bag(path, frames, storage="mcap"):
    """A bag from (topic, bag time, message) triples."""
    with BagWriter(path, storage) as bag:
        for topic, time_ns, msg in frames:
            bag.write(topic, time_ns, msg)


def camera_frame(index: int, size=(64, 32)):
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def test_labels_are_matched_by_stamp_whatever_their_order(tmp_path):
    frames = []
    for index in range(4):
        header = make_header(START + index * 100_000_000, "cam")
        time_ns = START + index * 100_000_000 + 5_000_000
        frames.append(("/camera/image", time_ns, image_msg(camera_frame(index), "rgb8", header)))
        label = image_msg(np.full((32, 64), index, np.uint8), "mono8", header)
        if index == 1:  # recorded before its image
            frames.append(("/camera/labels", time_ns - 1_000_000, label))
        elif index == 2:  # recorded after the next image
            frames.append(("/camera/labels", time_ns + 150_000_000, label))
        elif index == 3:  # no label for frame 3
            continue
        else:
            frames.append(("/camera/labels", time_ns + 1_000_000, label))
    write_bag(tmp_path / "bag", frames)
    with BagReader(tmp_path / "bag", label_topic="/camera/labels") as reader:
        got = list(reader.frames())
    assert sorted(f.stamp_ns for f in got) == [START + i * 100_000_000 for i in range(4)]
    for frame in got:
        index = (frame.stamp_ns - START) // 100_000_000
        np.testing.assert_array_equal(frame.rgb, camera_frame(index))
        if index == 3:
            assert frame.label is None
        else:
            assert (frame.label == index).all()


def test_compressed_camera_without_labels_reports_latency_only(model_dir, tmp_path, capsys):
    compressed = typestore().types["sensor_msgs/msg/CompressedImage"]
    frames = []
    for index in range(2):
        _, png = cv2.imencode(".png", cv2.cvtColor(camera_frame(index), cv2.COLOR_RGB2BGR))
        message = compressed(make_header(START + index * 10**8, "cam"), "png", png.ravel())
        frames.append(("/cam/image/compressed", START + index * 10**8, message))
    write_bag(tmp_path / "bag", frames, "sqlite3")
    out = tmp_path / "eval"
    db3 = next((tmp_path / "bag").glob("*.db3"))  # the storage file alone works too
    code = eval_bag(db3, out, "--model", str(model_dir), "--image-topic", "/cam/image/compressed")
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 2 and summary["labelled_frames"] == 0
    assert all(v is None for v in summary["miou"].values())
    assert summary["latency_ms"]["p99"] > 0
    assert "no /camera/labels in the bag" in capsys.readouterr().out
    assert not (out / "summary_report" / "plots" / "per_class_iou.png").exists()


def truncate(bag, tmp_path):
    copy = tmp_path / "truncated"
    shutil.copytree(bag, copy)
    storage = next(p for p in copy.iterdir() if p.suffix in (".mcap", ".db3"))
    storage.write_bytes(storage.read_bytes()[: storage.stat().st_size * 2 // 3])
    return copy


def corrupt(bag, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(bag, copy)
    storage = next(p for p in copy.iterdir() if p.suffix in (".mcap", ".db3"))
    data = bytearray(storage.read_bytes())
    start, end = len(data) // 4, len(data) * 3 // 4  # record headers and payloads
    data[start:end] = np.random.default_rng(0).bytes(end - start)
    storage.write_bytes(bytes(data))
    return copy


def mismatched_label(tmp_path):
    """Two good frames, then a label half the size of its image."""
    frames = []
    for index in range(3):
        header, time_ns = make_header(START + index * 10**8, "cam"), START + index * 10**8
        label = np.zeros((16, 32) if index == 2 else (32, 64), np.uint8)
        frames.append(("/camera/image", time_ns, image_msg(camera_frame(index), "rgb8", header)))
        frames.append(("/camera/labels", time_ns + 1, image_msg(label, "mono8", header)))
    write_bag(tmp_path / "mismatch", frames)
    return tmp_path / "mismatch"


def wrong_label_type(tmp_path):
    header = make_header(START, "cam")
    string = typestore().types["std_msgs/msg/String"]
    write_bag(tmp_path / "wrongtype", [
        ("/camera/image", START, image_msg(camera_frame(0), "rgb8", header)),
        ("/camera/labels", START, string("not a label")),
    ])  # fmt: skip
    return tmp_path / "wrongtype"


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (
            lambda bags, tmp: bags / "mcap",
            ["--image-topic", "/front/image"],
            "no topic /front/image; the bag has: /camera/image (sensor_msgs/msg/Image)",
        ),
        (lambda bags, tmp: bags / "mcap", ["--label-topic", "/gt"], "no topic /gt"),
        (
            lambda bags, tmp: wrong_label_type(tmp),
            [],
            "topic /camera/labels has type std_msgs/msg/String, expected sensor_msgs/msg/Image",
        ),
        (lambda bags, tmp: truncate(bags / "mcap", tmp), [], "corrupt or truncated"),
        (lambda bags, tmp: truncate(bags / "sqlite3", tmp), [], "corrupt or truncated"),
        (lambda bags, tmp: corrupt(bags / "mcap", tmp), [], "corrupt or truncated"),
        (lambda bags, tmp: corrupt(bags / "sqlite3", tmp), [], "corrupt or truncated"),
        (
            lambda bags, tmp: mismatched_label(tmp),
            [],
            "stamped 1727568000200000000 is 32x16, its image on /camera/image is 64x32",
        ),
        (lambda bags, tmp: tmp / "missing", [], "not a rosbag2 bag"),
    ],
    ids=[
        "image-topic",
        "label-topic",
        "wrong-type",
        "truncated-mcap",
        "truncated-sqlite3",
        "corrupt-mcap",
        "corrupt-sqlite3",
        "label-size",
        "no-bag",
    ],
)
def test_bad_bags_fail_clearly_and_write_nothing(bags, model_dir, tmp_path, capsys, make, extra,
                                                 message):  # fmt: skip
    bag = make(bags, tmp_path)
    out = tmp_path / "eval"
    assert eval_bag(bag, out, "--model", str(model_dir), *extra) == 1
    err = capsys.readouterr().err
    last_line = err.rstrip().rsplit("\n", 1)[-1]  # after the progress bar, if frames ran
    assert last_line.startswith("sparserefine eval-bag: error: ") and message in last_line, err
    assert "Traceback" not in err
    assert_nothing_written(out)


def test_existing_outputs_are_not_overwritten(bags, model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    (out / "summary_report").mkdir(parents=True)
    assert eval_bag(bags / "mcap", out, "--model", str(model_dir)) == 1
    assert "exists already" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["summary_report"]
    assert main(["make-bag", "--out", str(bags / "mcap"), "--frames", "1"]) == 1


def test_the_bag_tools_import_no_ros():
    """bags/ reads and writes rosbag2 through rosbags alone: no rclpy, no sensor_msgs."""
    code = (
        "import sys; import sparserefine_ros.bags.io, sparserefine_ros.bags.evaluate; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs') "
        "or m.startswith('sparserefine_ros.ros')))"
    )
    assert printed_by_fresh_interpreter(code) == "[]"
