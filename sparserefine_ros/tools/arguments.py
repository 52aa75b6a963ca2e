"""Value parsers for the tools' command-line options (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """'2048x1024' -> (2048, 1024); argparse turns the ValueError into a usage error."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 2048x1024, got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return w, h


def parse_shape(text: str) -> tuple[int, int]:
    """'2048x1024' (WIDTHxHEIGHT) -> (1024, 2048) (height, width), the order of tensor shapes."""
    width, height = parse_size(text)
    return height, width


def parse_floats(text: str) -> list[float]:
    """'0.1,0.3' -> [0.1, 0.3]."""
    return [float(v) for v in text.split(",")]


def parse_fractions(text: str) -> list[float | None]:
    """'none,0.1' -> [None, 0.1]: pixel budgets, ``none`` for no budget."""
    return [None if v.lower() == "none" else float(v) for v in text.split(",")]
