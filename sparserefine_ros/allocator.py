"""Keep freed memory for the next frame: a process-wide allocator setting for entry points.

Each frame allocates the same large tensors again (a 2048x1024 frame: feature maps and per-site
windows of several to tens of MB). glibc serves allocations above its mmap threshold (128 KB,
raised dynamically to at most 32 MB) with fresh pages and returns freed memory to the system,
so every frame pays again for the kernel zeroing those pages: on the 2-core development CPU a
third of the dense model's forward and of the refinement went to page faults. With both
thresholds raised, freed blocks stay in the heap and the next frame reuses them; the resident
size stays at the per-frame peak instead of rising and falling with every frame. Entry points
(the node, the ``sparserefine`` command) call ``retain_freed_memory``; importing this module
changes nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
RETAINED_BYTES = 1 << 30  # allocations below this come from the heap; this much stays on free


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False (and nothing changed)
    where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, RETAINED_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, RETAINED_BYTES)
    )
