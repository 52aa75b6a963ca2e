"""The user's own dense model as a file: TorchScript, or ONNX through onnxruntime (optional).

Either maps a normalized float image batch (B, 3, h, w) to logits (B, C, h', w'). Neither format
runs stored Python: TorchScript is a restricted IR interpreted by torch, ONNX a graph.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
ONNX_SUFFIXES = (".onnx",)


def onnx_available() -> bool:
    """Whether the optional onnxruntime (``pip install sparserefine_ros[onnx]``) is installed."""
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxModel:
    """An ONNX segmentation graph behind the ``images -> logits`` callable interface.

    onnxruntime takes numpy arrays, so tensors make a round trip through host memory; on a CUDA
    device the CUDA execution provider is used when onnxruntime has it.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        import onnxruntime

        self.path = Path(path)
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            available = onnxruntime.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider",) if p in available] + providers
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input (images), graph has {len(inputs)}")
        self.input_name = inputs[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).numpy()
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(array)})[0]
        return torch.from_numpy(logits).to(images.device)


def load_external_model(path: str | Path, device: str | torch.device = "cpu"):
    """A TorchScript module or an ``OnnxModel`` for ``path``, chosen by its suffix.

    Raises ``ValueError`` for an unknown suffix, ``ImportError`` for ONNX without onnxruntime,
    and whatever the format's reader raises for an unreadable file (the caller adds the path).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TORCHSCRIPT_SUFFIXES:
        with warnings.catch_warnings():
            # torch >= 2.13 deprecates TorchScript; the user chose the format, a warning on
            # every load would not help them.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    if suffix in ONNX_SUFFIXES:
        if not onnx_available():
            raise ImportError("ONNX models need onnxruntime: pip install 'sparserefine_ros[onnx]'")
        return OnnxModel(path, device)
    known = ", ".join(TORCHSCRIPT_SUFFIXES + ONNX_SUFFIXES)
    raise ValueError(f"unknown model file type {suffix!r} (known: {known})")
