"""SegFormer (hierarchical efficient-attention encoder + all-MLP decoder) from HF ``transformers``.

Using the implementation users already have means a real Cityscapes SegFormer checkpoint saved
with ``save_pretrained`` (a local directory) loads as is; the built-in configurations are small
enough for a CPU. Nothing here touches the network: configs are built in code and pretrained
directories are read with ``local_files_only``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from .registry import register_dense_model

# The SegformerConfig fields that define the architecture (everything a rebuild needs).
ARCHITECTURE_KEYS = (
    "num_encoder_blocks", "depths", "sr_ratios", "hidden_sizes", "patch_sizes", "strides",
    "num_attention_heads", "mlp_ratios", "hidden_act", "decoder_hidden_size", "layer_norm_eps",
)  # fmt: skip

# CPU-sized default: B0's layout with half the widths, one block per stage and a narrow decoder.
TINY = {
    "hidden_sizes": [16, 32, 80, 128],
    "depths": [1, 1, 2, 1],
    "num_attention_heads": [1, 1, 2, 4],
    "sr_ratios": [8, 4, 2, 1],
    "decoder_hidden_size": 64,
}


def init_convolutions_fan_out(model: nn.Module) -> None:
    """He initialisation (fan-out) of every convolution, as the SegFormer reference trains it.

    ``transformers`` draws convolutions like linear layers (normal, std 0.02). Under pretrained
    weights that never matters; from scratch it shrinks a 3x3 depthwise convolution's output to a
    few hundredths of its input, and the narrow CPU-sized model learned markedly slower.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, std=math.sqrt(2.0 / (fan_out // module.groups)))
            if module.bias is not None:
                nn.init.zeros_(module.bias)


@register_dense_model("segformer")
class SegFormer(nn.Module):
    """``SegformerForSemanticSegmentation`` as a plain ``images -> logits (1/4 resolution)`` module.

    Keyword arguments are ``SegformerConfig`` fields (defaults: ``TINY``); ``pretrained`` wraps
    a loaded model instead (``from_pretrained``), so a large one is not also built at random.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        pretrained: SegformerForSemanticSegmentation | None = None,
        **config,
    ) -> None:
        super().__init__()
        if pretrained is not None:
            if config or pretrained.config.num_labels != num_classes:
                raise ValueError("a pretrained SegFormer brings its own config and classes")
            self.model = pretrained
            return
        unknown = set(config) - set(ARCHITECTURE_KEYS)
        if unknown:
            raise ValueError(f"unknown SegFormer config keys: {sorted(unknown)}")
        hf_config = SegformerConfig(num_labels=int(num_classes), **{**TINY, **config})
        self.model = SegformerForSemanticSegmentation(hf_config)
        init_convolutions_fan_out(self.model)

    @property
    def num_classes(self) -> int:
        return self.model.config.num_labels

    @property
    def config(self) -> dict:
        hf_config = self.model.config
        return {
            "num_classes": hf_config.num_labels,
            **{key: getattr(hf_config, key) for key in ARCHITECTURE_KEYS},
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images (B, 3, H, W) -> logits (B, C, H/4, W/4)."""
        return self.model(pixel_values=images).logits

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> tuple[SegFormer, list[str]]:
        """The model in a local ``save_pretrained`` directory and its class names (id2label)."""
        directory = Path(directory)
        hf_model = SegformerForSemanticSegmentation.from_pretrained(
            directory, local_files_only=True
        )
        hf_config = hf_model.config
        names = [str(hf_config.id2label[i]) for i in range(hf_config.num_labels)]
        return cls(hf_config.num_labels, pretrained=hf_model).eval(), names

    def save_pretrained(self, directory: str | Path, class_names: list[str]) -> None:
        """Write a directory ``from_pretrained`` (and plain ``transformers``) can read."""
        self.model.config.id2label = dict(enumerate(class_names))
        self.model.config.label2id = {name: i for i, name in enumerate(class_names)}
        self.model.save_pretrained(directory)
