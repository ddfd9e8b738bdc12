"""Telegram HTML helpers: escaping, splitting long messages without breaking tags or
entities, and showing stored UTC times."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest

from bot.config import Config
from bot.views.text import (
    TELEGRAM_LIMIT,
    actor_name,
    display_name,
    esc,
    html_problem,
    mention,
    percent,
    split_html,
    usd,
    when,
    zone_note,
)
from tests.botapi_server import EntityParseError, parse_html

ENTITY = re.compile(r"&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")
TAG = re.compile(r"<[^<>]*>")
INK = " \n"  # whitespace left out where a cut may drop it


# --- a tiny well-formedness checker -------------------------------------------------------------


class _Reader(HTMLParser):
    """Reads one part: checks tags are balanced and nested, and records the visible text (an
    entity kept as written) in runs, each with the exact opening tags around it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[tuple[str, str]] = []  # (name, opening tag as written)
        self.errors: list[str] = []
        self.runs: list[tuple[list[str], tuple[str, ...]]] = []

    def _add(self, text: str) -> None:
        tags = tuple(tag for _, tag in self.stack)
        if self.runs and self.runs[-1][1] == tags:
            self.runs[-1][0].append(text)
        else:
            self.runs.append(([text], tags))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack.append((tag, self.get_starttag_text() or ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.errors.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1][0] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if any(char in data for char in "<>&"):
            self.errors.append(f"raw <, > or & in {data[:40]!r}")
        self._add(data)

    def handle_entityref(self, name: str) -> None:
        self._add(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._add(f"&#{name};")


def read(part: str) -> _Reader:
    reader = _Reader()
    reader.feed(part)
    reader.close()
    if reader.stack:
        reader.errors.append(f"unclosed {[name for name, _ in reader.stack]}")
    # HTMLParser forgives "&amp" without its ";": check every & outside tags starts an entity.
    outside = TAG.sub("", part)
    for match in re.finditer("&", outside):
        if not ENTITY.match(outside, match.start()):
            reader.errors.append(f"cut entity near {outside[match.start() : match.start() + 8]!r}")
    return reader


def assert_well_formed(part: str) -> None:
    errors = read(part).errors
    assert not errors, (errors, part[:200], part[-200:])


def styled(html_text: str, drop: str = "\n") -> list[tuple[str, tuple[str, ...]]]:
    """The visible text as runs of equal formatting, without the characters in `drop` (a cut
    may drop the newline it is made at)."""
    out: list[tuple[str, tuple[str, ...]]] = []
    table = str.maketrans("", "", drop)
    for pieces, tags in read(html_text).runs:
        text = "".join(pieces).translate(table)
        if not text:
            continue
        if out and out[-1][1] == tags:
            out[-1] = (out[-1][0] + text, tags)
        else:
            out.append((text, tags))
    return out


def visible(html_text: str) -> str:
    return "".join("".join(pieces) for pieces, _ in read(html_text).runs)


# --- split_html: fixed cases ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "hello", "<b>bold</b> &amp; plain", "x" * TELEGRAM_LIMIT, "<b>\n</b>"]
)
def test_short_text_is_unchanged(text: str) -> None:
    assert split_html(text) == [text]


def test_long_plain_text_splits_in_two() -> None:
    text = "x" * 5000
    parts = split_html(text)
    assert len(parts) == 2
    assert all(len(p) <= TELEGRAM_LIMIT for p in parts)
    assert "".join(parts) == text


def test_long_words_split_between_words() -> None:
    words = [f"word{i}" for i in range(900)]
    text = " ".join(words)
    assert len(text) > 5000
    parts = split_html(text)
    assert len(parts) == 2
    assert all(len(p) <= TELEGRAM_LIMIT for p in parts)
    assert "".join(parts) == text
    assert parts[0].endswith(" ") or parts[1].startswith(" ")  # never inside a word


def test_many_lines_split_at_a_line_boundary() -> None:
    lines = [f"line {i:04d}: " + "abc " * (i % 17) for i in range(130)]
    text = "\n".join(lines)
    assert 5000 <= len(text) < 2 * TELEGRAM_LIMIT
    parts = split_html(text)
    assert len(parts) == 2
    assert all(len(p) <= TELEGRAM_LIMIT for p in parts)
    # only the newline at the cut is dropped; every part holds whole lines
    assert "\n".join(parts) == text
    assert parts[0].split("\n")[-1] in lines
    assert parts[1].split("\n")[0] in lines


def test_overlong_line_among_short_lines_is_cut_only_itself() -> None:
    text = "first\nsecond\n" + "y" * 9000 + "\nlast line\n"
    parts = split_html(text)
    assert all(len(p) <= TELEGRAM_LIMIT for p in parts)
    assert parts[0] == "first\nsecond"
    assert parts[-1].endswith("\nlast line\n")
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")


def test_pre_spanning_the_cut_is_closed_and_reopened() -> None:
    code = "\n".join(f"print({i} * {i})  # &lt;{i}&gt;" for i in range(400))
    text = f"<b>Output</b>\n<pre>{code}</pre>\ndone"
    parts = split_html(text)
    assert len(parts) >= 2
    for part in parts:
        assert len(part) <= TELEGRAM_LIMIT
        assert_well_formed(part)
    assert parts[0].startswith("<b>Output</b>\n<pre>")
    assert parts[0].endswith("</pre>")
    for part in parts[1:-1]:
        assert part.startswith("<pre>") and part.endswith("</pre>")
    assert parts[-1].startswith("<pre>") and parts[-1].endswith("</pre>\ndone")
    assert styled("".join(parts)) == styled(text)


def test_bold_spanning_a_cut_without_newlines() -> None:
    text = "<b>" + "bold " * 1200 + "</b> tail"
    parts = split_html(text)
    assert len(parts) == 2
    assert parts[0].startswith("<b>") and parts[0].endswith("</b>")
    assert parts[1].startswith("<b>") and parts[1].endswith("</b> tail")
    for part in parts:
        assert len(part) <= TELEGRAM_LIMIT
        assert_well_formed(part)
    assert styled("".join(parts)) == styled(text)


def test_nested_tags_and_links_are_reopened_with_their_attributes() -> None:
    opening = '<b><i><a href="https://example.com/a?x=1&amp;y=2">'
    text = opening + "link text\n" * 1000 + "</a></i></b>"
    parts = split_html(text)
    assert len(parts) >= 3
    for part in parts:
        assert len(part) <= TELEGRAM_LIMIT
        assert_well_formed(part)
        assert part.startswith(opening)
        assert part.endswith("</a></i></b>")
    assert styled("".join(parts)) == styled(text)


def test_entities_are_never_cut() -> None:
    for limit in (97, 100, 101, 333):
        text = "a&amp;" * 100 + "&#x27;&lt;&gt;&quot;" * 20
        parts = split_html(text, limit)
        assert len(parts) > 1
        for part in parts:
            assert len(part) <= limit
            assert_well_formed(part)
        assert "".join(parts) == text


def test_lone_ampersand_and_angle_do_not_confuse_the_splitter() -> None:
    # not valid Telegram HTML, but the splitter must neither lose text nor treat "< b" as a tag
    for text in ("a < b & c > d\n" * 600, "x <3 y & z\n" * 800):
        parts = split_html(text)
        assert len(parts) > 1
        assert all(len(p) <= TELEGRAM_LIMIT for p in parts)
        assert "\n".join(parts) == text


def test_no_part_exceeds_the_limit_when_a_short_line_precedes_a_long_one() -> None:
    text = "H\n" + "wwwww " * 1200
    parts = split_html(text)
    assert [len(p) for p in parts if len(p) > TELEGRAM_LIMIT] == []


def test_no_part_is_only_tags() -> None:
    parts = split_html("<pre>\n" + "x" * 5000 + "</pre>")
    assert [p for p in parts if not visible(p).strip()] == []
    assert all(len(p) <= TELEGRAM_LIMIT for p in parts)


def test_a_long_text_of_many_short_lines() -> None:
    text = "a b c d e f g h\n" * 20000
    parts = split_html(text)
    assert len(parts) > 1
    assert all(len(p) <= TELEGRAM_LIMIT for p in parts)


# --- split_html: random texts ----------------------------------------------------------------


_TAGS = [
    ("b", "<b>"),
    ("i", "<i>"),
    ("u", "<u>"),
    ("s", "<s>"),
    ("code", "<code>"),
    ("pre", "<pre>"),
    ("tg-spoiler", "<tg-spoiler>"),
    ("blockquote", "<blockquote expandable>"),
    ("a", '<a href="https://example.com/p?q=1&amp;r=2">'),
    ("span", '<span class="tg-spoiler">'),
]
_WORDS = ["alpha", "beta", "ok", "x", "naïve", "Привет", "🙂", "é", "12:30", "a.b"]
_ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#x27;", "&#39;"]


def _random_html(rng: random.Random, budget: int, depth: int = 0) -> str:
    out: list[str] = []
    while budget > 0:
        roll = rng.random()
        if roll < 0.35:
            piece = rng.choice(_WORDS)
        elif roll < 0.5:
            piece = " " * rng.choice([1, 1, 1, 2, 7])
        elif roll < 0.62:
            piece = "\n" * rng.choice([1, 1, 2])
        elif roll < 0.7:
            piece = rng.choice(_ENTITIES)
        elif roll < 0.74:
            piece = esc("".join(rng.choice("ab<>&\"' ") for _ in range(rng.randint(1, 30))))
        elif roll < 0.78:
            piece = rng.choice("xyz") * rng.randint(50, 900)  # a long run without spaces
        elif depth < 3:
            name, opening = rng.choice(_TAGS)
            inner = _random_html(rng, rng.randint(1, max(1, budget // 2)), depth + 1)
            piece = f"{opening}{inner}</{name}>"
        else:
            continue
        out.append(piece)
        budget -= len(piece)
    return "".join(out)


def _cases() -> list[tuple[int, str, int]]:
    rng = random.Random(20240611)
    cases = []
    for i in range(300):
        limit = rng.choice([200, 300, 500, 1000, TELEGRAM_LIMIT])
        text = _random_html(rng, rng.randint(limit // 2, limit * 3))
        cases.append((i, text, limit))
    return cases


CASES = _cases()


def test_random_cases_actually_split() -> None:
    assert sum(len(split_html(text, limit)) > 1 for _, text, limit in CASES) > 200


def test_random_texts_split_into_well_formed_parts_that_keep_text_and_formatting() -> None:
    for i, text, limit in CASES:
        assert_well_formed(text)  # the generator's own output
        parts = split_html(text, limit)
        for part in parts:
            errors = read(part).errors
            assert not errors, (i, limit, errors)
        # Reopened tags carry their attributes, so every visible character keeps its tags.
        # Whitespace is left out of the comparison: a cut drops the newline it is made at, and
        # a part of whitespace only is dropped on purpose.
        assert styled("".join(parts), INK) == styled(text, INK), (i, limit)
        assert visible(text).count("\n") >= sum(visible(p).count("\n") for p in parts)


def test_random_texts_respect_the_limit() -> None:
    over = [
        (i, limit) for i, text, limit in CASES if max(map(len, split_html(text, limit))) > limit
    ]
    assert over == []


def test_random_texts_have_no_tag_only_parts() -> None:
    empty = [
        (i, limit)
        for i, text, limit in CASES
        if any(not visible(p).strip() for p in split_html(text, limit))
    ]
    assert empty == []


# --- esc and when ------------------------------------------------------------------------------


def test_esc_escapes_markup_and_quotes() -> None:
    assert esc("<b>Tom & \"Jerry\" 'x'</b>") == (
        "&lt;b&gt;Tom &amp; &quot;Jerry&quot; &#x27;x&#x27;&lt;/b&gt;"
    )


def test_esc_accepts_any_value() -> None:
    assert esc(42) == "42"
    assert esc(None) == "None"
    assert esc("&amp;") == "&amp;amp;"  # escaping is not idempotent: escape raw values once


def test_when_formats_in_the_given_zone_and_names_it() -> None:
    winter = datetime(2024, 1, 15, 12, 0, 5, 123456, tzinfo=UTC)
    summer = datetime(2024, 7, 15, 12, 0, 5, tzinfo=UTC)
    later = datetime(2024, 12, 1, tzinfo=UTC)  # "now": same year, another day
    assert when(winter, UTC, later) == "15 Jan 12:00 UTC"
    assert when(winter, ZoneInfo("Europe/Lisbon"), later) == "15 Jan 12:00 WET"
    assert when(summer, ZoneInfo("Europe/Lisbon"), later) == "15 Jul 13:00 WEST"
    assert when(winter, ZoneInfo("America/New_York"), later) == "15 Jan 07:00 EST"
    late = datetime(2024, 1, 15, 23, 30, tzinfo=UTC)
    assert when(late, ZoneInfo("Asia/Tokyo"), later) == "16 Jan 08:30 JST"
    # Today: the clock only; another year: the year too; seconds on request.
    berlin = ZoneInfo("Europe/Berlin")
    assert when(winter, berlin, winter) == "13:00 CET"
    assert when(winter, berlin, winter, seconds=True) == "13:00:05 CET"
    assert when(winter, berlin, datetime(2025, 2, 1, tzinfo=UTC)) == "15 Jan 2024 13:00 CET"
    # Lists name the zone once instead.
    assert when(winter, berlin, winter, zone=False) == "13:00"
    assert zone_note(berlin) in ("Times in CET (Europe/Berlin).", "Times in CEST (Europe/Berlin).")
    # A zone without an abbreviation is named by its offset.
    assert when(winter, ZoneInfo("Asia/Dubai"), winter) == "16:00 UTC+04:00"


def test_when_never() -> None:
    assert when(None, ZoneInfo("Europe/Lisbon")) == "never"


# --- html_problem: HTML a person wrote, checked before it is queued ---------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<b>unclosed bold", "<b> at character 1 is never closed (</b>)"),
        ("<b><i>x</b></i>", "</b> at character 8 where </i> was expected"),
        ("</b>", "</b> at character 1 closes no open tag"),
        ("<div>x</div>", "<div> at character 1 is not a tag Telegram supports"),
        ("a & b", '"&" at character 3 starts no entity: write &amp; for "&"'),
        ("1 < 2", '"<" at character 3 starts no tag: write &lt; for "<" in text'),
        ("<span>s</span>", '<span> at character 1 needs the attribute "class"'),
        ('<tg-emoji emoji-id="x">🙂</tg-emoji>', '<tg-emoji> at character 1: "emoji-id" cannot'),
        ("<b></b>", "there is no text outside the tags"),
    ],
)
def test_html_problem_names_what_telegram_would_refuse(text: str, problem: str) -> None:
    found = html_problem(text)
    assert found is not None and found.startswith(problem)
    with pytest.raises(EntityParseError):  # and Telegram (the local server's parser) agrees
        if not parse_html(text)[0].strip():  # Telegram refuses an empty text too
            raise EntityParseError("empty")


def test_html_problem_accepts_what_telegram_accepts() -> None:
    for _, text, _ in CASES[:100]:
        assert html_problem(text) is None
        parse_html(text)
    for text in (
        'x > y, <a href="https://e.com/?a=1&amp;b=2">link</a>',
        '<pre><code class="language-python">print("&lt;")</code></pre>',
        '<tg-time unix="1764950000" format="wDT">5 Dec</tg-time>',
        "<blockquote expandable>q</blockquote> &#128578; &#x1F642;",
        esc("<b>unclosed & raw</b>"),
    ):
        assert html_problem(text) is None, text
        parse_html(text)


def test_one_formatter_for_money_and_one_for_who() -> None:
    assert usd(Decimal("1234.565")) == "$1,234.57"
    assert usd(10) == "$10.00"
    assert usd("0.004") == "$0.00"
    people = {1001: "Ana"}
    assert actor_name("person:1001", people) == "Ana"
    assert actor_name("person:77", people) == "user 77"
    assert actor_name("agent:coder", people) == "coder"
    assert actor_name("system:approvals", people) == "the system"
    assert actor_name(None, people) == "someone"


def test_money_to_the_hundredth_of_a_cent_percentages_and_names_from_the_config() -> None:
    # A run's or a call's cost: "$0.00" would hide it.
    assert usd(Decimal("0.04205"), places=4) == "$0.0421"
    assert usd(1234.5, places=4) == "$1,234.5000"
    assert percent(Decimal("1.75"), Decimal(10)) == "18%"
    assert percent(Decimal(1), Decimal(8)) == "13%"  # 12.5: half rounded up
    config = Config.model_validate(
        {
            "telegram": {"token": "1:x"},
            "people": [{"telegram_id": 1001, "name": "Ana <3", "role": "owner"}],
        }
    )
    assert display_name("person:1001", config) == "Ana <3"
    assert display_name("person:1002", config) == "user 1002"
    assert display_name("agent:coder", config) == "coder"
    assert mention(1001, "Ana <3") == '<a href="tg://user?id=1001">Ana &lt;3</a>'
