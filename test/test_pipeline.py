"""The inference pipeline on a tiny random dense model, and refiner checkpoints."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from sparserefine_ros.method import (
    CheckpointError,
    SparseRefine,
    SparseRefinePipeline,
    entropy,
    load_refiner,
    save_refiner,
    select_uncertain,
)
from sparserefine_ros.method.entropy import class_map
from sparserefine_ros.method.selection import bilinear_at, gather_patches, upsample_nearest
from sparserefine_ros.method.sparserefine import area_downscale

NUM_CLASSES = 4
STAGES = {"preprocess", "dense", "select", "refine", "fuse", "total"}


def tiny_dense_model(stride: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=stride, padding=1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 1)
    )


def random_images(batch=2, height=30, width=44, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=generator)


def make_pipeline(tau: float | None = None, dense=None, **settings) -> SparseRefinePipeline:
    """Pipeline whose ``tau`` defaults to the 70th percentile of the test images' entropy."""
    torch.manual_seed(1)
    dense = tiny_dense_model() if dense is None else dense
    model = SparseRefine(NUM_CLASSES, tau=0.0, **{"widths": (8, 16, 32), **settings})
    if tau is None:
        with torch.no_grad():
            low = model.preprocess(random_images())[1]
            tau = float(entropy(model.run_dense(dense.eval(), low)).quantile(0.7))
    model.tau = tau
    return SparseRefinePipeline(dense, model)


def test_outputs_at_full_resolution():
    pipeline = make_pipeline()
    images = random_images()
    result = pipeline(images)
    assert result.classes.shape == result.dense_classes.shape == (2, 30, 44)
    assert result.entropy.shape == result.refine_mask.shape == (2, 30, 44)
    assert result.classes.dtype == result.dense_classes.dtype == torch.uint8
    assert result.entropy.dtype == torch.float32 and result.refine_mask.dtype == torch.bool
    assert result.dense_size == (15, 22)
    assert result.num_selected == result.refine_mask.flatten(1).sum(1).tolist()
    assert all(n > 0 for n in result.num_selected)
    assert set(result.timings_ms) == STAGES and all(t >= 0 for t in result.timings_ms.values())

    # Dense prediction and entropy: the low-res ones, upsampled nearest (exact 2x here).
    model = pipeline.model
    with torch.no_grad():
        low_logits = model.run_dense(pipeline.dense_model, model.preprocess(images)[1])
    upsampled = F.interpolate(low_logits, size=(30, 44), mode="nearest")
    assert torch.equal(result.dense_classes, upsampled.argmax(1))
    torch.testing.assert_close(result.entropy, entropy(upsampled))
    assert torch.equal(result.refine_mask, result.entropy > model.tau)


def test_unselected_pixels_keep_the_dense_prediction():
    result = make_pipeline()(random_images())
    unselected = ~result.refine_mask
    assert torch.equal(result.classes[unselected], result.dense_classes[unselected])


def test_selected_pixels_take_the_refined_prediction():
    """Dense model never predicts class 3; a gate forced to the refiner, which says 3, must win."""
    dense = tiny_dense_model()
    with torch.no_grad():
        dense[2].bias[3] = -100.0
    pipeline = make_pipeline(dense=dense)
    refiner, ensembler = pipeline.model.refiner, pipeline.model.ensembler
    with torch.no_grad():
        refiner.classifier.weight.zero_()
        refiner.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 100.0]))
        ensembler.gate[-1].bias.fill_(-100.0)  # w = 0: fused = sparse logits
    result = pipeline(random_images())
    mask = result.refine_mask
    assert mask.any() and not mask.all()
    assert not (result.dense_classes == 3).any()
    assert (result.classes[mask] == 3).all()
    assert torch.equal(result.classes[~mask], result.dense_classes[~mask])


def test_deterministic():
    pipeline = make_pipeline()
    images = random_images()
    first, second = pipeline(images), pipeline(images)
    assert torch.equal(first.classes, second.classes)
    assert torch.equal(first.refine_mask, second.refine_mask)


def test_compiled_pipeline_gives_the_eager_outputs():
    """``compile_mode`` runs the dense model and the per-pixel statistics through torch.compile
    (inductor's C++ on the CPU)."""
    eager = make_pipeline()
    compiled = SparseRefinePipeline(eager.dense_model, eager.model, compile_mode="default")
    assert compiled.dense_model is not eager.dense_model
    assert compiled.statistics is not eager.statistics
    images = random_images()
    expected, result = eager(images), compiled(images)
    assert (result.classes == expected.classes).float().mean() > 0.999
    assert torch.equal(result.refine_mask, expected.refine_mask)
    torch.testing.assert_close(result.entropy, expected.entropy)


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile_mode 'fast'"):
        SparseRefinePipeline(tiny_dense_model(), SparseRefine(NUM_CLASSES), compile_mode="fast")


