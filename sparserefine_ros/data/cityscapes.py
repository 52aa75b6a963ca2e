"""Cityscapes-layout trees: finding samples, reading images and labels, and the dataset.

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

from sparserefine_ros.labels import label_ids_to_train_ids


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
