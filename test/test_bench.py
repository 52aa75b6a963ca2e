"""The ``bench`` sub-command at a tiny size: it runs, prints a table and writes its JSON."""

import argparse
import json
import math

import torch
from torch.nn import functional as F

from sparserefine_ros.tools import bench


def parse(argv):
    parser = argparse.ArgumentParser(prog="sparserefine")
    bench.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_bench_tiny_writes_json(tmp_path, capsys):
    out = tmp_path / "bench" / "result.json"
    args = parse(
        [
            *("bench", "--height", "128", "--width", "256", "--fractions", "0.02", "0.1"),
            *("--channels", "8", "--levels", "3", "--repeats", "1", "--json", str(out)),
        ]
    )
    assert args.func(args) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"config", "dense_stack", "sparse"}
    assert results["config"]["widths"] == [8, 16, 32]
    assert set(results["dense_stack"]) == {"num_convs", "full_res_ms", "half_res_ms"}
    assert [row["fraction"] for row in results["sparse"]] == [0.02, 0.1]
    for row in results["sparse"]:
        assert row["num_selected"] == math.ceil(row["fraction"] * (128 * 256))
        assert {"map_build_ms", "unet_forward_ms", "ensembler_ms", "total_ms"} <= set(row)
        assert set(row["subm_conv_ms"]) == {"per_offset", "im2col"}
    assert "dense stack" in capsys.readouterr().out


def test_boundary_selection_is_clustered_and_deterministic():
    coords = bench.boundary_selection(96, 160, 0.05, seed=3)
    assert coords.shape == (math.ceil(0.05 * (96 * 160)), 3)
    assert torch.equal(coords, bench.boundary_selection(96, 160, 0.05, seed=3))
    mask = torch.zeros(1, 1, 96, 160)
    mask[0, 0, coords[:, 1], coords[:, 2]] = 1
    # Selected pixels sit in bands: most have 5+ selected pixels among their 8 neighbours
    # (about 0.4 of one would for 5% of pixels scattered at random).
    neighbours = F.conv2d(mask, torch.ones(1, 1, 3, 3), padding=1) - mask
    assert float(neighbours[mask > 0].ge(5).float().mean()) > 0.6
