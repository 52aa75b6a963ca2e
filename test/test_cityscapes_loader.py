"""Cityscapes-layout loading and training transforms, on a tiny tree written here."""

import cv2
import numpy as np
import pytest
import torch

from sparserefine_ros.data.cache import DecodedSplit, TrainingSet
from sparserefine_ros.data.cityscapes import CityscapesDataset, find_samples
from sparserefine_ros.data.transforms import TrainTransform, photometric_jitter, scaled_crop
from sparserefine_ros.evaluation.metrics import boundary_mask
from sparserefine_ros.labels import CLASS_COLORS, ID_TO_TRAIN_ID, LABELS, TRAIN_ID_TO_ID, colorize


def test_official_mapping():
    assert len([lab for lab in LABELS if lab.id >= 0]) == 34
    expected = {
        7: 0,
        8: 1,
        11: 2,
        12: 3,
        13: 4,
        17: 5,
        19: 6,
        20: 7,
        21: 8,
        22: 9,
        23: 10,
        24: 11,
        25: 12,
        26: 13,
        27: 14,
        28: 15,
        31: 16,
        32: 17,
        33: 18,
    }
    for label_id in range(34):
        assert ID_TO_TRAIN_ID[label_id] == expected.get(label_id, 255), label_id
    np.testing.assert_array_equal(ID_TO_TRAIN_ID[TRAIN_ID_TO_ID[:19]], np.arange(19))
    assert tuple(colorize(np.array([[13, 255]]))[0, 0]) == (0, 0, 142)
    assert tuple(colorize(np.array([[255]]))[0, 0]) == (0, 0, 0)


