"""The frozen dense model's outputs on training images, computed once and memory-mapped.

The refiner trains for many epochs over a dense model that does not change. Running that model
every step, at the dense scale and (as the distillation teacher) at full resolution, costs more
than the refiner's own step on a CPU; here it runs once per image, on the whole image as at
inference (a crop would change what a model with image-level context predicts), and the
refiner trains on crops cut from the image and from these outputs.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from sparserefine_ros.data.cache import DecodedSplit
from sparserefine_ros.method.selection import bilinear_at
from sparserefine_ros.method.sparserefine import DenseModel, SparseRefine
from sparserefine_ros.method.training import DenseTargets

# What the cached files hold; a new layout never reads an older cache.
LAYOUT = "logits at the output stride"


def _fingerprint(
    split: DecodedSplit, dense_model: DenseModel, model: SparseRefine, count: int, teacher: bool
) -> str:
    """Key of the outputs: the images, the settings and the dense model's weights (a module's
    tensors, or the graph file of an ONNX model)."""
    key = [split.fingerprint, model.scale, count, teacher, LAYOUT]
    digest = hashlib.sha256(json.dumps(key).encode())
    if isinstance(dense_model, torch.nn.Module):
        for tensor in dense_model.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(getattr(dense_model, "path", None), Path):
        digest.update(dense_model.path.read_bytes())
    else:
        raise ValueError(
            f"cannot tell one {type(dense_model).__name__} from another to cache its outputs: "
            "train the refiner over a torch module or an ONNX file"
        )
    return digest.hexdigest()[:16]


class DenseOutputs:
    """The dense model's logits on the dense-scale image (float16 at its output stride, as
    ``run_dense`` gives them) of the first ``count`` images of ``split`` and, with ``teacher``,
    its logits on the full-resolution image, under ``split``'s cache directory, keyed by the
    images and the weights. The image size must be an integer multiple of the logits' (crops
    are cut on whole output pixels)."""

    def __init__(
        self,
        split: DecodedSplit,
        dense_model: DenseModel,
        model: SparseRefine,
        count: int,
        teacher: bool,
    ) -> None:
        if count < 1:
            raise ValueError(f"need at least one image for the dense outputs, got {count}")
        self.count = min(int(count), len(split))
        sizes = {split.shapes[i] for i in range(self.count)}
        if len(sizes) != 1:
            raise ValueError(f"dense outputs need images of one size, got {sorted(sizes)}")
        self.image_size = sizes.pop()
        self.teacher = bool(teacher)
        key = _fingerprint(split, dense_model, model, self.count, self.teacher)
        self.dir = split.dir.parent / "dense" / key
        if not (self.dir / "index.json").is_file():
            self._build(split, dense_model, model)
        index = json.loads((self.dir / "index.json").read_text())
        self.low_shape = tuple(index["low_shape"])
        if self.image_size[0] % self.low_shape[1] or self.image_size[1] % self.low_shape[2]:
            raise ValueError(
                f"refiner training needs images ({self.image_size}) an integer multiple of the "
                f"dense logits' size ({self.low_shape[1:]}): choose another dense scale"
            )
        self.teacher_shape = tuple(index["teacher_shape"]) if self.teacher else None
        self._low = np.memmap(self.dir / "low.f16", np.float16, "r").reshape(-1, *self.low_shape)
        if self.teacher:
            self._teacher = np.memmap(self.dir / "teacher.f16", np.float16, "r").reshape(
                -1, *self.teacher_shape
            )

    @torch.no_grad()
    def _build(self, split: DecodedSplit, dense_model: DenseModel, model: SparseRefine) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        device = model.mean.device
        if isinstance(dense_model, torch.nn.Module):
            dense_model.eval()
        shapes = {}
        teacher_path = self.dir / "teacher.f16"
        with (
            (self.dir / "low.f16").open("wb") as low_file,
            teacher_path.open("wb") if self.teacher else nullcontext() as teacher_file,
        ):
            for index in tqdm(range(self.count), desc="dense outputs", unit="img"):
                image = torch.from_numpy(np.array(split.image(index)))
                full, low = model.preprocess(image.permute(2, 0, 1)[None].to(device))
                low_logits = model.run_dense(dense_model, low)[0]
                shapes["low_shape"] = list(low_logits.shape)
                low_file.write(low_logits.half().cpu().numpy().tobytes())
                if self.teacher:
                    native = model.run_dense(dense_model, model.normalize(full))[0]
                    shapes["teacher_shape"] = list(native.shape)
                    teacher_file.write(native.half().cpu().numpy().tobytes())
        tmp = self.dir / "index.json.tmp"
        tmp.write_text(json.dumps(shapes))
        tmp.replace(self.dir / "index.json")  # last: a half-built cache is never taken as valid

    def targets(self, indices: torch.Tensor, offsets: torch.Tensor, crop: tuple[int, int]):
        """``DenseTargets`` of a batch of crops: image ``indices[i]`` cut at full-resolution
        ``offsets[i]`` = (y, x) to ``crop`` = (height, width)."""
        height, width = self.image_size
        low_h, low_w = self.low_shape[1:]
        fy, fx = height // low_h, width // low_w
        rows = []
        for index, (y, x) in zip(indices.tolist(), offsets.tolist(), strict=True):
            window = self._low[
                index, :, y // fy : (y + crop[0]) // fy, x // fx : (x + crop[1]) // fx
            ]
            rows.append(torch.from_numpy(np.array(window)))  # a copy: the memmap is read-only
        low_logits = torch.stack(rows).float()
        if not self.teacher:
            return DenseTargets(low_logits)
        native = torch.from_numpy(np.stack([self._teacher[i] for i in indices.tolist()])).float()

        def teacher(coords: torch.Tensor) -> torch.Tensor:
            b, y, x = coords.cpu().unbind(1)
            y, x = y + offsets[b, 0], x + offsets[b, 1]
            return bilinear_at(native, b, y, x, self.image_size).to(coords.device)

        return DenseTargets(low_logits, teacher)


class RefinerCrops(Dataset):
    """Crops of the images ``DenseOutputs`` covers: (image (3, h, w) uint8, labels (h, w)
    int64, image index, offset (y, x)). Offsets are multiples of the dense logits' stride so the
    dense logits are cut exactly; each item's crop depends only on (seed, epoch, index)."""

    def __init__(
        self, split: DecodedSplit, outputs: DenseOutputs, crop: tuple[int, int], seed: int
    ) -> None:
        height, width = outputs.image_size
        self.stride = (height // outputs.low_shape[1], width // outputs.low_shape[2])
        if (
            crop[0] > height
            or crop[1] > width
            or crop[0] % self.stride[0]
            or crop[1] % self.stride[1]
        ):
            raise ValueError(
                f"refiner crop {crop} must fit the {outputs.image_size} images and be a multiple "
                f"of the dense stride {self.stride}"
            )
        self.split, self.outputs, self.crop, self.seed = split, outputs, tuple(crop), seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.outputs.count

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        (height, width), (ch, cw) = self.outputs.image_size, self.crop
        y = int(rng.integers((height - ch) // self.stride[0] + 1)) * self.stride[0]
        x = int(rng.integers((width - cw) // self.stride[1] + 1)) * self.stride[1]
        image = self.split.image(index)[y : y + ch, x : x + cw]
        label = self.split.label(index)[y : y + ch, x : x + cw]
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return image_t, torch.from_numpy(label.astype(np.int64)), index, torch.tensor([y, x])
