"""The rosbags typestore of this package: ROS 2 Kilted's messages plus sparserefine_ros's own.

The custom messages are parsed from their ``.msg`` text, so bags written here carry the same
definitions (and type hashes) as the node's rosidl-built messages, with no ROS build needed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "sparserefine_ros"
MESSAGES = ("ClassInfo", "SegmentationStats")


def _msg_dir() -> Path:
    """``msg/`` of a source checkout if this code runs from one, else the installed share folder
    (where rosidl installs the ``.msg`` files for every build route: pip, colcon)."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "package.xml").is_file() and (checkout / "msg").is_dir():
        return checkout / "msg"
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return Path(get_package_share_directory(PACKAGE)) / "msg"
    except PackageNotFoundError as error:
        raise RuntimeError(f"{PACKAGE} is not installed: no share/{PACKAGE}/msg") from error


@cache
def typestore() -> Typestore:
    """ROS 2 Kilted's typestore with ``sparserefine_ros/msg/*`` registered (built once)."""
    store = get_typestore(Stores.ROS2_KILTED)
    folder = _msg_dir()
    for name in MESSAGES:
        text = (folder / f"{name}.msg").read_text()
        store.register(get_types_from_msg(text, f"{PACKAGE}/msg/{name}"))
    return store
