"""The ``sparserefine`` command: one sub-command per tool module."""

import argparse
import importlib
import sys

from sparserefine_ros.allocator import retain_freed_memory

# Each module under sparserefine_ros.tools named here defines ``register(subparsers)``, which adds
# its sub-command and sets ``func`` (called with the parsed arguments, returns an exit code).
COMMANDS = (
    "bench",
    "dataset",
    "models",
    "train",
    "evaluate",
    "demo",
    "bag",
    "replay",
    "gpu_check",
    "qos_bench",
    "soak",
    "publish_bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparserefine",
        description="SparseRefine: refine low-resolution segmentation sparsely at full resolution.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"sparserefine_ros.tools.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
