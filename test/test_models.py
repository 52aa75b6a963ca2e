"""Dense model families, the user's TorchScript/ONNX/transformers models, segmenter checkpoints
and the public inference API."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import printed_by_fresh_interpreter
from torch import nn

from sparserefine_ros import api
from sparserefine_ros.method.errors import CheckpointError
from sparserefine_ros.method.pipeline import SparseRefinePipeline
from sparserefine_ros.method.sparserefine import SparseRefine
from sparserefine_ros.models import (
    Segmenter,
    SegmenterError,
    build_dense_model,
    checkpoint_names,
    dense_model_names,
    inference_model,
    init_model,
    load_segmenter,
    register_dense_model,
    save_segmenter,
)
from sparserefine_ros.models.evaluation import dense_predict
from sparserefine_ros.models.external import onnx_available
from sparserefine_ros.models.segformer import SegFormer
from sparserefine_ros.tools.cli import main

NAMES = ["a", "b", "c", "d", "e"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Everything here must work without a network: transformers may not try to reach the Hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)


def _image(h=64, w=96, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _segmenter(family: str, **dense) -> Segmenter:
    model = build_dense_model(family, len(NAMES), **dense).eval()
    return Segmenter(model, NAMES, refiner=_refiner())


def _refiner() -> SparseRefine:
    # An untrained model is uncertain everywhere; the budget keeps both paths of the pipeline.
    return SparseRefine(len(NAMES), tau=0.0, max_fraction=0.3, widths=(8, 16))


class _Tiny(nn.Module):
    """A user's own model: normalized images -> logits at half resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, len(NAMES), 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_hrnet_deepened_by_a_block_per_branch_predicts_as_before():
    """New blocks are the identity (their last BatchNorm starts at zero), whatever the trained
    weights and statistics: deepening a trained model keeps its prediction."""
    torch.manual_seed(0)
    shallow = build_dense_model("hrnet", 7, widths=(8, 16, 32))
    with torch.no_grad():  # trained-looking: no zero BatchNorm, statistics not the defaults
        for module in shallow.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    deeper = build_dense_model("hrnet", 7, widths=(8, 16, 32), blocks=2)
    missing, unexpected = deeper.load_state_dict(shallow.state_dict(), strict=False)
    assert missing and not unexpected  # only the new blocks are new
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(deeper.eval()(images), shallow.eval()(images))


def test_registry_lists_and_builds_both_families():
    assert {"hrnet", "segformer"} <= set(dense_model_names())
    with pytest.raises(ValueError, match="unknown dense model 'nope'"):
        build_dense_model("nope", 3)


def test_registry_rejects_a_class_without_config():
    with pytest.raises(TypeError, match="config"):
        register_dense_model("no-config")(nn.Conv2d)
    with pytest.raises(ValueError, match="already registered"):
        register_dense_model("hrnet")(SegFormer)


@pytest.mark.parametrize("family", ["hrnet", "segformer"])
@pytest.mark.parametrize("size", [(64, 64), (36, 52)])
def test_families_give_quarter_resolution_logits(family, size):
    model = build_dense_model(family, 7).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, *size))
    assert logits.shape[:2] == (2, 7)
    assert [abs(s * 4 - full) < 8 for s, full in zip(logits.shape[-2:], size, strict=True)] == [
        True,
        True,
    ]
    assert build_dense_model(family, **model.config).config == model.config


def test_hrnet_context_sees_the_whole_image_and_starts_as_the_identity():
    plain = build_dense_model("hrnet", 7).eval()
    torch.manual_seed(0)
    context = build_dense_model("hrnet", 7, context_bins=(1, 2)).eval()
    context.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(context(images), plain(images))  # zero-initialised output
        torch.nn.init.normal_(context.context.project.weight)
        before = context(images)
        changed = images.clone()
        changed[..., :16, :16] = 5.0  # a corner changes the prediction 200+ pixels away...
        far = (..., slice(56, None), slice(56, None))  # (logits at 1/4 resolution)
        assert (context(changed) - before)[far].abs().amax() > 0
        assert (plain(changed) - plain(images))[far].abs().amax() == 0  # ...only with context
    assert build_dense_model("hrnet", **context.config).config == context.config


def test_segformer_from_a_saved_transformers_directory(tmp_path):
    model = build_dense_model("segformer", len(NAMES), hidden_sizes=[8, 16, 24, 32]).eval()
    model.save_pretrained(tmp_path / "hf", NAMES)
    (tmp_path / "hf" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]})
    )
    loaded = load_segmenter(tmp_path / "hf")
    assert loaded.class_names == NAMES
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.25, 0.25, 0.25)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.dense_model(x), model(x), rtol=0, atol=0)


