"""``sparserefine gpu-check`` on the CPU in quick mode: it runs and writes the expected report."""

import argparse
import json

from sparserefine_ros.device_check import zoo
from sparserefine_ros.tools import cli, gpu_check

CORRECTNESS = {
    "dense_logits_max_abs_diff",
    "fused_logits_max_abs_diff",
    "selected_pixels",
    "classes_agreement_vs_cpu",
    "refine_mask_agreement_vs_cpu",
    "streamed_equals_sequential",
    "streamed_classes_agreement",
    "sparse_backends",
}
TIMINGS = {
    "dense_full_res",
    "dense_low_res",
    "sequential",
    "streamed_fp32",
    "streamed_bf16",
    "selected_fraction",
    "dense_gflops_full_res",
}
SCALARS = {"selected_fraction", "dense_gflops_full_res"}


def test_registered_as_gpu_check_subcommand():
    assert "gpu_check" in cli.COMMANDS
    parser = argparse.ArgumentParser()
    gpu_check.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gpu-check", "--json", "x.json", "--size", "64x32", "--quick"])
    assert args.func is gpu_check.run and args.size == (64, 32)


def test_quick_run_on_cpu_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "gpu" / "check.json"
    assert gpu_check.main(["--quick", "--json", str(out), "--models", "hrnet"]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"environment", "settings", "models", "elapsed_s"}
    assert report["environment"]["device"] == "cpu"
    assert report["environment"]["sparse_backends"] == ["torch"]
    assert set(report["environment"]["sparse_libraries"]) == {"spconv", "torchsparse"}
    assert report["settings"]["size"] == [128, 64]
    (model,) = report["models"]
    assert model["name"] == "hrnet" and model["source"] == "random-init"
    assert set(model["correctness"]) == CORRECTNESS
    # On the CPU the "device" is the reference itself, and streaming changes nothing.
    assert model["correctness"]["dense_logits_max_abs_diff"] == 0.0
    assert model["correctness"]["classes_agreement_vs_cpu"] == 1.0
    assert model["correctness"]["streamed_equals_sequential"] is True
    timings = model["timings"]
    assert set(timings) == TIMINGS
    assert all(timings[k]["frames_per_s"] > 0 for k in TIMINGS - SCALARS)
    assert timings["dense_gflops_full_res"] > 0
    assert {"preprocess", "dense", "select", "fuse", "total"} <= set(
        timings["sequential"]["stage_ms"]
    )
    assert 0.0 <= timings["streamed_bf16"]["classes_agreement_vs_fp32"] <= 1.0
    assert timings["streamed_fp32"]["warmup_s"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| hrnet (random init) |" in table and table in capsys.readouterr().out + "\n"


def test_unknown_model_is_reported_as_skipped(tmp_path):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--quick", "--json", str(out), "--models", "no-such-model"]) == 0
    (model,) = json.loads(out.read_text())["models"]
    assert model["name"] == "no-such-model" and "no such file" in model["skipped"]


def test_paper_sized_names_build_random_init_models_of_that_layout():
    calibration = zoo.scene_batches((64, 32), seed=0)
    ((name, load),) = zoo.model_zoo(["hrnet-w48"], calibration, fraction=0.05)
    entry, pipeline = load()
    assert name == "hrnet-w48" and entry["source"] == "random-init"
    assert pipeline.dense_model.config["widths"] == [48, 96, 192, 384]
    assert pipeline.dense_model.config["blocks"] == 4


def test_a_model_that_fails_is_recorded_and_the_run_goes_on(tmp_path):
    """max_in_flight 0 is refused by the streamed executor in every model's check: each model
    gets its traceback, the report is still written, and the exit code says it failed."""
    out = tmp_path / "check.json"
    argv = [
        "--quick",
        "--json",
        str(out),
        "--models",
        "hrnet",
        "hrnet-synth",
        "--max-in-flight",
        "0",
    ]
    assert gpu_check.main(argv) == 1
    models = json.loads(out.read_text())["models"]
    assert [m["name"] for m in models] == ["hrnet", "hrnet-synth"]
    assert all("max_in_flight must be >= 1" in m["error"] for m in models)
    assert "max_in_flight must be >= 1" in out.with_suffix(".md").read_text()


def test_batch_times_several_cameras_per_batch(tmp_path):
    out = tmp_path / "check.json"
    argv = ["--quick", "--json", str(out), "--models", "hrnet", "--batch", "1", "3"]
    assert gpu_check.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["batch"] == [1, 3]
    (model,) = report["models"]
    assert set(model["cameras"]) == {"1", "3"}
    for count, timings in model["cameras"].items():
        assert set(timings) == {"dense_full_res", "dense_low_res", "sequential", "streamed_fp32"}
        for timing in timings.values():
            assert timing["camera_frames_per_s"] == timing["frames_per_s"] * int(count) > 0
    table = out.with_suffix(".md").read_text()
    assert "Cameras served as one batch" in table and "| hrnet | 3 |" in table
