"""Pipelines in Telegram: /pipeline starts a run or shows one; Retry step and Cancel."""

from __future__ import annotations

from aiogram import F
from aiogram.filters import CommandObject
from aiogram.types import CallbackQuery, Message

from agents.pipelines import find, show, start_run
from bot.args import no_such, parse_id
from bot.config import Config, Person, Role
from bot.views.buttons import keyboard
from bot.views.pipelines import PipelineCb, buttons, render
from bot.views.text import esc
from handlers.common import OPERATOR, person_actor, sentence
from handlers.registry import Routes, command
from storage import pipelines
from storage.db import Database

router = Routes(__name__)

USAGE = (
    "Usage: /pipeline &lt;pipeline&gt; &lt;topic&gt; to start a run, /pipeline &lt;run&gt; "
    "to see one."
)


@command(router, "pipeline", Role.viewer, usage="<pipeline> <topic> | <run>")
async def pipeline_command(
    message: Message, command: CommandObject, db: Database, config: Config, person: Person
) -> None:
    """Start a pipeline run on a topic (operators), or show a run's steps"""
    args = (command.args or "").strip()
    name, _, topic = args.partition(" ")
    run_id = parse_id(name)
    if run_id is not None:  # a run's number: out of range, it is no run's
        if run_id.value is None:
            await message.answer(no_such("pipeline run", run_id.shown))
        else:
            await _show(message, db, run_id.value)
        return
    pipeline = find(config, name) if name else None
    if pipeline is None:
        known = ", ".join(p.id for p in config.pipelines) or "none configured"
        said = f"There is no pipeline {esc(name[:40])}. " if name else ""
        await message.answer(f"{said}{USAGE} Pipelines: {esc(known)}.")
        return
    if not person.role.allows(Role.operator):
        await message.answer(
            f"Starting a pipeline needs the operator role; you are {person.role}."
        )
        return
    topic = topic.strip()
    if not topic:
        await message.answer(f"Give the topic: /pipeline {esc(pipeline.id)} &lt;topic&gt;.")
        return
    run = await start_run(
        config,
        db,
        pipeline,
        topic[:1000],
        requested_by=person_actor(person),
        chat_id=message.chat.id,
        topic_id=message.message_thread_id if message.is_topic_message else None,
    )
    await message.answer(
        f"Pipeline run #{run.id} of {esc(pipeline.id)} started; its message follows its steps."
    )


async def _show(message: Message, db: Database, run_id: int) -> None:
    async with db.session() as session:
        run = await pipelines.get(session, run_id)
        if run is None:
            await message.answer(no_such("pipeline run", run_id))
            return
        steps = await pipelines.steps_of(session, run_id)
        costs = await pipelines.costs(session, [s.task_id for s in steps if s.task_id])
    await message.answer(render(run, steps, costs), reply_markup=keyboard(buttons(run)))


@router.callback_query(PipelineCb.filter(), flags=OPERATOR)
async def press(
    callback: CallbackQuery,
    callback_data: PipelineCb,
    db: Database,
    config: Config,
    person: Person,
) -> None:
    """Retry step (a new subtask for the step that stopped) or Cancel a run."""
    by = person_actor(person)
    async with db.claim() as session:
        if callback_data.a == "r":
            refusal = await pipelines.retry_step(session, callback_data.id, by=by)
        elif callback_data.a == "c":
            refusal = await pipelines.cancel(session, callback_data.id, by=by)
        else:
            refusal = "this button is not valid"
        run = await pipelines.get(session, callback_data.id)
        if not refusal and run is not None:
            await show(session, config, run)
    if refusal:
        await callback.answer(sentence(refusal)[:200], show_alert=True)
        return
    done = "The step starts again." if callback_data.a == "r" else "Cancelled."
    await callback.answer(f"Pipeline run #{callback_data.id}: {done}")


@router.callback_query(F.data.startswith("pl:"))
async def forged(callback: CallbackQuery) -> None:
    await callback.answer("This button is not valid; nothing was changed.", show_alert=True)