def test_batch_equals_images_one_by_one():
    pipeline = make_pipeline(use_coords=True, use_probs=True)
    images = torch.cat((random_images(1, seed=3), random_images(1, seed=4)))
    batched = pipeline(images)
    for index in range(2):
        single = pipeline(images[index : index + 1])
        assert torch.equal(batched.classes[index], single.classes[0])
        assert batched.num_selected[index] == single.num_selected[0]
    assert not torch.equal(batched.classes, batched.dense_classes)


def test_budget_caps_selection_per_image_in_whole_low_res_pixels():
    pipeline = make_pipeline(max_fraction=0.05)
    images = random_images()
    result = pipeline(images)
    # ceil(0.05 * 30 * 44) = 66 full-res pixels; each low-res pixel is a 2x2 block: 16 blocks.
    assert result.num_selected == [64, 64]
    # The blocks are those of highest entropy: the full-resolution reference keeps the same
    # pixels and two more, from the block that no longer fits whole.
    model = pipeline.model
    with torch.no_grad():
        low_logits = model.run_dense(pipeline.dense_model, model.preprocess(images)[1])
    full_entropy = F.interpolate(entropy(low_logits)[:, None], size=(30, 44), mode="nearest")[:, 0]
    reference = select_uncertain(full_entropy, model.tau, 0.05)
    assert reference.flatten(1).sum(1).tolist() == [66, 66]
    assert not (result.refine_mask & ~reference).any()


@pytest.mark.parametrize("size", [(30, 44), (31, 45), (17, 29)])
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("max_fraction", [None, 0.1])
def test_selection_lists_exactly_the_masked_pixels(size, scale, max_fraction):
    """Blocks of uneven size (non-integer scales, odd sizes) expand to the right pixels, in
    raster order, and the budget counts their real areas."""
    pipeline = make_pipeline(scale=scale, max_fraction=max_fraction)
    result = pipeline(random_images(height=size[0], width=size[1]))
    selection = result.selection
    assert torch.equal(selection.coords, torch.nonzero(result.refine_mask))
    assert (
        torch.equal(result.refine_mask, selection.upsample(selection.low_mask))
        and result.refine_mask.any()
    )
    if max_fraction is not None:
        budget = math.ceil(max_fraction * size[0] * size[1])
        assert max(result.num_selected) <= budget


def test_nothing_selected_skips_refinement():
    result = make_pipeline(tau=10.0)(random_images())  # above ln 4: no pixel qualifies
    assert result.num_selected == [0, 0] and not result.refine_mask.any()
    assert torch.equal(result.classes, result.dense_classes)
    assert result.timings_ms["refine"] == 0.0


def test_dense_output_at_an_output_stride_is_upsampled_as_a_segmentation_head_does():
    pipeline = make_pipeline(tau=0.5, dense=tiny_dense_model(stride=2))
    images = random_images(1, 33, 47)
    result = pipeline(images)
    assert result.classes.shape == (1, 33, 47) and result.dense_size == (16, 24)
    with torch.no_grad():
        low = pipeline.model.preprocess(images)[1]
        logits = pipeline.model.run_dense(pipeline.dense_model, low)
    assert logits.shape[-2:] == (8, 12)  # never resized as a whole
    upsampled = F.interpolate(logits, (16, 24), mode="bilinear", align_corners=False)
    expected = upsample_nearest(class_map(upsampled), (33, 47))
    assert torch.equal(result.dense_classes, expected)


