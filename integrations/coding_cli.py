"""What a coding CLI said at the end of a run: its result text, usage, cost, and whether it
stopped on a rate or usage limit.

Two output shapes are read (the CLI is recognised by its program name, argv[0]):

- Claude Code, `claude -p --output-format json`: one JSON object when the run ends,
  `{"type": "result", "subtype": "success" | "error_max_turns" | "error_during_execution",
  "is_error": bool, "result": "<final text>", "total_cost_usd": 0.0123, "num_turns": 3,
  "session_id": "...", "duration_ms": ..., "usage": {"input_tokens": .., "output_tokens": ..,
  "cache_creation_input_tokens": .., "cache_read_input_tokens": ..}}`. A usage limit comes
  back as `is_error: true` with a result like "Claude AI usage limit reached|1767000000".
- Codex, `codex exec --json`: JSON lines, one event each: `thread.started` {thread_id},
  `turn.started`, `item.started` / `item.completed` {item: {id, type: "agent_message" |
  "reasoning" | "command_execution" | "file_change" | ..., text}}, `turn.completed` {usage:
  {input_tokens, cached_input_tokens, output_tokens}}, `turn.failed` {error: {message}},
  `error` {message}. The final answer is the last agent_message's text; Codex reports no cost,
  so its tokens are priced with `[pricing]`.

Anything else (another CLI, or output that is not JSON) is read as plain text: the last
lines are the result, no usage. A limit is also recognised from the text when the JSON does
not say it (`LIMIT` below: "rate limit", "usage limit", "429", "quota").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Any

LIMIT = re.compile(
    r"rate[ _-]?limit|usage limit|limit reached|too many requests|\b429\b|quota exceeded|"
    r"insufficient_quota",
    re.IGNORECASE,
)
_RESET = re.compile(r"\|(\d{10})\b")
PR_URL = re.compile(r"https?://[^\s\"'<>]+/(?:pull|merge_requests)/\d+")


@dataclass
class Report:
    result: str = ""
    is_error: bool = False
    limited: bool = False
    cost_usd: Decimal | None = None  # None: the CLI reported no cost
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    turns: int = 0
    session_id: str | None = None
    retry_at: datetime | None = None  # when a limit resets, if the CLI said
    errors: list[str] = field(default_factory=list)

    @property
    def reported_usage(self) -> bool:
        return self.cost_usd is not None or bool(self.input_tokens or self.output_tokens)


def kind_of(argv: list[str]) -> str:
    """ "claude", "codex" or "text", from the program's name."""
    name = PurePath(argv[0]).name if argv else ""
    return name if name in ("claude", "codex") else "text"


def parse(argv: list[str], output: str, exit_code: int | None) -> Report:
    kind = kind_of(argv)
    if kind == "claude":
        report = _claude(output)
    elif kind == "codex":
        report = _codex(output)
    else:
        report = Report(result=_tail(output))
    if exit_code not in (0, None):
        report.is_error = True
    if report.is_error and not report.limited:
        # The JSON did not say why: the documented messages on stderr do.
        report.limited = bool(LIMIT.search(report.result) or LIMIT.search(_tail(output, 40)))
    return report


def pr_url(output: str) -> str | None:
    found = PR_URL.findall(output)
    return found[-1] if found else None


def _tail(output: str, lines: int = 20) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])


def _json_objects(output: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            objects.append(value)
    if not objects:
        # The JSON result may be pretty-printed over several lines.
        start = output.find("{")
        if start >= 0:
            try:
                value = json.loads(output[start:])
            except ValueError:
                return []
            if isinstance(value, dict):
                objects.append(value)
    return objects


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _claude(output: str) -> Report:
    results = [o for o in _json_objects(output) if o.get("type") == "result"]
    if not results:
        return Report(result=_tail(output), is_error=True, errors=["no JSON result object"])
    final = results[-1]
    usage = final.get("usage") if isinstance(final.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    cost = final.get("total_cost_usd")
    text = final.get("result")
    report = Report(
        result=text if isinstance(text, str) else "",
        is_error=bool(final.get("is_error")) or final.get("subtype") not in (None, "success"),
        cost_usd=Decimal(str(cost)) if isinstance(cost, int | float) else None,
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
        cache_write_tokens=_int(usage.get("cache_creation_input_tokens")),
        turns=_int(final.get("num_turns")),
        session_id=final.get("session_id") if isinstance(final.get("session_id"), str) else None,
    )
    if report.is_error:
        report.limited = bool(LIMIT.search(report.result))
        # "Claude AI usage limit reached|<epoch>": the epoch is when the limit resets.
        reset = _RESET.search(report.result)
        if report.limited and reset:
            report.retry_at = datetime.fromtimestamp(int(reset.group(1)), UTC)
    return report


def _codex(output: str) -> Report:
    report = Report()
    messages: list[str] = []
    for event in _json_objects(output):
        kind = event.get("type")
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            report.session_id = event["thread_id"]
        elif kind == "item.completed":
            item = event.get("item")
            if isinstance(item, dict) and item.get("type") == "agent_message":
                messages.append(str(item.get("text", "")))
        elif kind == "turn.completed":
            usage = event.get("usage")
            if isinstance(usage, dict):
                cached = _int(usage.get("cached_input_tokens"))
                # Codex counts cached input inside input_tokens; kept apart here as with
                # Claude, so that each is priced once.
                report.input_tokens += max(0, _int(usage.get("input_tokens")) - cached)
                report.cache_read_tokens += cached
                report.output_tokens += _int(usage.get("output_tokens"))
            report.turns += 1
        elif kind in ("turn.failed", "error"):
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else event.get("message")
            report.errors.append(str(message or kind))
            report.is_error = True
    report.result = messages[-1] if messages else "; ".join(report.errors) or _tail(output)
    report.limited = any(LIMIT.search(e) for e in report.errors)
    return report
