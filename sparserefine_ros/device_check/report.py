"""The environment record and the Markdown table of a device check."""

from __future__ import annotations

import platform
import sys

import torch

from sparserefine_ros.method.sparse import available_backends
from sparserefine_ros.method.sparse.cuda_backends import library_status

from .timing import COMPILED


def describe_environment(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "cpu_threads": torch.get_num_threads(),
        "sparse_backends": available_backends(),
        "sparse_libraries": library_status(),
    }


def markdown_table(report: dict) -> str:
    env, settings = report["environment"], report["settings"]
    width, height = settings["size"]
    variants = [f"streamed_{p}" for p in settings["precisions"]]
    variants += [COMPILED] if settings["compile"] else []
    head = [
        "model", "dense GFLOPs", "full-res dense", "low-res dense", "SparseRefine sequential",
        "SparseRefine streamed", *(f"{v.replace('_', ' ')} (agree)" for v in variants),
        "selected", "vs CPU (classes)", "streamed = sequential",
    ]  # fmt: skip
    lines = [
        f"{env['device_name'] or env['device']} ({env['device']}), torch {env['torch']}, "
        f"CUDA {env['cuda']}, {width}x{height}, {settings['frames']} frames; "
        "cells: frames/s, median latency ms",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for entry in report["models"]:
        if "skipped" in entry or "error" in entry or "timings" not in entry:
            why = entry.get("skipped") or last_line_of(entry.get("error", "")) or "not finished"
            lines.append(f"| {entry['name']} | {why} |")
            continue
        t, c = entry["timings"], entry["correctness"]
        name = entry["name"] + (" (random init)" if entry["source"] == "random-init" else "")
        cells = [
            name,
            f"{t['dense_gflops_full_res']:.3g}",
            table_cell(t["dense_full_res"]),
            table_cell(t["dense_low_res"]),
            table_cell(t["sequential"]),
            table_cell(t["streamed_fp32"]),
            *(table_cell(t[v], agreement=True) for v in variants),
            f"{t['selected_fraction']:.1%}",
            f"{c['classes_agreement_vs_cpu']:.2%}",
            "yes" if c["streamed_equals_sequential"] else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if settings.get("batch"):
        lines += ["", *cameras_table(report)]
    return "\n".join(lines)


CAMERA_COLUMNS = ("dense_full_res", "dense_low_res", "sequential", "streamed_fp32")


def cameras_table(report: dict) -> list[str]:
    """Several cameras per batch: per-camera frames/s and batch latency."""
    head = ["model", "cameras", "full-res dense", "low-res dense", "SparseRefine sequential",
            "SparseRefine streamed", "SparseRefine streamed / full-res dense"]  # fmt: skip
    lines = [
        "Cameras served as one batch; cells: frames/s per camera, median batch latency ms",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for entry in report["models"]:
        for count, timings in entry.get("cameras", {}).items():
            cells = [f"{timings[k]['camera_frames_per_s']:.2f} / {timings[k]['latency_ms']:.0f}"
                     for k in CAMERA_COLUMNS]  # fmt: skip
            ratio = (
                timings["streamed_fp32"]["camera_frames_per_s"]
                / timings["dense_full_res"]["camera_frames_per_s"]
            )
            lines.append(
                f"| {entry['name']} | {count} | " + " | ".join(cells) + f" | {ratio:.2f}x |"
            )
    return lines


def last_line_of(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def table_cell(entry: dict, agreement: bool = False) -> str:
    if "error" in entry:
        return f"failed: {entry['error'][:80]}"
    cell = f"{entry['frames_per_s']:.1f} / {entry['latency_ms']:.1f}"
    return f"{cell} ({entry['classes_agreement_vs_fp32']:.2%})" if agreement else cell
