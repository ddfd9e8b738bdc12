"""Routers built by a factory (handlers.registry.Routes), so that one process can assemble
several Dispatchers (the in-process fleets of the tests), and the "ms" unit of durations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiogram import Dispatcher

from bot.config import Role, parse_duration
from handlers import get_routers
from handlers.registry import commands_for


def test_each_dispatcher_gets_new_routers_with_the_same_handlers() -> None:
    first, second = get_routers(), get_routers()
    assert not {id(r) for r in first} & {id(r) for r in second}
    Dispatcher().include_routers(*first)
    Dispatcher().include_routers(*second)  # an aiogram Router joins one parent only
    for one, other in zip(first, second, strict=True):
        assert one.name == other.name
        for observer in ("message", "callback_query", "errors"):
            mine = getattr(one, observer).handlers
            theirs = getattr(other, observer).handlers
            assert [h.callback for h in mine] == [h.callback for h in theirs]
            # The flags are each Router's own: aiogram adds to them as it registers.
            assert all(a.flags is not b.flags for a, b in zip(mine, theirs, strict=True))
    assert commands_for(first, Role.owner) == commands_for(second, Role.owner)
    assert [c.name for c in commands_for(first, Role.viewer)][:3] == ["start", "help", "whoami"]


def test_durations_take_milliseconds() -> None:
    assert parse_duration("200ms") == timedelta(milliseconds=200)
    assert parse_duration(" 1500 ms ") == timedelta(seconds=1.5)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("1000ms", at_most="1s") == timedelta(seconds=1)
    with pytest.raises(ValueError, match="too long: must be at most 1s"):
        parse_duration("1001ms", at_most="1s")
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration("0ms")
    with pytest.raises(ValueError, match="too long"):
        parse_duration("9" * 40 + "ms")