def test_segformer_from_scratch_has_he_initialised_convolutions():
    model = build_dense_model("segformer", len(NAMES), hidden_sizes=[32, 64, 160, 256])
    stages = model.model.segformer.stages
    patch_embedding = stages[0].patch_embeddings.proj  # 7x7, 3 -> 32 channels
    depthwise = stages[3].blocks[0].mlp.dwconv.dwconv  # 3x3, one filter per channel
    for conv, fan_out in ((patch_embedding, 7 * 7 * 32), (depthwise, 3 * 3)):
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)
    # transformers' own draw (std 0.02) stays on the linear layers, as in the reference.
    assert stages[3].blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)


def _roundtrip(segmenter: Segmenter, directory) -> None:
    # One thread: multi-threaded scatter-adds may sum in another order, and an untrained model's
    # near-tied logits would turn that rounding into different classes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipeline = SparseRefinePipeline(segmenter.dense_model, segmenter.refiner.eval())
        expected = inference_model(pipeline, _image())
        save_segmenter(directory, segmenter)
        loaded = init_model(directory)
        result = inference_model(loaded, _image())
    finally:
        torch.set_num_threads(threads)
    assert result.num_selected == [math.ceil(0.3 * 64 * 96)]
    assert torch.equal(result.classes, expected.classes)
    assert torch.equal(result.dense_classes, expected.dense_classes)
    assert loaded.class_names == NAMES
    assert loaded.palette.shape == (len(NAMES), 3) and loaded.palette.dtype == np.uint8


@pytest.mark.parametrize("family", ["hrnet", "segformer"])
def test_checkpoint_round_trip_gives_identical_outputs(family, tmp_path):
    _roundtrip(_segmenter(family), tmp_path / family)


def test_torchscript_model_loads_and_round_trips(tmp_path):
    model = _Tiny().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        torch.jit.trace(model, torch.randn(1, 3, 32, 32)).save(tmp_path / "user.pt")
    plain = load_segmenter(tmp_path / "user.pt")
    assert plain.refiner is None and len(plain.class_names) == 19  # no metadata: Cityscapes
    x = torch.randn(1, 3, 40, 24)
    torch.testing.assert_close(plain.dense_model(x), model(x))
    segmenter = Segmenter(
        plain.dense_model, NAMES, refiner=_refiner(), dense_file=tmp_path / "user.pt"
    )
    _roundtrip(segmenter, tmp_path / "bundle")
    assert (tmp_path / "bundle" / "dense.pt").is_file()


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime is not installed (optional extra)")
def test_onnx_model_loads_and_round_trips(tmp_path):
    pytest.importorskip("onnx", reason="exporting the test model needs the onnx package")
    model = _Tiny().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (torch.randn(1, 3, 32, 32),), str(tmp_path / "user.onnx"), dynamo=False,
            input_names=["images"], dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}},
        )  # fmt: skip
    plain = load_segmenter(tmp_path / "user.onnx")
    x = torch.randn(2, 3, 40, 24)
    torch.testing.assert_close(plain.dense_model(x), model(x), rtol=1e-4, atol=1e-4)
    onnx_file = tmp_path / "user.onnx"
    segmenter = Segmenter(plain.dense_model, NAMES, refiner=_refiner(), dense_file=onnx_file)
    _roundtrip(segmenter, tmp_path / "bundle")


def test_init_model_overrides_and_inputs(tmp_path):
    save_segmenter(tmp_path / "m", _segmenter("hrnet"))
    pipeline = init_model(tmp_path / "m", tau=0.0, max_fraction=0.1, scale=0.25)
    assert isinstance(pipeline, SparseRefinePipeline)
    result = inference_model(pipeline, [_image(seed=1), _image(seed=2)])
    assert result.classes.shape == (2, 64, 96)
    assert result.dense_size == (16, 24)
    # The budget binds: ceil(0.1 * 64 * 96) = 615 pixels hold 38 whole 4x4 dense pixels.
    assert result.num_selected == [608, 608]
    assert inference_model(pipeline, _image()[None]).classes.shape == (1, 64, 96)
    with pytest.raises(TypeError, match="unknown overrides"):
        init_model(tmp_path / "m", widths=(4,))
    with pytest.raises(ValueError, match="max_fraction"):
        init_model(tmp_path / "m", max_fraction=2.0)
    with pytest.raises(ValueError, match="uint8"):
        inference_model(pipeline, _image().astype(np.float32))
    assert api.init_model is init_model and api.inference_model is inference_model


