"""Optional CUDA sparse convolution libraries (spconv, TorchSparse): which ones a machine has.

The pure-PyTorch backend (``"torch"``) is the reference and the default. A library becomes a
backend only through an adapter registered with ``register_backend`` that keeps the contract in
``backend.py`` (same sites, same order, ``conv2d`` weight layouts) and matches the reference on
CUDA. No adapter is registered yet: neither library can run the adapter's checks on the CPU
(spconv's CPU build races with more than one thread and its backward pass calls CUDA;
TorchSparse builds its maps only on CUDA), so an adapter is written once a GPU run can check it.
``library_status`` tells ``gpu-check`` (and users) what is importable where it runs.
"""

from __future__ import annotations

import importlib

# Backend name -> the module an adapter would import (spconv-cu12x installs ``spconv``).
LIBRARIES = {"spconv": "spconv.pytorch", "torchsparse": "torchsparse"}


def library_status() -> dict[str, str]:
    """Per library: ``"importable <version>, no adapter yet"`` or why it does not import."""
    status = {}
    for name, module_name in LIBRARIES.items():
        try:
            module = importlib.import_module(module_name)
        except (ImportError, OSError) as error:  # OSError: a CUDA library it links is missing
            status[name] = f"not importable: {error}"
            continue
        package = importlib.import_module(module_name.split(".")[0])
        version = getattr(package, "__version__", getattr(module, "__version__", "?"))
        status[name] = f"importable {version}, no adapter yet (the torch backend is used)"
    return status
