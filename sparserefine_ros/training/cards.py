"""The model card: one record per training run, appended to the checkpoint's history."""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from .runs import (
    TrainConfig,
)


def card_record(
    config: TrainConfig, what: str, model_config: dict, iterations: int, seconds: float,
    metrics: dict,
) -> dict:  # fmt: skip
    return {
        "trained": what,
        "command": shlex.join(["sparserefine", *sys.argv[1:]]),
        "iterations": iterations,
        "wall_time_s": round(seconds, 1),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "config": {k: v for k, v in asdict(config).items() if k not in ("resume", "stop_at")},
        "model_config": model_config,
        "metrics": metrics,
        "torch": torch.__version__,
    }


def card_header(out: str | Path) -> str:
    return f"# {Path(out).name}\n"


def card_note(note: str) -> str:
    return f"\n{note}\n" if note else ""


def card_table(record: dict) -> str:
    lines = [f"\n## Training: {record['trained']}\n", "```sh", record["command"], "```\n"]
    for key, value in record.items():
        if key not in ("trained", "command"):
            lines.append(f"- {key}: `{json.dumps(value) if isinstance(value, dict) else value}`")
    return "\n".join(lines) + "\n"
