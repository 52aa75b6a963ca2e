"""A split decoded once: images and labels in memory-mapped arrays, and where each class lies.

Decoding a 2048x1024 PNG pair costs about 0.1 s, as much as a training step of a CPU-sized
model on one crop; a training run reads each image hundreds of times. The cache holds the
decoded pixels in two flat ``uint8`` files that every DataLoader worker maps (the page cache
keeps them in memory once), plus up to ``POINTS_PER_CLASS`` random pixel positions of each
class in each image, from which class-aware crops pick their centre.

The cache lives in ``<root>/.cache/<split>/`` and is rebuilt when the split's files change
(names, sizes or modification times).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sparserefine_ros.labels import IGNORE_INDEX

from .cityscapes import Sample, find_samples, read_image, read_label

POINTS_PER_CLASS = 64
FORMAT = 1


def _fingerprint(samples: list[Sample]) -> str:
    digest = hashlib.sha256(str(FORMAT).encode())
    for sample in samples:
        for path in (sample.image, sample.label):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def class_points(label: np.ndarray, rng: np.random.Generator, per_class: int) -> np.ndarray:
    """Rows ``(class, y, x)``: up to ``per_class`` random pixels of each labelled class."""
    rows = []
    for cls in np.unique(label):
        if cls == IGNORE_INDEX:
            continue
        ys, xs = np.nonzero(label == cls)
        pick = rng.choice(len(ys), size=min(per_class, len(ys)), replace=False)
        rows.append(np.stack([np.full(len(pick), cls), ys[pick], xs[pick]], axis=1))
    return np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, 3), np.int32)


class DecodedSplit:
    """Random access to the decoded images, labels and class points of one split."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.samples = find_samples(root, split)
        missing = [s.name for s in self.samples if s.label is None]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images without gtFine labels, e.g. {missing[0]}"
            )
        self.dir = Path(root) / ".cache" / split
        self.fingerprint = fingerprint = _fingerprint(self.samples)
        index_path = self.dir / "index.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        if index.get("fingerprint") != fingerprint:
            index = self._build(fingerprint)
        self.shapes = [tuple(s) for s in index["shapes"]]
        self.offsets = np.array(index["offsets"], dtype=np.int64)
        self.point_offsets = np.array(index["point_offsets"], dtype=np.int64)
        self._images = np.memmap(self.dir / "images.u8", np.uint8, "r")
        self._labels = np.memmap(self.dir / "labels.u8", np.uint8, "r")
        self._points = np.load(self.dir / "points.npy", mmap_mode="r")

    def _build(self, fingerprint: str) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        shapes, offsets, point_offsets, points = [], [0], [0], []
        with (
            (self.dir / "images.u8").open("wb") as images,
            (self.dir / "labels.u8").open("wb") as labels,
        ):
            for sample in self.samples:
                image, label = read_image(sample.image), read_label(sample)
                if image.shape[:2] != label.shape:
                    raise ValueError(
                        f"{sample.name}: image {image.shape[:2]} vs label {label.shape}"
                    )
                images.write(image.tobytes())
                labels.write(label.tobytes())
                shapes.append(label.shape)
                offsets.append(offsets[-1] + label.size)
                points.append(class_points(label, rng, POINTS_PER_CLASS))
                point_offsets.append(point_offsets[-1] + len(points[-1]))
        np.save(self.dir / "points.npy", np.concatenate(points) if points else np.zeros((0, 3)))
        index = {"fingerprint": fingerprint, "shapes": shapes, "offsets": offsets,
                 "point_offsets": point_offsets}  # fmt: skip
        tmp = self.dir / "index.json.tmp"
        tmp.write_text(json.dumps(index))
        tmp.replace(self.dir / "index.json")  # last: a half-built cache is never taken as valid
        return index

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> np.ndarray:
        """RGB uint8 (H, W, 3), a read-only view of the cache."""
        h, w = self.shapes[index]
        start = self.offsets[index] * 3
        return self._images[start : start + h * w * 3].reshape(h, w, 3)

    def label(self, index: int) -> np.ndarray:
        """Train ids uint8 (H, W), a read-only view of the cache."""
        h, w = self.shapes[index]
        return self._labels[self.offsets[index] : self.offsets[index + 1]].reshape(h, w)

    def points(self, index: int) -> np.ndarray:
        """Rows ``(class, y, x)`` of this image (see :func:`class_points`)."""
        return np.asarray(self._points[self.point_offsets[index] : self.point_offsets[index + 1]])


class TrainingSet(Dataset):
    """Augmented crops of a decoded split: ``(image (3, h, w) uint8, label (h, w) int64)``.

    ``class_aware`` is the share of items that are rare-class crops instead of the indexed
    image: a class is drawn uniformly from those the split contains (so a class in a tenth of
    the images and 0.1 % of their pixels is drawn as often as road), then an image containing
    it, then one of its pixels, which the crop must contain. The generator of item ``index`` is
    seeded from ``(seed, epoch, index)``, so a crop is reproducible, differs per epoch
    (:meth:`set_epoch`), and does not depend on which DataLoader worker draws it.
    """

    def __init__(
        self, split: DecodedSplit, transform, seed: int = 0, class_aware: float = 0.0
    ) -> None:
        if not 0.0 <= class_aware <= 1.0:
            raise ValueError(f"class_aware must be in [0, 1], got {class_aware}")
        self.split, self.transform, self.seed = split, transform, seed
        self.class_aware = class_aware
        self.epoch = 0
        images_with: dict[int, list[int]] = {}
        for index in range(len(split)):
            for cls in np.unique(split.points(index)[:, 0]):
                images_with.setdefault(int(cls), []).append(index)
        self.images_with = {c: np.array(v) for c, v in sorted(images_with.items())}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def pick(self, index: int, rng: np.random.Generator) -> tuple[int, tuple[int, int] | None]:
        """The image to crop and the pixel its crop must contain (None: a uniform crop)."""
        if not self.images_with or rng.random() >= self.class_aware:
            return index, None
        cls = rng.choice(list(self.images_with))
        index = int(rng.choice(self.images_with[cls]))
        points = self.split.points(index)
        points = points[points[:, 0] == cls]
        _, y, x = points[rng.integers(len(points))]
        return index, (int(y), int(x))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        index, anchor = self.pick(index, rng)
        image, label = self.transform(self.split.image(index), self.split.label(index), rng, anchor)
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image_t, torch.from_numpy(label.astype(np.int64))
