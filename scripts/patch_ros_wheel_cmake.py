"""Point the ROS 2 build wheels' exported CMake files at this environment's include folders.

The PyPI wheels of the rosidl packages export the Python and numpy include directories of the
image they were built on (/opt/python/cp311-cp311/...); CMake stops on the missing paths when a
package generates messages against them. Run with the environment's Python; idempotent.
"""

import pathlib
import re
import sys
import sysconfig

import numpy

# Matches the build image's prefix up to the two include folders it names.
_FOREIGN_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+/(?:include/python3\.\d+|lib/python3\.\d+/site-packages/numpy/_core/include)"
)


def _replacement(match: re.Match) -> str:
    if "numpy" in match.group(0):
        return numpy.get_include()
    return sysconfig.get_paths()["include"]


def main() -> int:
    share = pathlib.Path(sys.prefix) / "share"
    patched = 0
    for path in share.glob("**/*.cmake"):
        text = path.read_text()
        new_text = _FOREIGN_INCLUDE.sub(_replacement, text)
        if new_text != text:
            path.write_text(new_text)
            patched += 1
    print(f"patched {patched} CMake files under {share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
