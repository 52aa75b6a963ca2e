"""Cityscapes class table, official label-id to train-id mapping, and a Cityscapes-layout dataset.

The same reader serves real Cityscapes and the trees written by :mod:`sparserefine_ros.data.writer`,
so everything downstream (training, evaluation, demos) sees one format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from sparserefine_ros import visualization

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# RGB colours of the 19 train classes, as in cityscapesScripts' labels.py.
CLASS_COLORS = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip


@dataclass(frozen=True)
class Label:
    """One row of cityscapesScripts' label table (only the fields the project uses)."""

    name: str
    id: int
    train_id: int


# The official table: every label id, its train id (255 = ignored in training and evaluation).
LABELS = (
    Label("unlabeled", 0, 255), Label("ego vehicle", 1, 255),
    Label("rectification border", 2, 255), Label("out of roi", 3, 255), Label("static", 4, 255),
    Label("dynamic", 5, 255), Label("ground", 6, 255), Label("road", 7, 0),
    Label("sidewalk", 8, 1), Label("parking", 9, 255), Label("rail track", 10, 255),
    Label("building", 11, 2), Label("wall", 12, 3), Label("fence", 13, 4),
    Label("guard rail", 14, 255), Label("bridge", 15, 255), Label("tunnel", 16, 255),
    Label("pole", 17, 5), Label("polegroup", 18, 255), Label("traffic light", 19, 6),
    Label("traffic sign", 20, 7), Label("vegetation", 21, 8), Label("terrain", 22, 9),
    Label("sky", 23, 10), Label("person", 24, 11), Label("rider", 25, 12), Label("car", 26, 13),
    Label("truck", 27, 14), Label("bus", 28, 15), Label("caravan", 29, 255),
    Label("trailer", 30, 255), Label("train", 31, 16), Label("motorcycle", 32, 17),
    Label("bicycle", 33, 18), Label("license plate", -1, 255),
)  # fmt: skip

LABEL_ID = {label.name: label.id for label in LABELS}


def _id_to_train_lut() -> np.ndarray:
    # Values not in the table (and license plate's -1, which a uint8 PNG cannot hold) map to ignore.
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in LABELS:
        if label.id >= 0:
            lut[label.id] = label.train_id
    return lut


ID_TO_TRAIN_ID = _id_to_train_lut()
# Train id back to label id, for writing labelIds files; ignore goes to "unlabeled" (0).
TRAIN_ID_TO_ID = np.zeros(256, dtype=np.uint8)
for _label in LABELS:
    if _label.train_id != IGNORE_INDEX:
        TRAIN_ID_TO_ID[_label.train_id] = _label.id


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a labelIds array (uint8, values 0..33) to train ids (0..18, 255 ignored)."""
    return ID_TO_TRAIN_ID[np.asarray(label_ids, dtype=np.uint8)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8 picture of a train-id map in Cityscapes' colours; ignore is black."""
    return visualization.colorize(train_ids, CLASS_COLORS)


@dataclass(frozen=True)
class Sample:
    """Paths of one image and its label file; ``label_is_train_ids`` says which kind it is."""

    name: str
    image: Path
    label: Path | None
    label_is_train_ids: bool


def find_samples(root: str | Path, split: str) -> list[Sample]:
    """All ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` under root with their gtFine labels.

    labelTrainIds is preferred; labelIds is the fallback (real Cityscapes ships only labelIds
    until its createTrainIdLabelImgs script is run). Sorted by name, so the order is stable.
    """
    root = Path(root)
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise FileNotFoundError(f"no image folder {image_dir}")
    samples = []
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        name = image.name[: -len("_leftImg8bit.png")]
        gt_dir = root / "gtFine" / split / image.parent.name
        train_ids = gt_dir / f"{name}_gtFine_labelTrainIds.png"
        label_ids = gt_dir / f"{name}_gtFine_labelIds.png"
        if train_ids.is_file():
            samples.append(Sample(name, image, train_ids, True))
        elif label_ids.is_file():
            samples.append(Sample(name, image, label_ids, False))
        else:
            samples.append(Sample(name, image, None, False))
    return samples


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label(sample: Sample) -> np.ndarray:
    """Train-id map (H, W) uint8 of a sample, mapping labelIds through the official table."""
    if sample.label is None:
        raise FileNotFoundError(f"no gtFine label for {sample.name}")
    label = cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise OSError(f"cannot read single-channel label {sample.label}")
    return label if sample.label_is_train_ids else label_ids_to_train_ids(label)


class CityscapesDataset(Dataset):
    """Images and train-id labels of one split of a Cityscapes-layout tree, read from disk.

    Returns ``(image, label)``: image is a (3, H, W) RGB tensor, uint8 or float32 in [0, 1]
    (``float_image``); label is (H, W) int64 with 255 for ignore. Evaluation reads through this;
    training crops come from :class:`~sparserefine_ros.data.cache.TrainingSet`.
    """

    def __init__(self, root: str | Path, split: str, float_image: bool = False) -> None:
        self.samples = find_samples(root, split)
        missing = [s.name for s in self.samples if s.label is None]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images without gtFine labels, e.g. {missing[0]}"
            )
        self.float_image = float_image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = read_image(sample.image)
        label = read_label(sample)
        if image.shape[:2] != label.shape:
            raise ValueError(f"{sample.name}: image {image.shape[:2]} vs label {label.shape}")
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.float_image:
            image_t = image_t.float().div_(255.0)
        return image_t, torch.from_numpy(label.astype(np.int64))
