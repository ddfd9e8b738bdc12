"""Telegram HTML: escaping dynamic parts and splitting long messages without breaking tags."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal

from bot.config import Config

TELEGRAM_LIMIT = 4096

_ATOM = re.compile(r"<[^<>]*>|&#?\w+;|\n| +|[^<&\n ]+|[<&]")
_TAG = re.compile(r"^<(/?)([a-zA-Z][a-zA-Z0-9-]*)")
_TAGS = re.compile(r"<[^<>]*>")


def esc(value: object) -> str:
    """Escape any dynamic value for Telegram's HTML parse mode."""
    return html.escape(str(value), quote=True)


def split_html(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split HTML text into parts of at most `limit` characters.

    Parts end at line boundaries where possible; a tag open at a cut is closed at the end of
    the part and reopened at the start of the next, so every part is valid on its own. The
    limit applies to the raw HTML, which is never shorter than what Telegram counts. Parts
    without visible text are dropped (Telegram refuses empty messages).
    """
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    prefix = ""  # tags reopened at the start of the current part
    stack: list[tuple[str, str]] = []  # (name, opening tag) open after the last atom
    items: list[tuple[str, list[tuple[str, str]]]] = []  # atoms of the part, stack after each
    size = 0  # characters in `items`

    for atom in _atoms(text, max(1, limit // 4)):
        after = _apply(stack, atom)
        while items and len(prefix) + size + len(atom) + _closers_len(after) > limit:
            cut = _last_newline(items)
            kept, carry = (items, []) if cut is None else (items[:cut], items[cut + 1 :])
            open_at_cut = kept[-1][1]
            part = prefix + "".join(a for a, _ in kept) + _closers(open_at_cut)
            if _visible(part):
                parts.append(part)
            prefix = "".join(tag for _, tag in open_at_cut)
            items = carry
            size = sum(len(a) for a, _ in carry)
        items.append((atom, after))
        size += len(atom)
        stack = after
    if items:
        part = prefix + "".join(a for a, _ in items) + _closers(stack)
        if _visible(part):
            parts.append(part)
    return parts


def _visible(part: str) -> bool:
    return bool(_TAGS.sub("", part).strip())


def _atoms(text: str, longest: int) -> list[str]:
    out: list[str] = []
    for atom in _ATOM.findall(text):
        if atom.startswith("<") and len(atom) > 1:
            out.append(atom)
            continue
        out += [atom[i : i + longest] for i in range(0, len(atom), longest)] if atom else []
    return out


def _apply(stack: list[tuple[str, str]], atom: str) -> list[tuple[str, str]]:
    match = _TAG.match(atom) if atom.startswith("<") else None
    if match is None:
        return stack
    closing, name = match.group(1), match.group(2).lower()
    if not closing:
        return [*stack, (name, atom)]
    for i in range(len(stack) - 1, -1, -1):
        if stack[i][0] == name:
            return stack[:i] + stack[i + 1 :]
    return stack


def _closers(stack: list[tuple[str, str]]) -> str:
    return "".join(f"</{name}>" for name, _ in reversed(stack))


def _closers_len(stack: list[tuple[str, str]]) -> int:
    return sum(len(name) + 3 for name, _ in stack)


def _last_newline(items: list[tuple[str, list[tuple[str, str]]]]) -> int | None:
    for i in range(len(items) - 1, 0, -1):
        if items[i][0] == "\n":
            return i
    return None


def when(
    moment: datetime | None,
    tz: tzinfo,
    now: datetime | None = None,
    *,
    zone: bool = True,
    seconds: bool = False,
) -> str:
    """A stored UTC time as a person reads it, in the configured zone: "17:53 CET" today,
    "5 Dec 17:53 CET" this year, "5 Dec 2025 17:53 CET" before. Every time shown to a person
    goes through here. A message listing many times passes `zone=False` and names the zone
    once (`zone_note`)."""
    if moment is None:
        return "never"
    local = moment.astimezone(tz)
    today = (now or datetime.now(tz)).astimezone(tz).date()
    clock = f"{local:%H:%M:%S}" if seconds else f"{local:%H:%M}"
    if local.date() == today:
        text = clock
    elif local.year == today.year:
        text = f"{local.day} {local:%b} {clock}"
    else:
        text = f"{local.day} {local:%b %Y} {clock}"
    return f"{text} {zone_name(tz, local)}" if zone else text


def zone_name(tz: tzinfo, at: datetime | None = None) -> str:
    """The zone's abbreviation at `at` (CET, CEST, UTC), or its offset where it has none."""
    local = (at or datetime.now(tz)).astimezone(tz)
    name = local.tzname() or ""
    if not name or name[0] in "+-":  # zones without an abbreviation: "+03" is no name
        offset = local.strftime("%z")
        return f"UTC{offset[:3]}:{offset[3:]}" if offset not in ("", "+0000") else "UTC"
    return name


def zone_note(tz: tzinfo) -> str:
    """Said once under a message whose times carry no zone: "Times in CET (Europe/Berlin)."."""
    key = getattr(tz, "key", None)
    return f"Times in {zone_name(tz)}" + (f" ({key})." if key and key != zone_name(tz) else ".")


def money(value: Decimal | float, places: int = 2) -> str:
    """USD to the cent (or to `places` decimals), half rounded up: 1234.565 -> "1,234.57"."""
    step = Decimal(1).scaleb(-places)
    return f"{Decimal(str(value)).quantize(step, ROUND_HALF_UP):,.{places}f}"


def usd(value: Decimal | float | str, places: int = 2) -> str:
    """Money as a person reads it, everywhere: "$1,234.57". The cost of one run or call is
    shown to the hundredth of a cent (`places=4`: "$0.0421"), where cents would say $0.00."""
    return f"${money(Decimal(str(value)), places)}"


def percent(part: Decimal, whole: Decimal) -> str:
    """`part` as a whole percentage of `whole` (not zero), half rounded up: "63%"."""
    return f"{(part / whole * 100).quantize(Decimal(1), ROUND_HALF_UP)}%"


def mention(telegram_id: int, name: str) -> str:
    """A person's name that notifies them (a text mention: works without a username)."""
    return f'<a href="tg://user?id={telegram_id}">{esc(name)}</a>'


def display_name(actor: str | None, config: Config) -> str:
    """`actor_name` with the config's people: "person:1001" -> "Ana"."""
    return actor_name(actor, {p.telegram_id: p.name for p in config.people})


def actor_name(actor: str | None, people: Mapping[int, str]) -> str:
    """Who did something, as a person reads it: "person:1001" -> "Ana" (`people`: Telegram id
    -> name), "agent:coder" -> "coder", "system:approvals" -> "the system"."""
    if actor is None:
        return "someone"
    kind, _, rest = actor.partition(":")
    if kind == "person" and rest.lstrip("-").isascii() and rest.lstrip("-").isdigit():
        return people.get(int(rest)) or f"user {rest}"
    if kind == "system":
        return "the system"
    return rest or actor


def utf16_len(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def clip(text: str, limit: int) -> str:
    """At most `limit` UTF-16 code units of `text` (before escaping), "…" marking a cut."""
    if utf16_len(text) <= limit:
        return text
    out: list[str] = []
    size = 0
    for ch in text:
        width = 2 if ord(ch) > 0xFFFF else 1
        if size + width > limit - 1:
            break
        out.append(ch)
        size += width
    return "".join(out) + "…"


def one_line(text: str, limit: int) -> str:
    """`text` clipped and folded onto one line, for lists."""
    return clip(" ".join(text.split()), limit)


def plain(html_text: str) -> str:
    """The text Telegram shows for our HTML: tags are ours, everything dynamic was escaped."""
    return html.unescape(_TAGS.sub("", html_text))


def visible_len(html_text: str) -> int:
    """What Telegram counts of our HTML."""
    return utf16_len(plain(html_text))


# -- validating HTML written by a person (fleet send --html) ---------------------------------

# Telegram's HTML tags, each with the attributes it reads (None: any value, else a pattern);
# other attributes are ignored, as Telegram does.
_SUPPORTED: dict[str, dict[str, re.Pattern[str] | None]] = {
    **{tag: {} for tag in ("b", "strong", "i", "em", "u", "ins", "s", "strike", "del")},
    "tg-spoiler": {},
    "span": {"class": re.compile(r"tg-spoiler")},
    "a": {"href": None},
    "code": {"class": None},
    "pre": {},
    "blockquote": {"expandable": None},
    "tg-emoji": {"emoji-id": re.compile(r"\d+")},
    "tg-time": {"unix": re.compile(r"-?\d+"), "format": None},
}
_REQUIRED = {"span": "class", "tg-emoji": "emoji-id", "tg-time": "unix"}
_OPEN_OR_CLOSE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)([^<>]*)>")
_ATTRIBUTE = re.compile(r"\s+([a-zA-Z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+)))?")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")


def html_problem(text: str) -> str | None:
    """Why Telegram would refuse `text` in HTML parse mode, or None: only its tags (with
    their attributes), properly nested and closed, and only &lt; &gt; &amp; &quot; and
    numeric character references. Positions are characters from 1."""
    stack: list[tuple[str, int]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "&":
            entity = _ENTITY.match(text, i)
            if entity is None:
                return f'"&" at character {i + 1} starts no entity: write &amp; for "&"'
            i = entity.end()
            continue
        if ch != "<":
            i += 1
            continue
        tag = _OPEN_OR_CLOSE.match(text, i)
        if tag is None:
            return f'"<" at character {i + 1} starts no tag: write &lt; for "<" in text'
        closing, name, rest = tag.group(1), tag.group(2).lower(), tag.group(3)
        if name not in _SUPPORTED:
            return (
                f"<{name}> at character {i + 1} is not a tag Telegram supports "
                "(b, i, u, s, a, code, pre, blockquote, tg-spoiler, tg-emoji, tg-time)"
            )
        if closing:
            if rest.strip():
                return f"</{name}> at character {i + 1} takes no attributes"
            if not stack:
                return f"</{name}> at character {i + 1} closes no open tag"
            if stack[-1][0] != name:
                return f"</{name}> at character {i + 1} where </{stack[-1][0]}> was expected"
            stack.pop()
        else:
            problem = _attributes_problem(name, rest, i + 1)
            if problem:
                return problem
            stack.append((name, i + 1))
        i = tag.end()
    if stack:
        name, at = stack[-1]
        return f"<{name}> at character {at} is never closed (</{name}>)"
    if not html.unescape(_TAGS.sub("", text)).strip():
        return "there is no text outside the tags"
    return None


def _attributes_problem(name: str, rest: str, at: int) -> str | None:
    allowed = _SUPPORTED[name]
    seen: set[str] = set()
    position = 0
    for match in _ATTRIBUTE.finditer(rest):
        if match.start() != position:
            break
        position = match.end()
        key = match.group(1).lower()
        value = next((g for g in match.groups()[1:] if g is not None), "")
        if key not in allowed:
            continue  # Telegram ignores attributes it does not know
        rule = allowed[key]
        if rule is not None and not rule.fullmatch(value):
            return f'<{name}> at character {at}: "{key}" cannot be "{clip(value, 40)}"'
        seen.add(key)
    if rest[position:].strip(" \t\n/"):
        return f"<{name}> at character {at} has attributes that do not parse"
    needed = _REQUIRED.get(name)
    if needed and needed not in seen:
        return f'<{name}> at character {at} needs the attribute "{needed}"'
    return None
