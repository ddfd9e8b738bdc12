"""Parsing what people type and what buttons carry: ids, counts, durations, months and free
text. Pure functions; every handler parses through these, so hostile input (a 30-digit id, a
superscript digit, a NUL character, "5 minutes") gets the same precise answer everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from aiogram.types import Message

from bot.views.text import clip, esc
from storage.models import MAX_ID, DbId

__all__ = ["MAX_ID", "DbId", "IdArg", "id_argument", "no_such", "parse_id"]

# The answer to a press whose data no handler understands (forged, or from an older version).
INVALID_BUTTON = "This button is no longer valid; nothing was changed."

_NUMBER = re.compile(r"[0-9]+")  # ASCII only: "²" and "٣" pass str.isdigit(), not this
# C0 controls but tab and newline, and DEL: PostgreSQL refuses NUL in text, and none of them
# means anything in a chat message.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str) -> str:
    """`text` without control characters (tab and newline are kept)."""
    return _CONTROLS.sub("", text)


@dataclass(frozen=True)
class IdArg:
    """An id as typed: `shown` is the digits (clipped, for answers); `value` is None when the
    number is outside 1..MAX_ID, so no row has it."""

    shown: str
    value: int | None


def parse_id(word: str) -> IdArg | None:
    """The id in `word` ("12" or "#12"); None if it is not a plain ASCII number."""
    digits = word.strip().removeprefix("#")
    if not _NUMBER.fullmatch(digits):
        return None
    # int() of thousands of digits raises; ten digits decide the range already.
    value = int(digits) if len(digits) <= 10 else 0
    return IdArg(clip(digits, 24), value if 0 < value <= MAX_ID else None)


def no_such(kind: str, shown: object) -> str:
    """The one answer for an id no row has: "There is no task #12." (HTML-escaped)."""
    return f"There is no {esc(kind)} #{esc(shown)}."


async def id_argument(message: Message, word: str, kind: str, usage_line: str) -> int | None:
    """Parse the id of a `kind` ("task", "approval") typed as `word`, answering the person
    when it is not one: the usage line for a non-number, `no_such` for an id out of range."""
    parsed = parse_id(word)
    if parsed is None:
        shown = word.strip()
        problem = f"\n{esc(clip(shown, 40))} is not a {esc(kind)} number." if shown else ""
        await message.answer(usage_line + problem)
        return None
    if parsed.value is None:
        await message.answer(no_such(kind, parsed.shown))
    return parsed.value


def parse_count(word: str, low: int, high: int) -> int | None:
    """A whole number from `low` to `high` written in ASCII digits; None for anything else."""
    digits = word.strip()
    if not _NUMBER.fullmatch(digits) or len(digits) > 9:
        return None
    value = int(digits)
    return value if low <= value <= high else None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]{1,12})\s*([smhd])")
_UNIT_WORDS = {
    "s": ("s", "sec", "secs", "second", "seconds"),
    "m": ("min", "mins", "minute", "minutes"),
    "h": ("hr", "hrs", "hour", "hours"),
    "d": ("day", "days"),
}
_SPELLED = re.compile(r"([0-9]{1,12})\s*([a-z]+)")


class DurationError(ValueError):
    """Not a duration a person may ask for; the message says why, in HTML."""


def parse_duration_arg(text: str, maximum: timedelta) -> timedelta:
    """A duration typed by a person ("45s", "10m", "2h", "1d"), from one second to `maximum`.
    DurationError says what was wrong, and for "5 minutes" suggests "5m"."""
    cleaned = text.strip().lower()
    match = _DURATION.fullmatch(cleaned)
    if match is None:
        raise DurationError(_not_a_duration(text))
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds == 0:
        raise DurationError(f"{esc(clip(text.strip(), 40))} is no time at all.")
    if seconds > maximum.total_seconds():
        raise DurationError(
            f"{esc(clip(text.strip(), 40))} is longer than the maximum, {short(maximum)}."
        )
    return timedelta(seconds=seconds)


def _not_a_duration(text: str) -> str:
    shown = esc(clip(text.strip(), 40))
    spelled = _SPELLED.fullmatch(text.strip().lower())
    if spelled is not None:
        for unit, words in _UNIT_WORDS.items():
            if spelled.group(2) in words:
                return f'"{shown}" is not a duration; write {spelled.group(1)}{unit}.'
    return f'"{shown}" is not a duration like 45s, 10m, 2h or 1d.'


def short(length: timedelta) -> str:
    """A whole duration in its largest exact unit: 30d, 4h, 90m."""
    seconds = int(length.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