def _blocky_labels(h: int, w: int) -> np.ndarray:
    """Train ids in 16x16 blocks, some ignored, so the picture of the labels is easy to check."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 19, size=(h // 16, w // 16)).astype(np.uint8)
    blocks[0, 0] = 255
    return np.kron(blocks, np.ones((16, 16), dtype=np.uint8))


@pytest.fixture
def tree(tmp_path):
    """Two cities: one with labelTrainIds, one with labelIds only (as real Cityscapes ships)."""
    train_ids = _blocky_labels(32, 64)
    image = colorize(train_ids)
    for city, kind in (("aachen", "labelTrainIds"), ("bremen", "labelIds")):
        img_dir = tmp_path / "leftImg8bit" / "train" / city
        gt_dir = tmp_path / "gtFine" / "train" / city
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        name = f"{city}_000000_000019"
        cv2.imwrite(
            str(img_dir / f"{name}_leftImg8bit.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        )
        label = train_ids if kind == "labelTrainIds" else TRAIN_ID_TO_ID[train_ids]
        cv2.imwrite(str(gt_dir / f"{name}_gtFine_{kind}.png"), label)
    return tmp_path, train_ids, image


def test_dataset_reads_both_label_kinds(tree):
    root, train_ids, image = tree
    samples = find_samples(root, "train")
    assert [s.label_is_train_ids for s in samples] == [True, False]
    ds = CityscapesDataset(root, "train")
    assert len(ds) == 2
    for i in range(2):
        img, label = ds[i]
        assert img.dtype == torch.uint8 and img.shape == (3, 32, 64)
        assert label.dtype == torch.int64
        # labelIds went through the official table; ignore (255 -> id 0) comes back as 255
        np.testing.assert_array_equal(label.numpy(), train_ids)
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), image)  # RGB, not BGR
    img, _ = CityscapesDataset(root, "train", float_image=True)[0]
    assert img.dtype == torch.float32 and float(img.max()) <= 1.0


def test_missing_split_and_missing_labels(tmp_path, tree):
    root, _, _ = tree
    with pytest.raises(FileNotFoundError):
        CityscapesDataset(root, "val")
    for p in (root / "gtFine" / "train" / "bremen").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError):
        CityscapesDataset(root, "train")


def test_transforms_keep_image_and_label_aligned(tree):
    root, _, _ = tree
    transform = TrainTransform(crop_size=(48, 40), jitter=False)
    ds = TrainingSet(DecodedSplit(root, "train"), transform, seed=3)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:19] = CLASS_COLORS
    seen_pad = False
    for epoch in range(6):
        ds.set_epoch(epoch)
        img, label = ds[0]
        assert img.shape == (3, 48, 40) and label.shape == (48, 40)
        img, label = img.permute(1, 2, 0).numpy(), label.numpy().astype(np.uint8)
        # away from label edges (resampled image vs nearest label) the picture is the labels'
        inner = ~boundary_mask(label, 1) & (label != 255)
        assert inner.sum() > 20
        np.testing.assert_array_equal(img[inner], palette[label[inner]])
        seen_pad |= bool(((label == 255) & (img.sum(axis=2) == 0)).any())
    assert seen_pad, "scales below 1 must pad the label with 255"
    a1, b1 = ds[0]
    a2, b2 = ds[0]
    assert torch.equal(a1, a2) and torch.equal(b1, b2)  # same seed, epoch, index
    ds.set_epoch(100)
    assert not torch.equal(ds[0][1], b1)


def test_scaled_crop_equals_rescaling_the_whole_image_then_cropping():
    labels = _blocky_labels(64, 128)
    for scale in (0.5, 1.0, 2.0):
        rng = np.random.default_rng(7)
        _, crop = scaled_crop(colorize(labels), labels, rng, (32, 32), (scale, scale))
        big = np.kron(labels, np.ones((2, 2), np.uint8)) if scale == 2.0 else labels[::2, ::2]
        big = labels if scale == 1.0 else big
        # the crop is a window of the rescaled labels: find it among all positions
        windows = np.lib.stride_tricks.sliding_window_view(big, (32, 32))
        assert (windows == crop).all(axis=(2, 3)).any(), scale


def test_scaled_crop_contains_its_anchor_and_pads_small_images():
    labels = np.zeros((100, 200), np.uint8)
    labels[70, 150] = 5  # one pixel of class 5
    for seed in range(20):
        rng = np.random.default_rng(seed)
        _, crop = scaled_crop(colorize(labels), labels, rng, (16, 16), (1.0, 1.0), (70, 150))
        assert (crop == 5).sum() == 1
    _, crop = scaled_crop(colorize(labels), labels, np.random.default_rng(0), (64, 128),
                          (0.25, 0.25))  # fmt: skip
    assert crop.shape == (64, 128)
    assert (crop[:25, :50] != 255).all()
    assert (crop[25:] == 255).all() and (crop[:, 50:] == 255).all()


def test_decoded_split_matches_the_files_and_rebuilds_when_they_change(tree):
    root, train_ids, image = tree
    split = DecodedSplit(root, "train")
    assert len(split) == 2
    for index in range(2):
        np.testing.assert_array_equal(split.image(index), image)
        np.testing.assert_array_equal(split.label(index), train_ids)
        points = split.points(index)
        assert set(points[:, 0]) == set(np.unique(train_ids)) - {255}
        assert (train_ids[points[:, 1], points[:, 2]] == points[:, 0]).all()
    label_path = find_samples(root, "train")[0].label
    changed = train_ids.copy()
    changed[:16, :16] = 3
    cv2.imwrite(str(label_path), changed)
    np.testing.assert_array_equal(DecodedSplit(root, "train").label(0), changed)


def test_class_aware_items_are_crops_of_the_drawn_class(tree):
    root, train_ids, _ = tree
    split = DecodedSplit(root, "train")
    ds = TrainingSet(split, TrainTransform((8, 8), (1.0, 1.0), jitter=False), class_aware=1.0)
    drawn = set()
    for index in range(100):
        rng = np.random.default_rng(index)
        image_index, (y, x) = ds.pick(0, rng)
        drawn.add(int(train_ids[y, x]))
        assert image_index in (0, 1)
    # every class of the split is drawn, whatever its share of the pixels
    assert drawn == set(np.unique(train_ids)) - {255}
    assert ds.pick(0, np.random.default_rng(0))[1] is not None
    uniform = TrainingSet(split, TrainTransform((8, 8)), class_aware=0.0)
    assert uniform.pick(1, np.random.default_rng(0)) == (1, None)
    with pytest.raises(ValueError, match="class_aware"):
        TrainingSet(split, TrainTransform((8, 8)), class_aware=1.5)


def test_photometric_jitter_changes_colours_only():
    image = colorize(_blocky_labels(32, 64))
    rng = np.random.default_rng(1)
    outs = [photometric_jitter(image, rng) for _ in range(8)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert any(np.abs(o.astype(int) - image).mean() > 5 for o in outs)
