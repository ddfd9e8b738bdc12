from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.config import QuietHours


@pytest.mark.parametrize(
    ("quiet", "clock", "expected"),
    [
        ("23:00-07:00", "22:59", False),
        ("23:00-07:00", "23:00", True),
        ("23:00-07:00", "03:30", True),
        ("23:00-07:00", "07:00", False),
        ("12:00-13:00", "12:30", True),
        ("12:00-13:00", "13:00", False),
    ],
)
def test_quiet_hours_span_midnight(quiet: str, clock: str, expected: bool) -> None:
    hour, minute = map(int, clock.split(":"))
    moment = datetime(2026, 11, 25, hour, minute, tzinfo=UTC)
    assert QuietHours.parse(quiet).contains(moment, UTC) is expected


def test_quiet_hours_are_read_on_the_fleets_clock() -> None:
    """A moment is converted to the configured zone before it is compared: 22:30 UTC is
    23:30 in Berlin (winter), inside "23:00-07:00" there but not in UTC."""
    quiet = QuietHours.parse("23:00-07:00")
    moment = datetime(2026, 11, 25, 22, 30, tzinfo=UTC)
    assert quiet.contains(moment, ZoneInfo("Europe/Berlin"))
    assert not quiet.contains(moment, UTC)


@pytest.mark.parametrize(
    ("quiet", "length"),
    [("23:00-07:00", timedelta(hours=8)), ("12:00-13:30", timedelta(minutes=90))],
)
def test_quiet_hours_length_and_text(quiet: str, length: timedelta) -> None:
    parsed = QuietHours.parse(quiet)
    assert parsed.length == length
    assert str(parsed) == quiet


@pytest.mark.parametrize("text", ["23:00", "24:00-07:00", "7:00-8:00", "23:00 - 07:00", ""])
def test_quiet_hours_reject_what_is_not_a_range(text: str) -> None:
    with pytest.raises(ValueError, match='is not a range like "23:00-07:00"'):
        QuietHours.parse(text)
