"""Exec approvals and rules in Telegram: the Always allow button, /rules and /exec.

Allow once and Deny are the approval's Approve and Reject (handlers/approvals.py); Always allow
approves and adds the exec rule for that agent and exact argv, in one transaction
(storage.exec.always_allow). Rules are granted and revoked by owners only.
"""

from __future__ import annotations

import logging

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from agents.org import OrgChart
from bot.args import id_argument, no_such
from bot.config import Config, Person, Role
from bot.views.text import clip, esc
from handlers.approvals import settings
from handlers.registry import Routes, command
from handlers.tasks import sentence, unknown_agent, usage
from storage import approvals
from storage import exec as exec_runs
from storage.approvals import ApprovalCb
from storage.db import Database
from storage.models import DbId

log = logging.getLogger(__name__)
router = Routes(__name__)

OWNER = {"role": Role.owner}


class RuleCb(CallbackData, prefix="xr"):
    """The Revoke button of an exec rule."""

    id: DbId


@router.callback_query(ApprovalCb.filter(F.a == "w"), flags=OWNER)
async def press_always_allow(
    callback: CallbackQuery, callback_data: ApprovalCb, db: Database, person: Person
) -> None:
    """Always allow: approve (the command runs once now) and allow this exact argv for this
    agent from now on."""
    async with db.claim() as session:
        decision = await exec_runs.always_allow(
            session, callback_data.id, person_id=person.telegram_id, person_name=person.name
        )
    if not decision.won:
        await callback.answer(clip(sentence(decision.refusal), 200), show_alert=True)
        return
    if decision.status == approvals.PENDING:
        assert decision.approval is not None
        await callback.answer(
            f"Your approval is counted: {decision.votes} of {decision.approval.required}; the "
            "rule is added once it is approved."
        )
        return
    await callback.answer(
        f"Allowed #{callback_data.id}: it runs now, and this exact command runs without asking "
        "from now on (/rules to revoke)."
    )


@command(router, "rules", Role.viewer, usage="[agent]")
async def list_rules(
    message: Message, command: CommandObject, db: Database, org: OrgChart, person: Person
) -> None:
    """Exec rules: the commands agents may run without asking"""
    agent_id = (command.args or "").strip().lower() or None
    if agent_id is not None and agent_id not in org:
        await message.answer(unknown_agent(org, agent_id, usage("rules", "[agent]")))
        return
    async with db.session() as session:
        found = await exec_runs.rules(session, agent_id)
    whose = f" of {esc(agent_id)}" if agent_id else ""
    if not found:
        await message.answer(f"No exec rules{whose}.")
        return
    lines = [f"<b>Exec rules{whose}</b>"]
    lines += [
        f"#{rule.id} {esc(rule.agent_id)}: <code>{esc(clip(' '.join(rule.argv), 200))}</code>"
        for rule in found[:30]
    ]
    keyboard = None
    if person.role is Role.owner:
        rows = [
            [InlineKeyboardButton(text=f"Revoke #{r.id}", callback_data=RuleCb(id=r.id).pack())]
            for r in found[:30]
        ]
        keyboard = InlineKeyboardMarkup(inline_keyboard=rows)
    await message.answer("\n".join(lines), reply_markup=keyboard)


@router.callback_query(RuleCb.filter(), flags=OWNER)
async def press_revoke(
    callback: CallbackQuery, callback_data: RuleCb, db: Database, person: Person
) -> None:
    async with db.claim() as session:
        rule = await exec_runs.revoke(session, callback_data.id, by=f"person:{person.telegram_id}")
    if rule is None:
        await callback.answer(
            f"There is no live exec rule #{callback_data.id} (revoked already?).", show_alert=True
        )
        return
    log.info("exec rule #%d of %s revoked by %s", rule.id, rule.agent_id, person.name)
    await callback.answer(f"Revoked rule #{rule.id}: {rule.agent_id} asks again.")


@router.callback_query(F.data.startswith("xr:"))
async def forged_rule_button(callback: CallbackQuery) -> None:
    await callback.answer("This button is not valid; nothing was changed.", show_alert=True)


@command(router, "exec", Role.viewer, usage="<id>")
async def show_exec(
    message: Message, command: CommandObject, db: Database, config: Config
) -> None:
    """One command's record: argv, who allowed it, exit code, output tail"""
    run_id = await id_argument(message, command.args or "", "command", usage("exec", "<id>"))
    if run_id is None:
        return
    async with db.session() as session:
        run = await exec_runs.get(session, run_id)
    if run is None:
        await message.answer(no_such("command", run_id))
        return
    s = settings(config)
    allowed = run.allowed_by
    if allowed.startswith(("person:", "system:")):
        allowed = s.name(allowed)
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
        f"started {approvals.moment(run.started_at, s)}" if run.started_at else "not started",
    ]
    if run.output_tail:
        lines.append(f"<pre>{esc(run.output_tail[-1500:])}</pre>")
    await message.answer("\n".join(lines))
