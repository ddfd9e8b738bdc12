"""Pacing to Telegram's limits: 1 message/s per chat, 20/min per group, 30/s overall."""

from __future__ import annotations

from bot.pacing import GLOBAL_PER_SECOND, GROUP_PER_MINUTE, SPREAD_BURST, Pacer


def test_one_message_per_second_per_chat() -> None:
    pacer = Pacer()
    assert pacer.wait_for(42, 100.0) == 0
    pacer.sent(42, 100.0)
    assert abs(pacer.wait_for(42, 100.4) - 0.6) < 1e-9
    assert pacer.wait_for(43, 100.4) == 0  # another chat is not held up


def test_twenty_per_minute_in_a_group() -> None:
    pacer = Pacer()
    group = -100123
    for i in range(GROUP_PER_MINUTE):
        now = 1000.0 + i * 1.5
        assert pacer.wait_for(group, now) == 0
        pacer.sent(group, now)
    # The 21st waits until the first of the window is a minute old.
    assert abs(pacer.wait_for(group, 1030.0) - 30.0) < 1e-9
    assert pacer.wait_for(group, 1060.0) == 0


def test_thirty_per_second_overall_spread_over_the_second() -> None:
    pacer = Pacer()
    gap = 1 / GLOBAL_PER_SECOND
    for chat in range(SPREAD_BURST):  # a few at once
        assert pacer.wait_for(chat + 1, 5.0) == 0
        pacer.sent(chat + 1, 5.0)
    # Then the next waits for the share of the second those took.
    assert abs(pacer.wait_for(999, 5.0) - SPREAD_BURST * gap) < 1e-9
    for i in range(SPREAD_BURST, GLOBAL_PER_SECOND):
        now = 5.0 + i * gap
        assert pacer.wait_for(i + 1, now) < 1e-9
        pacer.sent(i + 1, now)
    assert abs(pacer.wait_for(999, 5.5) - 0.5) < 1e-9


def test_retry_after_blocks_the_chat_until_then() -> None:
    pacer = Pacer()
    pacer.block(7, 50.0)
    assert abs(pacer.wait_for(7, 45.0) - 5.0) < 1e-9
    assert pacer.wait_for(7, 50.0) == 0
    assert pacer.wait_for(8, 45.0) == 0
