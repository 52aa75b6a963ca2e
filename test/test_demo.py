"""`sparserefine demo` end to end on a small drive: real node process, real topics, real files."""

import json

import pytest
import torch

from sparserefine_ros.method import SparseRefine
from sparserefine_ros.models import Segmenter, build_dense_model, save_segmenter
from sparserefine_ros.tools.cli import main

pytestmark = pytest.mark.slow


def test_demo_writes_pictures_and_a_summary(tmp_path, capsys):
    torch.manual_seed(0)
    dense = build_dense_model("hrnet", num_classes=19, widths=(8, 16), stem_width=8)
    refiner = SparseRefine(19, tau=2.0, max_fraction=0.1, widths=(8, 16))
    model = tmp_path / "model"
    save_segmenter(model, Segmenter(dense.eval(), [f"c{i}" for i in range(19)], refiner=refiner))
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--model", str(model), "--frames", "4",
                 "--rate", "4", "--size", "256x128"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_sent"] == 4
    assert 1 <= summary["frames_served"] <= 4
    assert summary["image_size"] == [256, 128] and summary["dense_size"] == [128, 64]
    miou, gain = summary["miou"], summary["gain"]
    assert gain["miou"] == pytest.approx(miou["sparserefine"] - miou["dense_low"])
    assert len(list(out.glob("zoom_*.png"))) == len(summary["zooms"]) <= 3
    assert all(zoom["net_pixels_fixed"] > 0 for zoom in summary["zooms"])
    assert 0.0 < summary["selected_fraction_mean"] <= 0.1 + 1e-3
    assert summary["latency_ms"]["p50"] > 0
    assert (out / "side_by_side.png").is_file()
    assert list(out.glob("overlay_*.png")) and list(out.glob("entropy_*.png"))
    printed = capsys.readouterr().out
    assert "SparseRefine demo" in printed and "gain over the low-resolution prediction" in printed
