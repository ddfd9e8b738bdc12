"""Telegram HTML: escaping dynamic parts and splitting long messages without breaking tags."""

from __future__ import annotations

import html
import re
from datetime import datetime, tzinfo

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


def visible_len(html_text: str) -> int:
    """What Telegram counts of our HTML: tags are ours, everything dynamic was escaped."""
    return utf16_len(html.unescape(_TAGS.sub("", html_text)))
