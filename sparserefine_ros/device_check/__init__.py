"""The device check behind ``sparserefine gpu-check``: models (``zoo``), correctness against the
CPU (``correctness``), timings (``timing``) and the report (``report``). Imports no ROS."""
