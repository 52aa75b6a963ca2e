"""The street-scene generator: determinism, splits, label content, resolution loss, drives."""

import argparse

import numpy as np
import pytest

from sparserefine_ros.data.cityscapes import CityscapesDataset
from sparserefine_ros.data.scenes import Drive, generate_scene
from sparserefine_ros.data.writer import scene_seed, write_drive, write_split
from sparserefine_ros.evaluation.metrics import (
    confusion_matrix,
    resolution_roundtrip,
    scores_from_confusion,
)
from sparserefine_ros.labels import CLASS_NAMES
from sparserefine_ros.tools import dataset as dataset_tool

SIZE = (384, 192)


@pytest.fixture(scope="module")
def frames():
    return [generate_scene(scene_seed(0, "val", i), SIZE) for i in range(6)]


def test_deterministic_per_seed():
    a, b = generate_scene([7, 1, 0], SIZE), generate_scene([7, 1, 0], SIZE)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label_ids, b.label_ids)
    c = generate_scene([8, 1, 0], SIZE)
    assert (c.label_ids != a.label_ids).mean() > 0.05


def test_splits_use_disjoint_seeds():
    seeds = {s: {tuple(scene_seed(0, s, i)) for i in range(500)} for s in ("train", "val", "test")}
    assert not seeds["train"] & seeds["val"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["val"] & seeds["test"]
    with pytest.raises(ValueError):
        scene_seed(0, "training", 0)


def test_labels_and_images_are_well_formed(frames):
    for f in frames:
        assert f.image.shape == (SIZE[1], SIZE[0], 3) and f.image.dtype == np.uint8
        assert f.label_ids.shape == (SIZE[1], SIZE[0])
        values = set(np.unique(f.train_ids).tolist())
        assert values <= set(range(19)) | {255}
        assert f.image.std() > 20  # a picture, not a flat fill


def test_key_classes_appear(frames):
    seen = set()
    for f in frames:
        seen |= set(np.unique(f.train_ids).tolist())
    key = {
        "road",
        "sidewalk",
        "building",
        "pole",
        "traffic sign",
        "vegetation",
        "sky",
        "car",
        "person",
    }
    missing = {n for n in key if CLASS_NAMES.index(n) not in seen}
    assert not missing, missing


def test_half_resolution_loses_miou(frames):
    matrix = sum(
        confusion_matrix(resolution_roundtrip(f.train_ids, 2), f.train_ids, 19) for f in frames
    )
    scores = scores_from_confusion(matrix)
    assert 1 - scores.miou > 0.04  # thin and small things do not survive at half resolution
    pole = scores.iou[CLASS_NAMES.index("pole")]
    road = scores.iou[CLASS_NAMES.index("road")]
    assert pole < road - 0.1


def test_colour_alone_does_not_give_the_class(frames):
    """Pixels of one exact colour must belong to several classes often enough."""
    ambiguous = 0
    total = 0
    for f in frames:
        key = (f.image.astype(np.int64) // 16) @ np.array([256, 16, 1])
        pairs = np.unique(np.stack([key.ravel(), f.train_ids.ravel()]), axis=1)
        colours, counts = np.unique(pairs[0], return_counts=True)
        multi = set(colours[counts > 1].tolist())
        ambiguous += np.isin(key, list(multi)).sum()
        total += key.size
    assert ambiguous / total > 0.3


@pytest.mark.parametrize("size", [(320, 160), (301, 173)])
def test_drive_moves_smoothly(size):
    drive = Drive(seed=4, frames=20, fps=15.0, size=size)
    f0, f1, f19 = drive.frame(0), drive.frame(1), drive.frame(19)
    assert f0.image.shape == (size[1], size[0], 3)
    assert drive.camera(1).z > drive.camera(0).z
    near = (f0.label_ids == f1.label_ids).mean()
    far = (f0.label_ids == f19.label_ids).mean()
    assert near > 0.85 and near > far
    diff_near = np.abs(f0.image.astype(int) - f1.image).mean()
    diff_far = np.abs(f0.image.astype(int) - f19.image).mean()
    assert diff_near < diff_far
    with pytest.raises(IndexError):
        drive.frame(20)


def test_written_tree_is_read_by_the_loader(tmp_path):
    write_split(tmp_path, "train", 2, seed=1, size=(128, 64), workers=1)
    meta = write_drive(tmp_path, 3, fps=10.0, seed=2, size=(128, 64), workers=1)
    ds = CityscapesDataset(tmp_path, "train")
    assert len(ds) == 2
    image, label = ds[1]
    expected = generate_scene(scene_seed(1, "train", 1), (128, 64))
    np.testing.assert_array_equal(label.numpy(), expected.train_ids)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected.image)
    assert len(CityscapesDataset(tmp_path, "sequence")) == 3 and meta.is_file()


def _parser():
    parser = argparse.ArgumentParser(prog="sparserefine")
    dataset_tool.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_errors_are_messages(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["dataset", "generate", "--out", str(tmp_path), "--size", "big"])
    assert exc.value.code == 2
    assert "2048x1024" in capsys.readouterr().err
    args = _parser().parse_args(["dataset", "resolution-loss", "--data", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exc:
        args.func(args)
    assert exc.value.code == 1
    assert "no image folder" in capsys.readouterr().err


def test_cli_generate_loss_preview(tmp_path, capsys):
    run = _parser().parse_args
    for argv in (
        [
            "dataset",
            "generate",
            "--out",
            str(tmp_path),
            "--split",
            "val",
            "--count",
            "2",
            "--size",
            "256x128",
            "--workers",
            "1",
        ],
        ["dataset", "resolution-loss", "--data", str(tmp_path), "--json", str(tmp_path / "t.json")],
        [
            "dataset",
            "preview",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "p.png"),
            "--tile-width",
            "128",
        ],
    ):
        args = run(argv)
        assert args.func(args) == 0
    assert "mIoU" in capsys.readouterr().out
    assert (tmp_path / "t.json").is_file() and (tmp_path / "p.png").is_file()
