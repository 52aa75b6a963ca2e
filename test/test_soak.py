"""``sparserefine soak`` on a short run: a real node, real frames, its memory and frame ages."""

import json

import pytest

from sparserefine_ros.tools.cli import main

pytestmark = pytest.mark.slow


def test_short_soak_reports_ages_and_memory(model_dir, tmp_path):
    out = tmp_path / "soak.json"
    args = ["soak", "--duration", "6", "--warmup", "2", "--rate", "10", "--size", "64x32",
            "--model", str(model_dir), "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["node_exit_code"] == 0
    assert 50 <= result["sent"] <= 61
    assert 0 < result["served_after_warmup"] <= result["served"] <= result["sent"]
    assert 0 < result["age_s"]["median"] <= result["age_s"]["max"]
    assert result["inference_period_s"] > 0
    assert result["rss_mb"]["after_warmup"] > 50  # a Python process with torch loaded
    assert set(result["meets"]) == {"rss_growth", "age"}
    assert set(result["node_counters"]) == {"frames_received", "frames_processed",
                                            "frames_replaced_by_newer"}  # fmt: skip
    assert 0 < result["node_counters"]["frames_received"] <= result["sent"]


def test_duration_must_outlast_the_warmup(capsys):
    assert main(["soak", "--duration", "5", "--warmup", "10"]) == 2
    assert "--duration > --warmup" in capsys.readouterr().err
