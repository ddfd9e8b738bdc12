"""An agent's workspace folder, read: loading it for the system prompt of a heartbeat turn, and
whether HEARTBEAT.md lists a standing check. The prompt built from the loaded files is in
`agents.workspace_prompt`; the agent's writes to the folder are in `agents.workspace_writes`.

Loading (`load_workspace`) reads, in `WORKSPACE_ORDER`, SOUL.md, AGENTS.md, USER.md,
GUARDRAILS.md, MEMORY.md, HEARTBEAT.md and WORKSTATE.md, then the daily logs of yesterday and
today, `memory/YYYY-MM-DD.md`. Rules:

- A missing or blank file is skipped and not mentioned: an agent without a WORKSTATE.md simply
  has no saved work state, and an absent file costs no tokens.
- A file that cannot be read (permissions, a folder in its place, not UTF-8, implausibly large)
  is logged and shown as one line, "(could not read X: reason)"; loading never fails because of
  one file. A missing workspace folder raises `WorkspaceMissing`.
- Each file has a size limit in characters (`DEFAULT_LIMITS`, overridable per call). A cut is
  made at a line boundary where possible and said in a line right after the content, e.g.
  "[MEMORY.md truncated: showing the first 7990 of 23456 characters]". A daily log keeps its
  end, the most recent part, and says so.
- GUARDRAILS.md keeps at most `GUARDRAILS_MAX_ENTRIES` (15) entries. An entry is a top-level
  list item ("- ", "* ", "+ ", "1. ", "1) " at the start of a line) with all lines up to the
  next one; lines before the first entry (heading, preamble) are kept. When entries are left
  out, a line says "(N more entries not shown; at most 15 are loaded)".

`WorkspaceFile.text` is exactly what the prompt shows under the file's header, notes included.

The dates are the caller's: pass `today` as the date in the configured time zone
(`datetime.now(config.tz).date()`), and `now` likewise for the daily log's HH:MM.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType

log = logging.getLogger(__name__)

WORKSPACE_ORDER: tuple[str, ...] = (
    "SOUL.md",
    "AGENTS.md",
    "USER.md",
    "GUARDRAILS.md",
    "MEMORY.md",
    "HEARTBEAT.md",
    "WORKSTATE.md",
)
"""The fixed files, in prompt order. The daily logs (yesterday's, then today's) follow."""

DAILY_LOG = "daily"
"""The key in the limits for each daily log, memory/YYYY-MM-DD.md."""

DEFAULT_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        "SOUL.md": 4000,
        "AGENTS.md": 6000,
        "USER.md": 3000,
        "GUARDRAILS.md": 4000,
        "MEMORY.md": 8000,
        "HEARTBEAT.md": 3000,
        "WORKSTATE.md": 6000,
        DAILY_LOG: 4000,
    }
)
"""Characters loaded at most per file; keys are the file names and `DAILY_LOG`."""

GUARDRAILS_MAX_ENTRIES = 15
MAX_READ_BYTES = 2_000_000
"""A workspace file larger than this is reported, not read."""

# A list item: bullet or ordered marker, at least one space, then something.
_LIST_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d{1,9}[.)])[ \t]+(\S.*)$")
_THEMATIC_BREAK = re.compile(r"^\s*([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_DONE_BOX = re.compile(r"^\[[xX]\]")
_OPEN_BOX = re.compile(r"^\[ \]\s*")


class WorkspaceMissing(Exception):
    """The workspace folder does not exist (or is not a folder)."""


@dataclass(frozen=True)
class WorkspaceFile:
    """One loaded file. `name` is relative to the workspace ("SOUL.md",
    "memory/2025-01-31.md"); `text` is what the prompt shows, notes about cuts included;
    `truncated` says something was left out; `original_chars` is the whole file's length
    (0 when it could not be read)."""

    name: str
    text: str
    truncated: bool
    original_chars: int


# --- loading ------------------------------------------------------------------------------------


def load_workspace(
    folder: Path, today: date, limits: Mapping[str, int] | None = None
) -> list[WorkspaceFile]:
    """Read the workspace for a heartbeat turn; see the module docstring for the rules.
    `limits` overrides some or all of `DEFAULT_LIMITS`; an unknown key or a limit below 1
    raises ValueError."""
    _require_folder(folder)
    merged = _merge_limits(limits)
    files: list[WorkspaceFile] = []
    for name in WORKSPACE_ORDER:
        loaded = _load_one(folder, name, merged[name], keep_end=False)
        if loaded is not None:
            files.append(loaded)
    for day in (today - timedelta(days=1), today):
        loaded = _load_one(folder, daily_log_name(day), merged[DAILY_LOG], keep_end=True)
        if loaded is not None:
            files.append(loaded)
    return files


def daily_log_name(day: date) -> str:
    return f"memory/{day.isoformat()}.md"


def _require_folder(folder: Path) -> None:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise WorkspaceMissing(f"workspace folder {folder} {what}")


def _merge_limits(limits: Mapping[str, int] | None) -> dict[str, int]:
    merged = dict(DEFAULT_LIMITS)
    for key, value in (limits or {}).items():
        if key not in merged:
            known = ", ".join(DEFAULT_LIMITS)
            raise ValueError(f'unknown workspace limit "{key}" (known: {known})')
        if value < 1:
            raise ValueError(f'workspace limit "{key}" must be at least 1, not {value}')
        merged[key] = value
    return merged


class _Unreadable(Exception):
    """A workspace file exists but cannot be read; the message says why."""


def _read(folder: Path, name: str) -> str | None:
    """The file's text with newlines normalized; None when missing; raises _Unreadable."""
    path = folder / name
    try:
        size = path.stat().st_size
        if size > MAX_READ_BYTES:
            raise _Unreadable(f"{size} bytes, over the {MAX_READ_BYTES} a workspace file may be")
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _Unreadable(err.strerror or type(err).__name__) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _Unreadable(f"not UTF-8 text (invalid byte at position {err.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _load_one(folder: Path, name: str, limit: int, *, keep_end: bool) -> WorkspaceFile | None:
    try:
        text = _read(folder, name)
    except _Unreadable as err:
        log.warning("workspace %s: could not read %s: %s", folder, name, err)
        return WorkspaceFile(name, f"(could not read {name}: {err})", False, 0)
    if text is None or not text.strip():
        return None
    original = len(text)
    notes: list[str] = []
    shown = text
    if name == "GUARDRAILS.md":
        shown, dropped = _first_entries(text, GUARDRAILS_MAX_ENTRIES)
        if dropped:
            notes.append(
                f"({dropped} more entries not shown; at most {GUARDRAILS_MAX_ENTRIES} are loaded)"
            )
    if len(shown) > limit:
        if keep_end:
            shown = _cut_tail(shown, limit)
            notes.insert(
                0,
                f"[{name} truncated: showing the last {len(shown)} of {original} characters,"
                " the most recent part]",
            )
        else:
            shown = _cut_head(shown, limit)
            notes.insert(
                0, f"[{name} truncated: showing the first {len(shown)} of {original} characters]"
            )
    body = "\n".join([shown.strip("\n"), *notes])
    return WorkspaceFile(name, body, bool(notes), original)


def _cut_head(text: str, limit: int) -> str:
    """The start of `text`, at most `limit` characters, ending at a line boundary unless that
    would keep less than half."""
    head = text[:limit]
    if text[limit] == "\n":
        return head
    newline = head.rfind("\n")
    return head[: newline + 1] if newline >= limit // 2 else head


def _cut_tail(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` characters, starting at a line boundary unless that
    would keep less than half."""
    tail = text[-limit:]
    if text[-limit - 1] == "\n":
        return tail
    newline = tail.find("\n")
    return tail[newline + 1 :] if 0 <= newline < limit // 2 else tail


def _visible_lines(text: str) -> Iterator[tuple[str, str]]:
    """Each line as written, with the part of it that is neither inside an HTML comment nor
    inside a fenced code block ("" when none is)."""
    in_comment = False
    in_fence = False
    for raw in text.split("\n"):
        visible = ""
        rest = raw
        while rest:
            if in_comment:
                end = rest.find("-->")
                if end < 0:
                    break
                rest = rest[end + 3 :]
                in_comment = False
            else:
                start = rest.find("<!--")
                if start < 0:
                    visible += rest
                    break
                visible += rest[:start]
                rest = rest[start + 4 :]
                in_comment = True
        if _FENCE.match(visible):
            in_fence = not in_fence
            visible = ""
        elif in_fence:
            visible = ""
        yield raw, visible


def _is_entry_start(visible: str) -> bool:
    """A top-level list item: no indentation before its marker."""
    match = _LIST_ITEM.match(visible)
    return match is not None and not match.group(1) and not _THEMATIC_BREAK.match(visible)


def _first_entries(text: str, keep: int) -> tuple[str, int]:
    """The preamble and the first `keep` top-level list entries of `text`, and how many
    entries were left out."""
    kept: list[str] = []
    entries = 0
    for raw, visible in _visible_lines(text):
        if _is_entry_start(visible):
            entries += 1
        if entries <= keep:
            kept.append(raw)
    if entries <= keep:
        return text, 0
    return "\n".join(kept).rstrip() + "\n", entries - keep


# --- heartbeat ----------------------------------------------------------------------------------


def heartbeat_has_tasks(folder: Path) -> bool:
    """Whether HEARTBEAT.md lists at least one standing check, so that a heartbeat with no
    open tasks is worth a model call.

    Only list items count: a line starting (after any indentation) with "- ", "* ", "+ ",
    "1. " or "1) " followed by text; "- [ ] check x" counts, a ticked "- [x] ..." and an empty
    "- [ ]" do not. Headings, prose paragraphs, blank lines, thematic breaks ("* * *"), and
    anything inside an HTML comment (<!-- -->) or a fenced code block are not tasks, so
    instructions to humans and commented-out example checks cost nothing.

    A missing or blank HEARTBEAT.md has no tasks. An unreadable one counts as having tasks
    (logged): the turn's prompt then shows "(could not read HEARTBEAT.md: ...)" rather than
    the standing checks stopping silently. A missing folder raises WorkspaceMissing.
    """
    _require_folder(folder)
    try:
        text = _read(folder, "HEARTBEAT.md")
    except _Unreadable as err:
        log.warning("workspace %s: could not read HEARTBEAT.md: %s", folder, err)
        return True
    if text is None:
        return False
    for _, visible in _visible_lines(text):
        match = _LIST_ITEM.match(visible)
        if not match or _THEMATIC_BREAK.match(visible):
            continue
        item = match.group(2).strip()
        if _DONE_BOX.match(item):
            continue
        if _OPEN_BOX.sub("", item, count=1).strip():
            return True
    return False
