"""``sparserefine publish-bench`` on a small frame: every output built, published and delivered."""

import json

import pytest

from sparserefine_ros.ros.image_codec import OUTPUTS
from sparserefine_ros.tools.cli import main

pytestmark = pytest.mark.slow


def test_every_output_is_built_published_and_delivered(model_dir, tmp_path):
    out = tmp_path / "publish.json"
    args = ["publish-bench", "--size", "64x32", "--repeats", "3", "--model", str(model_dir),
            "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = json.loads(out.read_text())["outputs"]
    assert list(rows) == list(OUTPUTS)
    encodings = {name: row["encoding"] for name, row in rows.items()}
    assert encodings == {"segmentation": "mono8", "segmentation_color": "rgb8",
                         "overlay": "rgb8", "entropy": "32FC1", "refine_mask": "mono8"}  # fmt: skip
    assert rows["entropy"]["megabytes"] == 64 * 32 * 4 / 1e6
    for row in rows.values():
        assert row["delivered"] == 3 and row["build_ms"] > 0 and row["publish_ms"] > 0
