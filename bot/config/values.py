"""The value types the config's sections are made of, each parsed once, where it is read.

A duration is a `timedelta` ("10m" in the file), quiet hours a `QuietHours`, a latency a
`timedelta` ("500ms"); the users never parse the text again. Each type's error says what
the file should hold, in the words tests/test_config.py pins. `Section` is the base of every
table: unknown keys are refused, and `cross_problems` (checks between a table's own keys)
runs as its model validator, every problem at once, each at its own key path.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainValidator,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticKnownError

from bot.config.problems import CROSS_FIELD

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$", re.ASCII)
# Milliseconds per unit: "ms" lets a test (or an impatient setup) say "200ms".
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
# The longest any duration may be: beyond it a typo ("99999999999d") would overflow timedelta
# and the scheduler; keys with a tighter bound say so with `at_most`.
MAX_DURATION = "365d"


def parse_duration(text: str, *, at_most: str = MAX_DURATION) -> timedelta:
    """Parse "45s", "10m", "2h" or "1d", no longer than `at_most`; ValueError says why not."""
    match = _DURATION.match(text)
    if not match or not match.group(1).strip("0"):
        raise ValueError(f'"{text}" is not a duration like "45s", "10m", "2h" or "1d"')
    digits, unit = match.group(1).lstrip("0"), match.group(2)
    limit = _duration_ms(at_most)
    # Compared before any timedelta is built: a long digit string would overflow it.
    if len(digits) > 15 or int(digits) * _DURATION_UNITS[unit] > limit:
        raise ValueError(f'"{text}" is too long: must be at most {at_most}')
    return timedelta(milliseconds=int(digits) * _DURATION_UNITS[unit])


def _duration_ms(text: str) -> int:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"bad duration bound {text!r}")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _text(value: object) -> str:
    """The value as text, or pydantic's own "must be text in quotes" error (a TOML number
    is not a duration: "every = 60" could mean seconds or minutes)."""
    if not isinstance(value, str):
        raise PydanticKnownError("string_type")
    return value


def at_most(limit: str) -> PlainValidator:
    """The parser of a duration key no longer than `limit`:
    `Annotated[timedelta, at_most("1h")]`. A timedelta given in code passes the same bound."""
    bound = parse_duration(limit, at_most=limit)  # a typo in a bound fails at import

    def parse(value: object) -> timedelta:
        if isinstance(value, timedelta):
            if not timedelta(0) < value <= bound:
                raise ValueError(f"must be more than 0s and at most {limit}")
            return value
        return parse_duration(_text(value), at_most=limit)

    return PlainValidator(parse)


# A duration ("10m" in the file), between 1s and MAX_DURATION. A key with a tighter bound is
# `Annotated[timedelta, at_most("1d")]`.
Duration = Annotated[timedelta, at_most(MAX_DURATION)]

_UNITS_SHOWN = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def duration_text(value: timedelta) -> str:
    """A duration as the config writes it, in its largest whole unit: "30m", "2h", "500ms"."""
    millis = value // timedelta(milliseconds=1)
    unit, size = next((u, s) for u, s in _UNITS_SHOWN if millis % s == 0)
    return f"{millis // size}{unit}"


def parse_latency(text: str) -> float:
    """Parse "500ms" or a duration like "2s" (at most 1h) into seconds."""
    stripped = text.strip()
    number = stripped[:-2].strip()
    if stripped.endswith("ms") and number.isascii() and number.isdigit():
        if len(number) > 7 or int(number) > 3_600_000:
            raise ValueError(f'"{text}" is too long: must be at most 1h')
        if int(number) > 0:
            return int(number) / 1000
    try:
        return parse_duration(stripped, at_most="1h").total_seconds()
    except ValueError as err:
        if "too long" in str(err):
            raise
        raise ValueError(f'"{text}" is not a latency like "500ms" or "2s"') from None


def _latency(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=parse_latency(_text(value)))


# A latency limit ("500ms" or "2s" in the file, at most 1h).
Latency = Annotated[timedelta, PlainValidator(_latency)]


@dataclass(frozen=True)
class QuietHours:
    """A daily range of clock times in the fleet's time zone, "23:00-07:00", which may span
    midnight; its end is not included."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        match = _QUIET_HOURS.match(text)
        if not match:
            raise ValueError(f'"{text}" is not a range like "23:00-07:00"')
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
        return cls(time(start_h, start_m), time(end_h, end_m))

    def contains(self, moment: datetime, tz: tzinfo) -> bool:
        """Whether `moment` (aware; naive ones are read as the local clock) falls in the
        range on the clock of `tz`."""
        clock = moment.astimezone(tz).time()
        if self.start <= self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end

    @property
    def length(self) -> timedelta:
        """How long the range lasts each day (0 when start and end are the same)."""
        minutes = [t.hour * 60 + t.minute for t in (self.start, self.end)]
        return timedelta(minutes=(minutes[1] - minutes[0]) % (24 * 60))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _quiet_hours(value: object) -> QuietHours:
    if isinstance(value, QuietHours):
        return value
    return QuietHours.parse(_text(value))


# Quiet hours ("23:00-07:00" in the file).
QuietRange = Annotated[QuietHours, PlainValidator(_quiet_hours)]

# A node's name: the host name by default, so it must accept what host names look like.
NODE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


def default_node_name() -> str:
    name = socket.gethostname().split(".")[0] or "node"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:63]


class Role(StrEnum):
    """What a person may do. Higher roles include everything lower roles may do."""

    viewer = "viewer"
    operator = "operator"
    owner = "owner"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_ROLE_RANK = {Role.viewer: 0, Role.operator: 1, Role.owner: 2}


def _non_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError('is empty: write "${VARIABLE}" or use <key>_file to give the secret')
    return value


# A secret that must hold something ("" is a mistake, not "no key").
Secret = Annotated[SecretStr, AfterValidator(_non_empty_secret)]


def env_names(value: list[str]) -> list[str]:
    """Names of environment variables passed on to commands; never the fleet's own."""
    for name in value:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError(f'"{name}" is not an environment variable name')
        if name.startswith(("TELEGRAM_", "ANTHROPIC_")) or name == "CREDENTIALS_DIRECTORY":
            raise ValueError(f"{name} holds the fleet's own secrets; commands never get it")
    return value


# `model_validate(data, context=NO_CROSS_CHECKS)` leaves the checks between keys out: the
# loader's repaired copy must validate although they fail (they were reported already).
NO_CROSS_CHECKS: dict[str, Any] = {"cross_checks": False}

Loc = tuple[str | int, ...]


class Section(BaseModel):
    """A table of the config."""

    # No inf or nan: a price or a grace period of `inf` passes `ge=0` and breaks arithmetic.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def cross_problems(self) -> Iterator[tuple[Loc, str]]:
        """Problems between this table's own keys: (key path inside the table, () for the
        table itself; the sentence). Run once every key is valid."""
        return iter(())

    @model_validator(mode="after")
    def cross_checked(self, info: ValidationInfo) -> Self:
        if info.context is not None and info.context.get("cross_checks") is False:
            return self
        found = list(self.cross_problems())
        if found:
            # Raised as one ValidationError, pydantic keeps each line at its own location
            # (under this table's), so one table can say several things at once.
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(CROSS_FIELD, text), loc=loc, input=None
                    )
                    for loc, text in found
                ],
            )
        return self
