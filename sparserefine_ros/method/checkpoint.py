"""The refiner's checkpoint file: safetensors weights with the JSON config in the metadata;
loading runs no code from the file."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError
from .sparserefine import (
    SparseRefine,
)

CHECKPOINT_FORMAT = "sparserefine"


CHECKPOINT_VERSION = "1"


def save_refiner(path: str | Path, module: SparseRefine) -> None:
    """Write weights (safetensors) with the JSON config in the file's metadata."""
    state = {name: t.detach().cpu().contiguous() for name, t in module.state_dict().items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(module.config),
    }
    save_file(state, str(path), metadata=metadata)


def load_refiner(path: str | Path) -> SparseRefine:
    """Rebuild a ``SparseRefine`` (on the CPU, eval mode) from ``save_refiner``'s file.

    Raises ``CheckpointError`` if the file is missing, is not a readable safetensors file, is
    not a SparseRefine checkpoint or holds weights that do not fit its own config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no refiner checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            state = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a SparseRefine checkpoint (no format tag)")
    if metadata.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {metadata.get('version')!r}, "
            f"this code reads {CHECKPOINT_VERSION!r}"
        )
    try:
        module = SparseRefine.from_config(json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid config: {error}") from error
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match its config: {error}") from error
    return module.eval()
