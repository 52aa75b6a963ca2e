"""The Cityscapes label table: 19 train classes, their colours, the official label-id to train-id
mapping. Data, models and metrics share it; none of them owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
