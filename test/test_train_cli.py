"""``sparserefine train dense|refiner`` and ``sparserefine evaluate`` end to end on a tiny
generated data set: checkpoints, logs, exact resumption, calibration and the evaluation JSON."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from sparserefine_ros.models import init_model, load_segmenter
from sparserefine_ros.tools.cli import main

# One thread: with two, a busy machine can hand the BLAS fewer threads (its dynamic threading),
# which reorders float sums, and the resume tests compare weights bit for bit.
TRAIN = ["--batch-size", "2", "--crop", "64x64", "--warmup", "1", "--workers", "0",
         "--val-images", "2", "--threads", "1"]  # fmt: skip
DENSE_CONFIG = '{"widths": [8, 16], "stem_width": 8, "head_width": 16}'


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        args = ["dataset", "generate", "--out", str(root), "--split", split, "--count", str(count),
                "--size", "128x64", "--workers", "1"]  # fmt: skip
        assert main(args) == 0
    return root


def _train_dense(data, out, *extra) -> int:
    return main(["train", "dense", "--arch", "hrnet", "--model-config", DENSE_CONFIG, "--data",
                 str(data), "--out", str(out), "--iterations", "4", "--save-every", "2",
                 "--val-every", "2", "--class-aware", "0.5", "--loss", "ohem", *TRAIN,
                 *extra])  # fmt: skip


@pytest.fixture(scope="module")
def dense(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dense"
    assert _train_dense(data, out) == 0
    return out


def test_train_dense_writes_checkpoint_log_and_card(dense):
    segmenter = load_segmenter(dense)
    assert segmenter.refiner is None and len(segmenter.class_names) == 19
    log = [json.loads(line) for line in (dense / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 for r in log)
    assert [r["iteration"] for r in log if "val_miou" in r] == [2, 4]
    assert all("val_miou_half" in r for r in log if "val_miou" in r)
    assert all(r["crops_per_s"] > 0 for r in log)
    assert '"loss": "ohem"' in segmenter.card and '"class_aware": 0.5' in segmenter.card
    assert "iterations: `4`" in segmenter.card and "wall_time_s" in segmenter.card


def test_train_dense_refuses_to_overwrite_without_resume(data, dense, capsys):
    assert _train_dense(data, dense) == 1
    assert "pass --resume" in capsys.readouterr().err


def test_train_dense_resumes_exactly(data, dense, tmp_path):
    out = tmp_path / "resumed"
    assert _train_dense(data, out, "--stop-at", "2") == 0
    assert json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])["iteration"] == 2
    assert _train_dense(data, out, "--resume") == 0
    expected, resumed = load_file(dense / "dense.safetensors"), load_file(out / "dense.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


def test_train_dense_fine_tunes_a_checkpoint(data, dense, tmp_path):
    out = tmp_path / "tuned"
    args = ["train", "dense", "--init", str(dense), "--data", str(data), "--out", str(out),
            "--iterations", "2", "--val-every", "2", "--precision", "bf16", *TRAIN]  # fmt: skip
    assert main(args) == 0
    tuned, start = load_segmenter(out), load_segmenter(dense)
    assert tuned.dense_model.config == start.dense_model.config
    assert tuned.card.startswith(start.card)  # the history is kept, the new run appended
    assert tuned.card.count("## Training") == 2


def test_train_dense_grows_a_checkpoint_keeping_its_weights(data, dense, tmp_path, capsys):
    out = tmp_path / "grown"
    args = ["train", "dense", "--init", str(dense), "--data", str(data), "--out", str(out),
            "--iterations", "2", "--val-every", "2", "--lr", "0", *TRAIN]  # fmt: skip
    assert main([*args, "--model-config", '{"context_bins": [1, 2]}']) == 0
    grown, start = load_segmenter(out).dense_model, load_segmenter(dense).dense_model
    assert grown.config == {**start.config, "context_bins": [1, 2]}
    weights = dict(grown.named_parameters())
    for name, weight in start.named_parameters():  # lr 0: the trained weights, unchanged
        torch.testing.assert_close(weights[name], weight, rtol=0, atol=0, msg=name)
    assert not grown.context.project.weight.any()  # and a branch that adds nothing yet

    assert main([*args, "--out", str(tmp_path / "bad"), "--model-config", '{"head_width": 8}']) == 1
    assert "would drop or reshape weights" in capsys.readouterr().err


def test_train_dense_distils_a_teacher(data, dense, tmp_path, capsys):
    """A student from scratch with the trained model as teacher; the teacher is recorded."""
    out = tmp_path / "student"
    args = ["train", "dense", "--arch", "hrnet", "--model-config", DENSE_CONFIG, "--data",
            str(data), "--out", str(out), "--iterations", "2", "--val-every", "2",
            *TRAIN]  # fmt: skip
    assert main([*args, "--teacher", str(dense), "--distill", "0.7"]) == 0
    card = load_segmenter(out).card
    assert f'"teacher": "{dense}"' in card and '"distill": 0.7' in card
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(r["loss"] > 0 for r in log)
    assert main([*args, "--out", str(tmp_path / "bad"), "--distill", "0.5"]) == 1
    assert "exactly with a teacher" in capsys.readouterr().err


def _train_refiner(data, dense, out, *extra) -> int:
    return main(["train", "refiner", "--dense", str(dense), "--data", str(data), "--out", str(out),
                 "--iterations", "3", "--save-every", "1", "--val-every", "2", "--widths", "8,16",
                 "--tau", "0.1", "--calibrate-taus", "0.05,0.5,5", "--calibrate-fractions",
                 "none,0.1", "--residual", "--distill", "0.5", "--dense-images", "3", *TRAIN,
                 *extra])  # fmt: skip


@pytest.mark.slow
def test_train_refiner_resume_calibrate_and_evaluate(data, dense, tmp_path):
    full = tmp_path / "full"
    assert _train_refiner(data, dense, full, "--stop-at", "1") == 0
    assert not (full / "refiner.safetensors").exists()  # not finished: no checkpoint yet
    assert _train_refiner(data, dense, full, "--resume") == 0
    straight = tmp_path / "straight"
    assert _train_refiner(data, dense, straight) == 0
    a, b = load_file(full / "refiner.safetensors"), load_file(straight / "refiner.safetensors")
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=0, atol=0, msg=name)

    segmenter = load_segmenter(full)
    calibration = segmenter.calibration
    table = calibration["table"]
    assert len(table) == 6 and calibration["min_speedup"] == 3.0
    admitted = [r for r in table if r["speedup"] >= 3.0]
    if admitted:  # the most accurate setting that keeps the speed-up
        assert calibration["met_rule"] and calibration["speedup"] >= 3.0
        assert calibration["miou"] == max(r["miou"] for r in admitted)
    else:  # none keeps it: the fastest
        assert calibration["latency_ms"] == min(r["latency_ms"] for r in table)
    for row in table:
        assert row["speedup"] == pytest.approx(calibration["full_latency_ms"] / row["latency_ms"])
    pipeline = init_model(full)
    assert (pipeline.model.tau, pipeline.model.max_fraction) == (
        calibration["tau"], calibration["max_fraction"],
    )  # fmt: skip
    log = [json.loads(line) for line in (full / "train_log.jsonl").read_text().splitlines()]
    assert any("val_miou" in r for r in log) and "calibration" in log[-1]

    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", str(full), "--data", str(data), "--size", "128x64", "--json",
            str(out), "--sweep-taus", "0.1,1", "--plot", str(tmp_path / "curve.png")]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    for group in ("miou", "latency_ms"):
        for mode in ("dense_full", "dense_low", "sparserefine"):
            assert isinstance(result[group][mode], float)
    assert all(0 <= result["miou"][m] <= 100 for m in result["miou"])
    assert 0 <= result["selected_fraction"] <= 1
    stages = result["stage_ms"]
    assert set(stages) == {"preprocess", "dense", "select", "refine", "fuse", "total"}
    assert stages["select"] + stages["refine"] + stages["fuse"] <= stages["total"]
    assert result["images"] == 2 and len(result["sweep"]) == 2
    forward = result["dense_forward_ms"]
    assert result["speedup_ceiling"] == pytest.approx(forward["full"] / forward["low"])
    selection = result["selection"]  # counted from the pipeline's own dense and refined maps
    assert selection["dense_miou"] == pytest.approx(result["miou"]["dense_low"])
    assert selection["refined_miou"] == pytest.approx(result["miou"]["sparserefine"])
    assert selection["oracle_miou"] >= selection["dense_miou"]
    # the full-resolution oracle comes with evaluate (it runs the dense model at full res)
    assert 0.0 <= selection["full_oracle_miou"] <= 100.0
    assert (selection["accuracy_full"] is None) == (selection["accuracy_before"] is None)
    for row in result["sweep"]:
        assert row["selection"]["refined_miou"] == pytest.approx(row["miou"])
        assert row["selection"]["full_oracle_miou"] is not None
    assert (tmp_path / "curve.png").stat().st_size > 1000
