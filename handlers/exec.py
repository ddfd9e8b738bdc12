"""Exec approvals and rules in Telegram: the Always allow button, /rules and /exec.

Allow once and Deny are the approval's Approve and Reject (handlers/approvals.py); Always allow
approves and adds the exec rule for that agent and exact argv, in one transaction
(storage.exec.always_allow). Rules are granted and revoked by owners only.
"""

from __future__ import annotations

import logging

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, Message

from agents.org import OrgChart
from bot.args import id_argument, no_such
from bot.config import Config, Person, Role
from bot.views import exec as views
from bot.views.approvals import ApprovalCb
from bot.views.exec import RuleCb
from bot.views.text import clip
from handlers.common import person_actor, sentence, unknown_agent, usage
from handlers.registry import Routes, command
from storage import exec as exec_runs
from storage.approval_kinds import Kinds
from storage.approval_policy import ApprovalPolicy
from storage.db import Database
from storage.statuses import ApprovalStatus

log = logging.getLogger(__name__)
router = Routes(__name__)

OWNER = {"role": Role.owner}


@router.callback_query(ApprovalCb.filter(F.a == "w"), flags=OWNER)
async def press_always_allow(
    callback: CallbackQuery,
    callback_data: ApprovalCb,
    db: Database,
    person: Person,
    approval_policy: ApprovalPolicy,
    approval_kinds: Kinds,
) -> None:
    """Always allow: approve (the command runs once now) and allow this exact argv for this
    agent from now on."""
    async with db.claim() as session:
        decision = await exec_runs.always_allow(
            session,
            callback_data.id,
            policy=approval_policy,
            kinds=approval_kinds,
            person_id=person.telegram_id,
            person_name=person.name,
        )
    if not decision.won:
        await callback.answer(clip(sentence(decision.refusal), 200), show_alert=True)
        return
    if decision.status == ApprovalStatus.PENDING:
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
    keyboard = views.revoke_buttons(found) if found and person.role is Role.owner else None
    await message.answer(views.rules(found, agent_id), reply_markup=keyboard)


@router.callback_query(RuleCb.filter(), flags=OWNER)
async def press_revoke(
    callback: CallbackQuery, callback_data: RuleCb, db: Database, person: Person
) -> None:
    async with db.claim() as session:
        rule = await exec_runs.revoke(session, callback_data.id, by=person_actor(person))
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
    await message.answer(views.record(run, config))