def _saved(tmp_path, family="hrnet"):
    directory = tmp_path / "ckpt"
    save_segmenter(directory, _segmenter(family))
    return directory


def test_missing_and_unknown_paths_give_clear_errors(tmp_path):
    with pytest.raises(SegmenterError, match="no such file or directory"):
        load_segmenter(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegmenterError, match=r"empty: not a model"):
        load_segmenter(tmp_path / "empty")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(SegmenterError, match=r"model.bin.*unknown model file type"):
        load_segmenter(tmp_path / "model.bin")
    (tmp_path / "broken.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(SegmenterError, match=r"broken.pt: cannot read"):
        load_segmenter(tmp_path / "broken.pt")
    assert issubclass(SegmenterError, CheckpointError)


def test_missing_file_in_checkpoint(tmp_path):
    directory = _saved(tmp_path)
    (directory / "dense.safetensors").unlink()
    with pytest.raises(SegmenterError, match=r"dense.safetensors: missing file"):
        load_segmenter(directory)


def test_corrupt_files_in_checkpoint(tmp_path):
    directory = _saved(tmp_path)
    (directory / "dense.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(SegmenterError, match=r"dense.safetensors: corrupt safetensors"):
        load_segmenter(directory)
    (directory / "segmenter.json").write_text("{not json")
    with pytest.raises(SegmenterError, match=r"segmenter.json: corrupt JSON"):
        load_segmenter(directory)


def test_mismatched_configs_in_checkpoint(tmp_path):
    directory = _saved(tmp_path)
    meta_path = directory / "segmenter.json"
    meta = json.loads(meta_path.read_text())
    wrong = {
        **meta,
        "dense": {**meta["dense"], "config": {**meta["dense"]["config"], "widths": [8]}},
    }
    meta_path.write_text(json.dumps(wrong))
    with pytest.raises(SegmenterError, match="weights do not match the hrnet config"):
        load_segmenter(directory)
    meta_path.write_text(json.dumps({**meta, "class_names": NAMES[:3], "palette": None}))
    with pytest.raises(SegmenterError, match="mismatched checkpoint: dense model has 5 classes"):
        load_segmenter(directory)
    meta_path.write_text(json.dumps({**meta, "mean": [0.5, 0.5, 0.5]}))
    with pytest.raises(SegmenterError, match="refiner normalises with mean"):
        load_segmenter(directory)
    meta_path.write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(SegmenterError, match="not a segmenter checkpoint"):
        load_segmenter(directory)


def test_dense_only_checkpoint_is_refused_by_init_model(tmp_path):
    segmenter = _segmenter("hrnet")
    segmenter.refiner = None
    save_segmenter(tmp_path / "dense", segmenter)
    assert load_segmenter(tmp_path / "dense").refiner is None
    with pytest.raises(SegmenterError, match="has no refiner"):
        init_model(tmp_path / "dense")


def test_models_command_lists_the_shipped_checkpoints(capsys):
    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == checkpoint_names()
    assert main(["models", "--families"]) == 0
    assert capsys.readouterr().out.split() == dense_model_names()


@pytest.mark.parametrize("name", checkpoint_names())
def test_shipped_checkpoints_load_and_run(name):
    pipeline = init_model(name)
    assert len(pipeline.class_names) == 19
    result = inference_model(pipeline, _image(128, 256))
    assert result.classes.shape == (1, 128, 256)
    assert "## Training" in load_segmenter(name).card


def test_dense_predict_low_resolution_is_the_pipelines_dense_prediction():
    """Evaluation's dense_low mode and SparseRefine start from the same class map."""
    segmenter = _segmenter("hrnet")
    pipeline = SparseRefinePipeline(segmenter.dense_model, segmenter.refiner.eval())
    images = torch.from_numpy(_image(61, 93)).permute(2, 0, 1)[None]  # odd sizes: uneven blocks
    low = dense_predict(pipeline, images, full_resolution=False)
    assert torch.equal(low, pipeline(images).dense_classes.long())
    full = dense_predict(pipeline, images, full_resolution=True)
    assert full.shape == low.shape == (1, 61, 93)


def test_loading_an_hrnet_does_not_import_transformers():
    """The registry imports a family's module when the family is first built, not all of them."""
    code = (
        "import sys; from sparserefine_ros.models import init_model, dense_model_names; "
        "init_model('hrnet-synth'); assert 'segformer' in dense_model_names(); "
        "print('transformers' in sys.modules)"
    )
    assert printed_by_fresh_interpreter(code) == "False"
