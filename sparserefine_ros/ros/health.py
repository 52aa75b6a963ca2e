"""A camera's health on /diagnostics, judged on the current period alone (no rclpy: tested
without a node)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PeriodCounts:
    """What happened to one camera's frames in one diagnostics period."""

    received: int = 0
    processed: int = 0
    rejected: int = 0  # malformed frames (logged and dropped)
    failed: int = 0  # frames whose inference raised
    idle: int = 0  # frames skipped because nobody subscribed to any output


def camera_health(period: PeriodCounts, rate_hz: float, last_error: str) -> tuple[str, str]:
    """``(level, message)`` of a camera's diagnostic status, level ``OK``, ``WARN`` or ``ERROR``,
    judged on this period alone: an idle period reads idle, a period whose every frame was
    rejected or failed reads ERROR, whatever happened before."""
    if period.failed:
        return "ERROR", f"{period.failed} frames failed in inference: {last_error}"
    if (
        period.processed == 0
        and period.rejected
        and period.rejected + period.idle >= period.received
    ):
        return "ERROR", f"every frame rejected: {last_error}"
    if period.processed == 0 and period.idle:
        return "OK", "idle: no subscribers to any output"
    if period.processed == 0 and period.received == 0:
        return "WARN", "no frames received this period"
    if period.processed == 0:
        return "WARN", "no frames processed this period"
    if period.rejected:
        return "WARN", f"{rate_hz:.1f} frames/s, {period.rejected} rejected: {last_error}"
    return "OK", f"{rate_hz:.1f} frames/s"
