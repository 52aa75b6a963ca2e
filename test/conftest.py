"""Shared fixtures. ROS traffic of a test run stays on this machine and in its own domain."""

import os
import subprocess
import sys

import pytest

# Before any rclpy import: a domain of its own per run (parallel runs do not see each other),
# localhost-only discovery, and Fast DDS's large-data transports for megapixel frames.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")

# The classes of ``model_dir``'s checkpoint.
TINY_MODEL_CLASSES = [f"class_{i}" for i in range(5)]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A small random checkpoint: real dense CNN + real SparseRefine, untrained."""
    import torch

    from sparserefine_ros.method import SparseRefine
    from sparserefine_ros.models import Segmenter, build_dense_model, save_segmenter

    torch.manual_seed(0)
    classes = TINY_MODEL_CLASSES
    dense = build_dense_model("hrnet", num_classes=len(classes), widths=(8, 16), stem_width=8)
    refiner = SparseRefine(len(classes), tau=1.0, max_fraction=0.2, widths=(8, 16))
    directory = tmp_path_factory.mktemp("model") / "tiny"
    save_segmenter(directory, Segmenter(dense.eval(), classes, refiner=refiner.eval()))
    return directory


def printed_by_fresh_interpreter(code: str) -> str:
    """What ``code`` prints in a new Python process: for checks of what an import pulls in,
    which this test process (with everything already imported) cannot show."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
