"""bot.args: ids, counts, durations, months and free text as people (and forgers) type them."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from aiogram.filters.callback_data import CallbackData

from bot.args import (
    MAX_ID,
    DbId,
    DurationError,
    IdArg,
    clean_text,
    no_such,
    parse_count,
    parse_duration_arg,
    parse_id,
)
from storage import usage


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("12", IdArg("12", 12)),
        ("#12", IdArg("12", 12)),
        (" 007 ", IdArg("007", 7)),
        (str(MAX_ID), IdArg(str(MAX_ID), MAX_ID)),
        (str(MAX_ID + 1), IdArg(str(MAX_ID + 1), None)),
        ("3000000000", IdArg("3000000000", None)),
        ("0", IdArg("0", None)),
        ("9223372036854775808", IdArg("9223372036854775808", None)),
    ],
)
def test_ids_in_the_columns_range_parse_and_the_rest_exist_nowhere(
    word: str, expected: IdArg
) -> None:
    assert parse_id(word) == expected


@pytest.mark.parametrize("word", ["", "#", "abc", "-1", "+3", "1.0", "²", "٣", "1e3", "1 2"])
def test_anything_but_ascii_digits_is_not_an_id(word: str) -> None:
    assert parse_id(word) is None


def test_a_number_of_thousands_of_digits_is_out_of_range_not_an_error() -> None:
    parsed = parse_id("9" * 5000)
    assert parsed is not None and parsed.value is None and len(parsed.shown) <= 24


def test_random_words_never_raise_and_always_give_an_id_in_range_or_none() -> None:
    rng = random.Random(18)
    alphabet = "0123456789#²٣ -+x\x00"
    for _ in range(2000):
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        parsed = parse_id(word)
        if parsed is not None and parsed.value is not None:
            assert 1 <= parsed.value <= MAX_ID


def test_no_such_is_one_wording_with_the_id() -> None:
    assert no_such("task", 999) == "There is no task #999."
    assert no_such("incident", "3000000000") == "There is no incident #3000000000."
    assert no_such("outbox message", "<1>") == "There is no outbox message #&lt;1&gt;."


class _Cb(CallbackData, prefix="t"):
    id: DbId


@pytest.mark.parametrize("data", ["t:0", "t:-1", f"t:{MAX_ID + 1}", "t:9223372036854775808"])
def test_callback_data_with_an_id_out_of_range_does_not_unpack(data: str) -> None:
    with pytest.raises(ValueError):
        _Cb.unpack(data)


def test_callback_data_in_range_unpacks() -> None:
    assert _Cb.unpack(f"t:{MAX_ID}").id == MAX_ID


@pytest.mark.parametrize(
    ("word", "expected"),
    [("1", 1), ("50", 50), ("0", None), ("51", None), ("²", None), ("9" * 40, None), ("", None)],
)
def test_counts(word: str, expected: int | None) -> None:
    assert parse_count(word, 1, 50) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("10m", timedelta(minutes=10)),
        (" 2 H ", timedelta(hours=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration_arg(text, timedelta(days=30)) == expected


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("5 minutes", '"5 minutes" is not a duration; write 5m.'),
        ("2 hours", '"2 hours" is not a duration; write 2h.'),
        ("1day", '"1day" is not a duration; write 1d.'),
        ("soon", '"soon" is not a duration like 45s, 10m, 2h or 1d.'),
        ("9999999999d", "9999999999d is longer than the maximum, 30d."),
        ("9" * 40 + "d", '"' + "9" * 39 + '…" is not a duration like 45s, 10m, 2h or 1d.'),
        ("31d", "31d is longer than the maximum, 30d."),
        ("0m", "0m is no time at all."),
        ("<b>", '"&lt;b&gt;" is not a duration like 45s, 10m, 2h or 1d.'),
    ],
)
def test_a_wrong_duration_says_what_is_wrong(text: str, answer: str) -> None:
    with pytest.raises(DurationError) as raised:
        parse_duration_arg(text, timedelta(days=30))
    assert str(raised.value) == answer


@pytest.mark.parametrize(
    ("text", "out_of_range"),
    [
        ("9999-12", True),
        ("1999-12", True),
        ("2026-13", False),
        ("２０２６-11", False),
        ("last", False),
    ],
)
def test_months_out_of_range_or_malformed_are_refused(text: str, out_of_range: bool) -> None:
    with pytest.raises(usage.MonthError) as raised:
        usage.parse_month(text)
    assert raised.value.out_of_range == out_of_range


def test_a_month() -> None:
    assert usage.parse_month(" 2026-11 ") == date(2026, 11, 1)
    assert usage.parse_month("2999-12") == date(2999, 12, 1)


def test_control_characters_are_removed_but_tab_and_newline_kept() -> None:
    assert clean_text("a\x00b\x07c\td\ne\x1bf\x7fg\r") == "abc\td\nefg"
    rng = random.Random(5)
    for _ in range(500):
        text = "".join(chr(rng.randint(0, 0x24F)) for _ in range(rng.randint(0, 40)))
        cleaned = clean_text(text)
        assert all(ch in "\t\n" or (ord(ch) >= 0x20 and ord(ch) != 0x7F) for ch in cleaned)
        assert cleaned == clean_text(cleaned)
