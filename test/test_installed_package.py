"""The installed package, as ROS tools see it: messages, share files and executables.

Run by `make test` against the venv install and by `colcon test` against the colcon install.
"""

import os
import pathlib
import subprocess

from ament_index_python.packages import get_package_prefix, get_package_share_directory

PACKAGE = "sparserefine_ros"


def test_messages_are_generated_and_importable():
    from sparserefine_ros.msg import ClassInfo, SegmentationStats

    stats = SegmentationStats(selected_pixels=7, selected_fraction=0.25, latency_ms=3.5)
    assert (stats.selected_pixels, stats.selected_fraction, stats.latency_ms) == (7, 0.25, 3.5)
    info = ClassInfo(ids=[0, 1], names=["road", "sidewalk"])
    assert list(info.ids) == [0, 1] and list(info.names) == ["road", "sidewalk"]


def test_messages_serialize_through_rclpy():
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import ColorRGBA

    from sparserefine_ros.msg import ClassInfo

    info = ClassInfo(ids=[3], names=["wall"], colors=[ColorRGBA(r=0.4, g=0.4, b=0.6, a=1.0)])
    back = deserialize_message(serialize_message(info), ClassInfo)
    assert back.names == ["wall"] and abs(back.colors[0].b - 0.6) < 1e-6


def test_share_files_are_installed():
    share = pathlib.Path(get_package_share_directory(PACKAGE))
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "camera.launch.py").is_file()
    assert (share / "config" / "sparserefine.yaml").is_file()


def test_executables_are_where_ros2_run_looks():
    lib = pathlib.Path(get_package_prefix(PACKAGE)) / "lib" / PACKAGE
    executable = lib / "sparserefine"
    assert os.access(executable, os.X_OK), f"{executable} is missing or not executable"
    result = subprocess.run(
        [str(executable), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: sparserefine" in result.stdout
    assert os.access(lib / "sparserefine_node", os.X_OK)


def test_params_file_matches_the_declared_parameters():
    """Every key of config/sparserefine.yaml is a node parameter and every parameter is there."""
    import yaml

    from sparserefine_ros.ros.parameters import PARAMETER_NAMES

    share = pathlib.Path(get_package_share_directory(PACKAGE))
    config = yaml.safe_load((share / "config" / "sparserefine.yaml").read_text())
    assert set(config["/**"]["ros__parameters"]) == set(PARAMETER_NAMES)
