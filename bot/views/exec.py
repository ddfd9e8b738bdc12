"""Commands agents run, as people see them: /rules with Revoke buttons, and /exec."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.config import Config
from bot.views.text import clip, display_name, esc, when
from storage.models import DbId, ExecRule, ExecRun

RULES_SHOWN = 30


class RuleCb(CallbackData, prefix="xr"):
    """The Revoke button of an exec rule."""

    id: DbId


def rules(found: Sequence[ExecRule], agent_id: str | None) -> str:
    """/rules: the exec rules (of one agent), the first 30."""
    whose = f" of {esc(agent_id)}" if agent_id else ""
    if not found:
        return f"No exec rules{whose}."
    lines = [f"<b>Exec rules{whose}</b>"]
    lines += [
        f"#{rule.id} {esc(rule.agent_id)}: <code>{esc(clip(' '.join(rule.argv), 200))}</code>"
        for rule in found[:RULES_SHOWN]
    ]
    return "\n".join(lines)


def revoke_buttons(found: Sequence[ExecRule]) -> InlineKeyboardMarkup:
    rows = [
        [InlineKeyboardButton(text=f"Revoke #{r.id}", callback_data=RuleCb(id=r.id).pack())]
        for r in found[:RULES_SHOWN]
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


def record(run: ExecRun, config: Config) -> str:
    """/exec <id>: one command's record: argv, who allowed it, exit code, output tail."""
    allowed = run.allowed_by
    if allowed.startswith(("person:", "system:")):
        allowed = display_name(allowed, config)
    via = f" (approval #{run.approval_id})" if run.approval_id else ""
    lines = [
        f"<b>Command #{run.id}</b> of {esc(run.agent_id)}"
        + (f" for task #{run.task_id}" if run.task_id else ""),
        f"argv: <code>{esc(clip(repr(run.argv), 1000))}</code>",
        f"cwd: {esc(run.cwd)} · timeout {run.timeout_s} s",
        f"allowed by {esc(allowed)}{via}",
        f"status: {esc(run.status)}"
        + (f" · exit code {run.exit_code}" if run.exit_code is not None else "")
        + (f" · {run.duration_s:.1f} s" if run.duration_s is not None else ""),
        f"started {when(run.started_at, config.tz)}" if run.started_at else "not started",
    ]
    if run.output_tail:
        lines.append(f"<pre>{esc(run.output_tail[-1500:])}</pre>")
    return "\n".join(lines)
