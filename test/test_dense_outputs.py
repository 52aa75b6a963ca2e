"""The refiner's training data: dense outputs computed once on whole images, cut with crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sparserefine_ros.data.cache import DecodedSplit
from sparserefine_ros.method import SparseRefine
from sparserefine_ros.models.registry import build_dense_model
from sparserefine_ros.tools.cli import main
from sparserefine_ros.training.dense_outputs import DenseOutputs, RefinerCrops


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    args = ["dataset", "generate", "--out", str(root), "--split", "train", "--count", "3",
            "--size", "128x64", "--workers", "1"]  # fmt: skip
    assert main(args) == 0
    return DecodedSplit(root, "train")


def _models():
    torch.manual_seed(0)
    dense = build_dense_model("hrnet", num_classes=19, widths=(8, 16), stem_width=8).eval()
    return dense, SparseRefine(19, tau=0.5, widths=(8,)).eval()


@torch.no_grad()
def test_crops_cut_the_whole_image_outputs_and_the_teacher_reads_full_resolution(split):
    dense, model = _models()
    outputs = DenseOutputs(split, dense, model, count=2, teacher=True)
    crops = RefinerCrops(split, outputs, (32, 48), seed=0)
    assert len(crops) == 2

    image, label, index, offset = crops[1]
    whole = torch.from_numpy(np.array(split.image(index))).permute(2, 0, 1)[None]
    full, low = model.preprocess(whole)
    low_logits = model.run_dense(dense, low)  # on the whole image, as at inference
    stride = whole.shape[-1] // low_logits.shape[-1]  # 8: output stride 4 at scale 0.5
    y, x = offset.tolist()
    assert stride == 8 and y % stride == 0 and x % stride == 0
    assert image.shape == (3, 32, 48) and label.shape == (32, 48)
    assert torch.equal(image, whole[0, :, y : y + 32, x : x + 48])

    targets = outputs.targets(torch.tensor([index]), offset[None], (32, 48))
    expected = low_logits[:, :, y // stride : (y + 32) // stride, x // stride : (x + 48) // stride]
    torch.testing.assert_close(targets.low_logits, expected, atol=2e-2, rtol=1e-2)  # float16

    coords = torch.tensor([[0, 0, 0], [0, 31, 47], [0, 10, 20]])
    native = model.run_dense(dense, model.normalize(full))  # at the model's output stride
    upsampled = F.interpolate(native, full.shape[-2:], mode="bilinear", align_corners=False)
    teacher = upsampled[0, :, coords[:, 1] + y, coords[:, 2] + x].T
    torch.testing.assert_close(targets.teacher(coords), teacher, atol=2e-2, rtol=1e-2)


def test_outputs_are_computed_once_per_dense_model(split):
    dense, model = _models()
    first = DenseOutputs(split, dense, model, count=2, teacher=False)
    again = DenseOutputs(split, dense, model, count=2, teacher=False)
    assert (
        again.dir == first.dir
        and first.targets(torch.tensor([0]), torch.tensor([[0, 0]]), (64, 128)).teacher is None
    )
    with torch.no_grad():
        next(dense.parameters()).add_(1.0)
    assert DenseOutputs(split, dense, model, count=2, teacher=False).dir != first.dir


def test_crops_must_fit_and_follow_the_dense_stride(split):
    dense, model = _models()
    outputs = DenseOutputs(split, dense, model, count=1, teacher=False)
    for crop in ((33, 48), (32, 256)):
        with pytest.raises(ValueError, match="refiner crop"):
            RefinerCrops(split, outputs, crop, seed=0)


def test_a_dense_model_without_weights_to_key_by_is_refused(split):
    _, model = _models()
    with pytest.raises(ValueError, match="cannot tell one"):
        DenseOutputs(split, lambda x: x, model, count=1, teacher=False)
