"""Registry of dense segmentation model families and the checkpoints shipped with the package.

A family is an ``nn.Module`` class registered under a name; it takes ``num_classes`` plus keyword
arguments and exposes them again as ``config`` (JSON-serialisable), so a checkpoint can store the
family name and config as data and rebuild the model without executing any stored code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from torch import nn

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
SEGMENTER_FILE = "segmenter.json"

_FAMILIES: dict[str, type[nn.Module]] = {}
# Where the built-in families register themselves: imported when first built, so loading an
# HRNet does not import transformers.
_BUILT_IN = {
    "hrnet": "sparserefine_ros.models.cnn",
    "segformer": "sparserefine_ros.models.segformer",
}


def register_dense_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a dense model family buildable by ``name``."""

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _FAMILIES and _FAMILIES[name] is not cls:
            raise ValueError(f"dense model {name!r} is already registered to {_FAMILIES[name]}")
        if name in _BUILT_IN and cls.__module__ != _BUILT_IN[name]:
            raise ValueError(f"dense model {name!r} is already registered in {_BUILT_IN[name]}")
        if not isinstance(getattr(cls, "config", None), property):
            raise TypeError(f"{cls.__name__} needs a `config` property to be saved and rebuilt")
        _FAMILIES[name] = cls
        return cls

    return decorator


def dense_model_names() -> list[str]:
    """Names of the registered dense model families (built-in or registered so far), sorted."""
    return sorted(set(_FAMILIES) | set(_BUILT_IN))


def build_dense_model(name: str, num_classes: int, **config) -> nn.Module:
    """A new (randomly initialised) dense model of family ``name``."""
    if name not in _FAMILIES and name in _BUILT_IN:
        importlib.import_module(_BUILT_IN[name])
    if name not in _FAMILIES:
        raise ValueError(
            f"unknown dense model {name!r}; available: {', '.join(dense_model_names())}"
        )
    return _FAMILIES[name](num_classes=num_classes, **config)


def dense_model_family(model: nn.Module) -> str:
    """The registered name of ``model``'s class (what a checkpoint stores to rebuild it)."""
    for name, cls in _FAMILIES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered dense model family")


def checkpoint_names() -> list[str]:
    """Names of the segmenter checkpoints shipped in the package, sorted."""
    if not CHECKPOINT_DIR.is_dir():
        return []
    return sorted(p.parent.name for p in CHECKPOINT_DIR.glob(f"*/{SEGMENTER_FILE}"))


# The shipped checkpoint the node, the demo and the tools use when no model is named.
DEFAULT_MODEL = "hrnet-synth"
