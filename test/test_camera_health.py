"""The /diagnostics level of a camera, judged on the current period alone."""

import pytest

from sparserefine_ros.ros.health import PeriodCounts, camera_health


@pytest.mark.parametrize(
    ("period", "level", "words"),
    [
        (PeriodCounts(received=5, processed=5), "OK", "5.0 frames/s"),
        (PeriodCounts(received=3, idle=3), "OK", "idle"),
        (PeriodCounts(received=2, rejected=2), "ERROR", "every frame rejected: bad"),
        # a rejected frame among idle ones is still every frame that was tried
        (PeriodCounts(received=4, rejected=1, idle=3), "ERROR", "every frame rejected"),
        (PeriodCounts(received=2, failed=2), "ERROR", "2 frames failed in inference: bad"),
        (PeriodCounts(received=6, processed=5, rejected=1), "WARN", "1 rejected: bad"),
        (PeriodCounts(), "WARN", "no frames received"),
        (PeriodCounts(received=1), "WARN", "no frames processed"),
    ],
)
def test_health_of_one_period(period, level, words):
    got_level, message = camera_health(period, period.processed / 1.0, "bad")
    assert got_level == level and words in message, message