def test_segment_numpy_matches_tensor_input():
    pipeline = make_pipeline()
    images = random_images(1)
    from_numpy = pipeline.segment_numpy(images[0].permute(1, 2, 0).numpy())
    assert torch.equal(from_numpy.classes, pipeline(images).classes)
    with pytest.raises(ValueError, match="uint8"):
        pipeline.segment_numpy(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        pipeline(images.float())


@pytest.mark.parametrize(
    "settings",
    [{"blocks": (1, 2, 1)}, {"widths": (8,), "blocks": 0, "stem_kernel": 1, "guide": 3}],
    ids=["unet", "guided"],
)
def test_checkpoint_round_trip(tmp_path, settings):
    pipeline = make_pipeline(max_fraction=0.3, use_probs=True, **settings)
    # Non-default running statistics and weights so the round trip has something to carry.
    pipeline.model.train()
    pipeline.model(*_inputs(pipeline))
    pipeline.model.eval()
    path = tmp_path / "refiner.safetensors"
    save_refiner(path, pipeline.model)
    loaded = load_refiner(path)
    assert loaded.config == pipeline.model.config
    for (name, value), (name_loaded, value_loaded) in zip(
        pipeline.model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == name_loaded and torch.equal(value, value_loaded)
    images = random_images()
    reloaded = SparseRefinePipeline(pipeline.dense_model, loaded)
    assert torch.equal(reloaded(images).classes, pipeline(images).classes)


def _inputs(pipeline):
    model = pipeline.model
    with torch.no_grad():
        full, low = model.preprocess(random_images())
        return full, model.run_dense(pipeline.dense_model, low)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no refiner checkpoint"):
        load_refiner(tmp_path / "missing.safetensors")

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_refiner(corrupt)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a SparseRefine checkpoint"):
        load_refiner(foreign)

    mismatched = tmp_path / "mismatched.safetensors"
    model = make_pipeline().model
    config = {**model.config, "widths": [8, 16], "blocks": [1, 1]}
    metadata = {"format": "sparserefine", "version": "1", "config": json.dumps(config)}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(mismatched), metadata)
    with pytest.raises(CheckpointError, match="do not match"):
        load_refiner(mismatched)

    good = tmp_path / "good.safetensors"
    save_refiner(good, make_pipeline().model)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        load_refiner(truncated)


def test_gather_patches_reads_each_window_with_edges_repeated():
    maps = torch.randn(2, 3, 6, 7)
    b, y, x = torch.tensor([0, 1, 1]), torch.tensor([0, 3, 5]), torch.tensor([0, 4, 6])
    out = gather_patches(maps, b, y, x, 3)
    padded = F.pad(maps, (1, 1, 1, 1), mode="replicate")
    for row, (bi, yi, xi) in enumerate(zip(b.tolist(), y.tolist(), x.tolist(), strict=True)):
        window = padded[bi, :, yi : yi + 3, xi : xi + 3]  # (C, 3, 3), centred on (yi, xi)
        torch.testing.assert_close(out[row], window.permute(1, 2, 0).flatten())
    torch.testing.assert_close(gather_patches(maps, b, y, x, 1), maps[b, :, y, x])


def test_preprocess_downscales_before_normalising_and_keeps_the_full_image_as_bytes():
    model = SparseRefine(4, widths=(8,))
    images = random_images()
    full, low = model.preprocess(images)
    assert full.dtype == torch.uint8 and torch.equal(full, images)
    expected = F.interpolate(model.normalize(images), low.shape[-2:], mode="area")
    torch.testing.assert_close(low, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(15, 22), (10, 11), (30, 44), (12, 17), (2, 2)])
@pytest.mark.parametrize("layout", ["nchw", "camera"])
def test_area_downscale_averages_blocks_as_area_interpolation(size, layout):
    images = random_images()  # 30x44: whole factors 2x2, 3x4, 1x1, none, and 15x22 per block
    if layout == "camera":  # an HWC array viewed as CHW, as camera frames arrive
        images = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    expected = F.interpolate(images.float(), size, mode="area")
    torch.testing.assert_close(area_downscale(images, size), expected, atol=1e-4, rtol=0)


def test_bilinear_at_gives_the_bilinearly_upsampled_map_at_each_site():
    maps = torch.randn(2, 3, 5, 7)
    full_size = (10, 13)  # not an integer multiple along x
    upsampled = F.interpolate(maps, full_size, mode="bilinear", align_corners=False)
    b, y, x = torch.meshgrid(*(torch.arange(n) for n in (2, *full_size)), indexing="ij")
    b, y, x = b.flatten(), y.flatten(), x.flatten()
    torch.testing.assert_close(bilinear_at(maps, b, y, x, full_size), upsampled[b, :, y, x])


def test_refiner_windows_are_validated_and_kept_in_the_config():
    model = SparseRefine(4, use_probs=True, patch=5, context=3, widths=(8,))
    assert model.refiner.in_channels == 3 * 25 + 4 * (1 + 9)  # probs at the site + window
    assert SparseRefine.from_config(model.config).config == model.config
    with pytest.raises(ValueError, match="patch must be an odd number"):
        SparseRefine(4, patch=2)
    with pytest.raises(ValueError, match="needs use_probs"):
        SparseRefine(4, context=3)
