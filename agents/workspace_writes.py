"""An agent's writes to its workspace folder: a line in today's daily log, the work state
(WORKSTATE.md, replaced atomically), and an entry in long-term memory (MEMORY.md).

Writes take text from model output, so each is bounded to `MAX_WRITE_CHARS` per call.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import date, datetime
from pathlib import Path

from agents.workspace import _read, _require_folder, _Unreadable, daily_log_name

MAX_WRITE_CHARS = 4000
"""The most text one write (daily log line, work state, memory entry) may carry."""


def _bounded(text: str, what: str) -> str:
    if len(text) > MAX_WRITE_CHARS:
        raise ValueError(
            f"{what} is {len(text)} characters; at most {MAX_WRITE_CHARS} may be written "
            "in one call"
        )
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _as_entry(prefix: str, text: str) -> str:
    """`text` as one markdown list item: continuation lines indented under the first."""
    lines = [line.rstrip() for line in text.strip().split("\n")]
    return prefix + "\n".join([lines[0], *(f"  {line}" if line else "" for line in lines[1:])])


def _append(path: Path, entry: str) -> None:
    """Append `entry` as whole lines with one O_APPEND write, starting on a new line even if
    someone left the file without a final newline."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        needs_newline = False
        if size:
            with path.open("rb") as existing:
                existing.seek(size - 1)
                needs_newline = existing.read(1) != b"\n"
        data = (("\n" if needs_newline else "") + entry + "\n").encode("utf-8")
        while data:
            written = os.write(fd, data)
            data = data[written:]
    finally:
        os.close(fd)


def append_daily_log(folder: Path, today: date, text: str, now: datetime) -> Path:
    """Append "- HH:MM text" to memory/YYYY-MM-DD.md of `today`, creating the memory folder
    and the file; returns the file's path. Multi-line text stays one list item. Raises
    ValueError for blank text or text over `MAX_WRITE_CHARS`."""
    _require_folder(folder)
    text = _bounded(text, "the daily log entry")
    if not text.strip():
        raise ValueError("the daily log entry is empty")
    path = folder / daily_log_name(today)
    path.parent.mkdir(parents=True, exist_ok=True)
    _append(path, _as_entry(f"- {now:%H:%M} ", text))
    return path


def write_workstate(folder: Path, text: str) -> None:
    """Replace WORKSTATE.md with `text` atomically (a temporary file in the same folder, then
    os.replace): a reader sees the old or the new state, never half of one. Empty text clears
    it. Raises ValueError for text over `MAX_WRITE_CHARS`."""
    _require_folder(folder)
    text = _bounded(text, "the work state")
    body = text.strip("\n") + "\n" if text.strip() else ""
    target = folder / "WORKSTATE.md"
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".WORKSTATE.md.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def remember(folder: Path, text: str, max_chars: int = 20000) -> None:
    """Append `text` to MEMORY.md as a list item ("- ..."), creating the file if needed.
    Raises ValueError for blank text, text over `MAX_WRITE_CHARS`, or when MEMORY.md would
    grow past `max_chars` characters (then it needs curating: merge or remove entries)."""
    _require_folder(folder)
    text = _bounded(text, "the memory entry")
    if not text.strip():
        raise ValueError("the memory entry is empty")
    entry = _as_entry("- ", text)
    path = folder / "MEMORY.md"
    try:
        current = _read(folder, "MEMORY.md") or ""
    except _Unreadable as err:
        raise ValueError(f"cannot add to MEMORY.md: could not read it: {err}") from None
    missing_newline = bool(current) and not current.endswith("\n")
    if len(current) + missing_newline + len(entry) + 1 > max_chars:
        raise ValueError(
            f"MEMORY.md is {len(current)} characters and this entry would take it past its "
            f"limit of {max_chars}; curate it first (merge or remove entries), then remember"
        )
    _append(path, entry)
