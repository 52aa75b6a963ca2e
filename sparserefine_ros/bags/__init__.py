"""Recorded drives as rosbag2 files: write generated ones, evaluate the pipeline on any.

Offline and ROS-free (``rosbags`` reads and writes mcap and sqlite3 bags); the online side,
which plays bags and evaluates the running node, lives in ``sparserefine_ros.ros``.
"""

from .evaluate import default_report_dir, evaluate_bag
from .io import (
    DEFAULT_IMAGE_TOPIC,
    DEFAULT_LABEL_TOPIC,
    STORAGES,
    BagError,
    BagReader,
    BagWriter,
    Frame,
    write_drive_bag,
)
from .report import Evaluation

__all__ = [
    "DEFAULT_IMAGE_TOPIC",
    "DEFAULT_LABEL_TOPIC",
    "STORAGES",
    "BagError",
    "BagReader",
    "BagWriter",
    "Evaluation",
    "Frame",
    "default_report_dir",
    "evaluate_bag",
    "write_drive_bag",
]
