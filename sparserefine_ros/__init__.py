"""SparseRefine for ROS 2: dense segmentation at low resolution, sparse refinement at full size.

The method (``sparserefine_ros.method``) imports no ROS; the node (``sparserefine_ros.ros``) is a
thin layer over it.
"""

import pkgutil

# The generated message modules (sparserefine_ros.msg) are installed into the environment by the
# CMake/rosidl build; extending __path__ lets a source checkout find them there too.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
