"""Crontab lines as APScheduler triggers, with crontab's weekday numbers.

APScheduler 3 counts weekdays from Monday = 0, crontab from Sunday = 0 (and 7). Passing a
crontab line straight to `CronTrigger.from_crontab` would move "0 9 * * 0" to Mondays, so
numeric weekdays are rewritten as names first.
"""

from __future__ import annotations

import re
from datetime import tzinfo

from apscheduler.triggers.cron import CronTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMBER = re.compile(r"\b([0-7])\b")


def crontab_trigger(line: str, tz: tzinfo) -> CronTrigger:
    """A trigger for a five-field crontab line; ValueError says what is wrong with it."""
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    weekday = _NUMBER.sub(lambda m: _DAYS[int(m.group(1))], weekday)
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=tz
    )
