"""``sparserefine qos-bench`` end to end on one small cell: a real node, a real camera process."""

import json

import pytest

from sparserefine_ros.tools.cli import main

pytestmark = pytest.mark.slow


def test_one_cell_reports_first_output_and_frames_served(model_dir, tmp_path):
    out = tmp_path / "qos.json"
    args = ["qos-bench", "--node-reliability", "best_effort", "--publisher", "reliable",
            "--subscribers", "2", "--size", "64x32", "--period", "0.2", "--duration", "2",
            "--model", str(model_dir), "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    table = json.loads(out.read_text())
    assert table["size"] == [64, 32]
    (row,) = table["rows"]
    assert (row["node_reliability"], row["publisher"], row["subscribers"]) == (
        "best_effort", "reliable", 2,
    )  # fmt: skip
    assert row["sent"] >= 5
    assert 1 <= row["served"] <= row["sent"]
    assert row["first_output_s"] is not None and row["first_output_s"] >= 0
