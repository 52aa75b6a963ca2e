"""The fixed-shape sparse stage: the eager stage's selection and classes, on static shapes that
torch.compile(fullgraph=True) compiles as one graph."""

import pytest
import torch
from torch import nn

from sparserefine_ros.method import SparseRefine, SparseRefinePipeline
from sparserefine_ros.method.fixed_stage import budget_pixels, fixed_sparse_stage

NUM_CLASSES = 4


def dense_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 1)
    ).eval()


def refiner(**settings) -> SparseRefine:
    """An untrained refiner with its weights shaken, so that it changes the dense classes."""
    torch.manual_seed(1)
    model = SparseRefine(NUM_CLASSES, tau=0.5, max_fraction=0.2, **settings).eval()
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(torch.randn_like(weight) * 0.3)
    return model


def images(batch=2, height=32, width=48) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=generator)


@torch.inference_mode()
def stage_inputs(model: SparseRefine, dense: nn.Module, frames: torch.Tensor):
    full, low = model.preprocess(frames)
    return full, model.run_dense(dense, low)


@pytest.mark.parametrize(
    "settings",
    [
        {"widths": (8, 16, 32), "use_probs": True, "context": 3, "patch": 3, "residual": True},
        {"widths": (8, 16), "use_coords": True},
        {
            "widths": (8,),
            "blocks": 0,
            "stem_kernel": 1,
            "use_probs": True,
            "context": 3,
            "patch": 3,
            "guide": 3,
        },
    ],
    ids=["unet-windows", "unet-coords", "guided-per-site"],
)
def test_fixed_stage_selects_and_classifies_as_the_eager_stage(settings):
    dense, model = dense_model(), refiner(**settings)
    eager = SparseRefinePipeline(dense, model)(images())
    with torch.inference_mode():
        out = fixed_sparse_stage(model, *stage_inputs(model, dense, images()))
    assert out.low_mask.any() and not out.low_mask.all()
    assert torch.equal(out.low_mask, eager.selection.low_mask)
    assert torch.equal(out.dense_classes, eager.dense_classes)
    assert not torch.equal(eager.classes, eager.dense_classes)  # the refiner changes pixels
    assert torch.equal(out.classes, eager.classes)
    torch.testing.assert_close(out.low_entropy, eager.selection.low_entropy)


def test_pipeline_option_gives_the_eager_result():
    dense, model = dense_model(), refiner(widths=(8, 16))
    expected = SparseRefinePipeline(dense, model)(images())
    result = SparseRefinePipeline(dense, model, fixed_stage=True)(images())
    assert torch.equal(result.classes, expected.classes)
    assert torch.equal(result.refine_mask, expected.refine_mask)
    assert result.num_selected == expected.num_selected
    assert result.timings_ms["select"] == result.timings_ms["fuse"] == 0.0  # one stage: refine


def test_budget_is_the_eager_budget_in_whole_blocks():
    model = refiner(widths=(8, 16))
    assert budget_pixels(model, (32, 48), (16, 24)) == 77  # ceil(0.2 * 1536) // 4
    model.tune(0.5, 1.0)
    assert budget_pixels(model, (32, 48), (16, 24)) == 16 * 24


def test_fixed_stage_needs_a_budget_and_whole_blocks():
    dense, model = dense_model(), refiner(widths=(8, 16))
    full, low_logits = stage_inputs(model, dense, images())
    with pytest.raises(ValueError, match="whole number"):
        fixed_sparse_stage(model, full[..., :47], low_logits)
    model.tune(0.5, None)
    with pytest.raises(ValueError, match="needs a budget"):
        fixed_sparse_stage(model, full, low_logits)
    with pytest.raises(ValueError, match="fixed_stage needs a budget"):
        SparseRefinePipeline(dense, model, fixed_stage=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        {"widths": (8, 16), "use_probs": True, "residual": True},
        {"widths": (8,), "blocks": 0, "stem_kernel": 1, "use_probs": True, "patch": 3, "guide": 3},
    ],
    ids=["unet", "guided-per-site"],
)
def test_compiles_as_one_graph_with_the_eager_outputs(settings):
    """fullgraph=True fails on any graph break (a data-dependent size, a host sync)."""
    dense, model = dense_model(), refiner(**settings)
    full, low_logits = stage_inputs(model, dense, images())
    compiled = torch.compile(fixed_sparse_stage, fullgraph=True, dynamic=False)
    with torch.inference_mode():
        expected, result = (
            fixed_sparse_stage(model, full, low_logits),
            compiled(model, full, low_logits),
        )
    for name in ("classes", "dense_classes", "low_classes", "low_mask"):
        assert torch.equal(getattr(result, name), getattr(expected, name)), name
    torch.testing.assert_close(result.low_entropy, expected.low_entropy)
