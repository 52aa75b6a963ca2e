"""The node's parameters: declared with descriptions and ranges, checked at start-up.

``TUNABLE`` ones (the selection and the overlay) may also be set at run time
(``ros2 param set``); the rest are read-only: a model, device or camera set cannot change under
a running pipeline, and a restart is cheap. A bad value raises :class:`ParameterError` naming
the parameter (at start-up), or is refused with that message (at run time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from sparserefine_ros.method.pipeline import COMPILE_MODES
from sparserefine_ros.method.streaming import PRECISIONS

FROM_MODEL = -1.0  # "use the value stored with the model" for the method's settings
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_CAMERA = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


class ParameterError(ValueError):
    """A parameter value the node cannot start with."""

    def __init__(self, name: str, message: str):
        super().__init__(f"parameter '{name}': {message}")
        self.name = name


@dataclass(frozen=True)
class NodeConfig:
    model: str
    device: str
    precision: str
    compile_mode: str
    fixed_stage: bool
    cameras: tuple[str, ...]
    input_transport: str
    reliability: str
    dense_scale: float | None
    entropy_threshold: float | None
    max_selected_fraction: float | None
    overlay_alpha: float
    class_colors: tuple[int, ...]
    diagnostics_period: float


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


# name -> (default, description, extra descriptor fields)
_PARAMETERS = {
    "model": (
        "",
        "Model to run: a built-in model name (`sparserefine models` lists them) or the path of "
        "a checkpoint directory. Empty: the default shipped model.",
        {},
    ),
    "device": ("cpu", "Inference device: cpu, cuda, cuda:N, or auto (cuda if available).", {}),
    "precision": (
        "fp32",
        "Arithmetic of the dense model: fp32, or fp16 / bf16 autocast (GPUs; slightly "
        "different classes, and slower than fp32 on an H200 for 3 of 4 models: docs/gpu.md).",
        {},
    ),
    "compile_mode": (
        "none",
        "torch.compile of the dense model and the per-pixel entropy and class map: none, "
        "default, reduce-overhead or max-autotune-no-cudagraphs (it compiles at the first frame "
        "of each size; README Performance, docs/gpu.md).",
        {},
    ),
    "fixed_stage": (
        False,
        "Run selection, refinement and fusion on tensors of fixed shape (the same classes; "
        "needs a pixel budget and a whole number of camera pixels per dense pixel), compiled as "
        "one graph with compile_mode: what CUDA graphs (reduce-overhead) need. Eagerly it only "
        "adds padding; compiled on the CPU it beat the compiled eager stage (README "
        "Performance).",
        {},
    ),
    "cameras": (
        Parameter.Type.STRING_ARRAY,
        "Camera names. Empty: one camera, topics image, segmentation, ... in the node's "
        "namespace. Otherwise <camera>/image, <camera>/segmentation, ... for each camera; all "
        "cameras share one model and frames that arrive together run as one batch.",
        {},
    ),
    "input_transport": (
        "raw",
        "raw: subscribe to sensor_msgs/Image on <camera>/image; compressed: "
        "sensor_msgs/CompressedImage on <camera>/image/compressed.",
        {},
    ),
    "reliability": (
        "best_available",
        "QoS reliability of the image subscription (depth 1, newest frame only): best_available "
        "(reliable delivery from a reliable camera, switched to best effort when a best-effort "
        "camera publishes), best_effort (sensor data), or reliable. Large reliable frames arrive "
        "far more often than best-effort ones (measured, README 'Large images').",
        {},
    ),
    "dense_scale": (
        FROM_MODEL,
        "Scale of the dense model's input relative to the camera image, in (0, 1]; -1: the "
        "model's own.",
        {"floating_point_range": _float_range(-1.0, 1.0)},
    ),
    "entropy_threshold": (
        FROM_MODEL,
        "Entropy threshold tau in nats: pixels above it are refined; -1: the model's calibrated "
        "value. Above ln(classes) (2.94 for 19) nothing is refined: the dense model alone.",
        {"floating_point_range": _float_range(-1.0, 100.0)},
    ),
    "max_selected_fraction": (
        FROM_MODEL,
        "Pixel budget: at most this share of each image is refined, highest entropy first, in "
        "(0, 1] (1: no budget); -1: the model's own. Bounds the worst-case latency.",
        {"floating_point_range": _float_range(-1.0, 1.0)},
    ),
    "overlay_alpha": (
        0.5,
        "Weight of the class colours in the overlay image, in [0, 1].",
        {"floating_point_range": _float_range(0.0, 1.0)},
    ),
    "class_colors": (
        Parameter.Type.INTEGER_ARRAY,
        "Custom palette: r, g, b (0-255) for each class in order, flattened. Empty: the "
        "model's palette.",
        {},
    ),
    "diagnostics_period": (
        1.0,
        "Seconds between /diagnostics messages.",
        {"floating_point_range": _float_range(0.1, 60.0)},
    ),
}

PARAMETER_NAMES = tuple(_PARAMETERS)
RELIABILITIES = ("best_effort", "reliable", "best_available")
TUNABLE = ("entropy_threshold", "max_selected_fraction", "overlay_alpha")


def declare_and_read(node: Node) -> NodeConfig:
    """Declare every parameter on ``node`` and return the checked values."""
    values = {}
    for name, (default, description, extra) in _PARAMETERS.items():
        descriptor = ParameterDescriptor(
            description=description, read_only=name not in TUNABLE, **extra
        )
        try:
            values[name] = node.declare_parameter(name, default, descriptor).value
        except ParameterException as error:  # wrong type, or outside the declared range
            raise ParameterError(name, str(error)) from error
    return _check(values)


def _from_model(name: str, value: float, low_exclusive: float, high: float) -> float | None:
    if value == FROM_MODEL:
        return None
    if not low_exclusive < value <= high:
        raise ParameterError(name, f"{value} is outside ({low_exclusive}, {high}] (or -1)")
    return value


def _one_of(values: dict, name: str, choices) -> None:
    if values[name] not in choices:
        raise ParameterError(name, f"'{values[name]}' is not one of {list(choices)}")


def check_tunable(name: str, value) -> float | None:
    """The checked value of a ``TUNABLE`` parameter (None: the model's own), or ParameterError."""
    if name not in TUNABLE:
        raise ParameterError(name, "is read-only: set it at start-up")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ParameterError(name, f"{value!r} is not a number")
    value = float(value)
    if name == "entropy_threshold":
        if value != FROM_MODEL and not 0.0 <= value <= 100.0:
            raise ParameterError(name, f"{value} is outside [0, 100] (only -1 means the model's)")
        return None if value == FROM_MODEL else value
    if name == "max_selected_fraction":
        return _from_model(name, value, 0.0, 1.0)
    if not 0.0 <= value <= 1.0:
        raise ParameterError(name, f"{value} is outside [0, 1]")
    return value


def _check(values: dict) -> NodeConfig:
    if not _DEVICE.match(values["device"]):
        raise ParameterError("device", f"'{values['device']}' is not cpu, cuda, cuda:N or auto")
    _one_of(values, "precision", PRECISIONS)
    _one_of(values, "compile_mode", COMPILE_MODES)
    cameras = tuple(values["cameras"] or ())
    for camera in cameras:
        if not _CAMERA.match(camera):
            raise ParameterError("cameras", f"'{camera}' is not a valid relative topic namespace")
    if len(set(cameras)) != len(cameras):
        raise ParameterError("cameras", f"camera names repeat: {list(cameras)}")
    _one_of(values, "input_transport", ("raw", "compressed"))
    _one_of(values, "reliability", RELIABILITIES)
    colors = tuple(values["class_colors"] or ())
    if len(colors) % 3 or any(not 0 <= c <= 255 for c in colors):
        raise ParameterError("class_colors", "needs r, g, b triplets of integers in 0..255")
    return NodeConfig(
        model=values["model"],
        device=values["device"],
        precision=values["precision"],
        compile_mode=values["compile_mode"],
        fixed_stage=values["fixed_stage"],
        cameras=cameras,
        input_transport=values["input_transport"],
        reliability=values["reliability"],
        dense_scale=_from_model("dense_scale", values["dense_scale"], 0.0, 1.0),
        entropy_threshold=check_tunable("entropy_threshold", values["entropy_threshold"]),
        max_selected_fraction=check_tunable(
            "max_selected_fraction", values["max_selected_fraction"]
        ),
        overlay_alpha=check_tunable("overlay_alpha", values["overlay_alpha"]),
        class_colors=colors,
        diagnostics_period=values["diagnostics_period"],
    )
