from __future__ import annotations

from datetime import datetime

import pytest

from agents.runtime import in_quiet_hours


@pytest.mark.parametrize(
    ("quiet", "clock", "expected"),
    [
        (None, "03:00", False),
        ("23:00-07:00", "22:59", False),
        ("23:00-07:00", "23:00", True),
        ("23:00-07:00", "03:30", True),
        ("23:00-07:00", "07:00", False),
        ("12:00-13:00", "12:30", True),
        ("12:00-13:00", "13:00", False),
    ],
)
def test_quiet_hours_span_midnight(quiet: str | None, clock: str, expected: bool) -> None:
    hour, minute = map(int, clock.split(":"))
    assert in_quiet_hours(quiet, datetime(2026, 11, 25, hour, minute)) is expected
