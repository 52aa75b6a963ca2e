"""The models a device check runs: shipped checkpoints, random-init models of each family or
of the paper's sizes, and the synthetic street scenes they are timed on."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparserefine_ros.data.scenes import generate_scene
from sparserefine_ros.method import entropy
from sparserefine_ros.method.pipeline import SparseRefinePipeline
from sparserefine_ros.method.sparserefine import SparseRefine
from sparserefine_ros.models import (
    build_dense_model,
    checkpoint_names,
    dense_model_names,
    init_model,
)

NUM_CLASSES = 19


SCENES = 2  # distinct frames, cycled through the timed runs


# Random-init dense models the size of the paper's (HRNet-W48, SegFormer-B5), by name in
# ``--models``: on a GPU the shipped CPU-sized models are launch-bound (full and half resolution
# cost about the same), so only a model of this size shows what skipping full resolution saves.
PAPER_SIZED = {
    "hrnet-w48": ("hrnet", {"widths": [48, 96, 192, 384], "blocks": 4, "stem_width": 64,
                            "head_width": 720}),
    "segformer-b5": ("segformer", {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 6, 40, 3],
                                   "num_attention_heads": [1, 2, 5, 8], "sr_ratios": [8, 4, 2, 1],
                                   "decoder_hidden_size": 768}),
}  # fmt: skip


def scene_batches(size: tuple[int, int], seed: int) -> list[torch.Tensor]:
    """Synthetic street scenes as (1, 3, H, W) uint8, laid out as a camera driver delivers them."""
    return [
        torch.from_numpy(generate_scene(seed + i, size=size).image).permute(2, 0, 1)[None]
        for i in range(SCENES)
    ]


def model_zoo(
    names: list[str] | None, calibration: list[torch.Tensor], fraction: float
) -> list[tuple[str, Callable[[], tuple[dict, SparseRefinePipeline]]]]:
    """(name, loader) per model; a loader gives the JSON entry to fill and a CPU pipeline."""

    def checkpoint(name: str):
        return lambda: ({"source": "checkpoint"}, init_model(name, "cpu"))

    def random_init(family: str, config: dict | None = None):
        def load():
            return {
                "source": "random-init",
                "note": f"no trained checkpoint: random weights, tau selects {fraction:.0%}",
                **({"config": config} if config else {}),
            }, random_pipeline(family, calibration, fraction, config or {})

        return load

    try:
        families = dense_model_names()
    except ImportError as error:  # a family's library (transformers) is missing: list none
        print(f"built-in model families unavailable: {error}", flush=True)
        families = []
    if names is None:
        names = checkpoint_names()
        if not names:
            return [(family, random_init(family)) for family in families]
    shipped = set(checkpoint_names())
    loaders = []
    for name in names:
        if name in PAPER_SIZED:
            loaders.append((name, random_init(*PAPER_SIZED[name])))
        elif name in families and name not in shipped:
            loaders.append((name, random_init(name)))
        else:
            loaders.append((name, checkpoint(name)))
    return loaders


def random_pipeline(
    family: str, calibration: list[torch.Tensor], fraction: float, config: dict
) -> SparseRefinePipeline:
    """Family ``family`` with random weights; ``tau`` selects ``fraction`` of the pixels of the
    ``calibration`` images (the timed ones), as a trained model's calibration would, and a
    budget of ``fraction`` bounds every frame (what the fixed-shape stage needs)."""
    dense = build_dense_model(family, NUM_CLASSES, **config).eval()
    refiner = SparseRefine(NUM_CLASSES)
    with torch.inference_mode():
        values = torch.cat(
            [
                entropy(refiner.run_dense(dense, refiner.preprocess(x)[1])).flatten()
                for x in calibration
            ]
        )
    refiner.tune(float(torch.quantile(values, 1.0 - fraction)), fraction)
    return SparseRefinePipeline(dense, refiner, "cpu")
