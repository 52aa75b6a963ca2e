"""Imports run one way, from the tools down to the method (README, Layout)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sparserefine_ros"
# A room may import rooms of a lower rank, its own, and the neutral top-level modules.
RANK = {"method": 0, "evaluation": 1, "data": 1, "models": 2, "training": 3, "bags": 4,
        "device_check": 4, "ros": 5, "tools": 6}  # fmt: skip
NEUTRAL = {"labels", "image_messages", "segmentation_stats", "visualization", "allocator", "msg",
           "api"}  # fmt: skip


def _imports(path: Path) -> set[str]:
    """Top-level rooms of ``sparserefine_ros`` that ``path`` imports (absolute or relative)."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("sparserefine_ros."):
                rooms.add(node.module.split(".")[1])
            elif node.level == 2 and node.module:  # from ..room import x
                rooms.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            rooms |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("sparserefine_ros.")}  # fmt: skip
    return rooms


def test_rooms_import_only_rooms_below_them():
    wrong = []
    for room, rank in RANK.items():
        for path in (PACKAGE / room).rglob("*.py"):
            for other in _imports(path) - NEUTRAL - {room}:
                if RANK.get(other, 99) >= rank:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {other}")
    assert not wrong, "\n".join(wrong)


def test_neutral_modules_import_no_room():
    for name in NEUTRAL - {"msg", "api"}:
        assert not (_imports(PACKAGE / f"{name}.py") & set(RANK)), name
