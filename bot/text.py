"""Telegram HTML: escaping dynamic parts and splitting long messages without breaking tags."""

from __future__ import annotations

import html
import re
from datetime import datetime, tzinfo

TELEGRAM_LIMIT = 4096

_ATOM = re.compile(r"<[^<>]*>|&#?\w+;|\n| +|[^<&\n ]+|[<&]")
_TAG = re.compile(r"^<(/?)([a-zA-Z][a-zA-Z0-9-]*)")


def esc(value: object) -> str:
    """Escape any dynamic value for Telegram's HTML parse mode."""
    return html.escape(str(value), quote=True)


def split_html(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split HTML text into parts of at most `limit` characters.

    Parts end at line boundaries where possible; a tag open at a cut is closed at the end of
    the part and reopened at the start of the next, so every part is valid on its own. The
    limit applies to the raw HTML, which is never shorter than what Telegram counts.
    """
    if len(text) <= limit:
        return [text]
    atoms = _atoms(text, max(1, limit // 4))
    parts: list[str] = []
    stack: list[tuple[str, str]] = []  # (name, opening tag) of tags open at this point
    current: list[tuple[str, list[tuple[str, str]]]] = []  # atom, stack after it
    prefix = ""

    def size(items: list[tuple[str, list[tuple[str, str]]]], open_: list[tuple[str, str]]) -> int:
        return len(prefix) + sum(len(a) for a, _ in items) + _closers_len(open_)

    for atom in atoms:
        after = _apply(stack, atom)
        if current and size([*current, (atom, after)], after) > limit:
            cut = _last_newline(current)
            if cut is None:
                kept, carry = current, []
            else:
                kept, carry = current[:cut], current[cut + 1 :]
            open_at_cut = kept[-1][1]
            parts.append(prefix + "".join(a for a, _ in kept) + _closers(open_at_cut))
            prefix = "".join(tag for _, tag in open_at_cut)
            current = carry
        current.append((atom, after))
        stack = after
    if current:
        parts.append(prefix + "".join(a for a, _ in current) + _closers(stack))
    return [p for p in parts if p.strip()]


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


def when(moment: datetime | None, tz: tzinfo) -> str:
    """A stored UTC time as a person reads it: in the configured zone, to the second."""
    if moment is None:
        return "never"
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
