"""The real `fleet run` process: tasks and agents from Telegram (/new, /assign, /tasks, /task and
its buttons, /comment, /cancel, /agents, /agent, /pause, /resume, /wake).

There is no model server here: agents are paused first wherever a run could move a task, so
statuses stay where the test put them (a paused agent's runs are skipped).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.middlewares import NOT_ON_MESSAGE
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import OPERATOR, VIEWER, execute, query, wait_query
from tests.inproc import InProcessFleet


def _to(chat_id: int) -> Any:
    return lambda call: call.params.get("chat_id") == chat_id


async def send(botapi: BotAPIServer, user: int, text: str) -> Call:
    """Send `text` as `user`; the bot's reply (one sendMessage to that chat)."""
    after = botapi.mark()
    botapi.push_message(user, text)
    return (await botapi.wait_for_call("sendMessage", _to(user), after=after))[0]


async def reply(botapi: BotAPIServer, user: int, text: str) -> str:
    return str((await send(botapi, user, text)).params["text"])


def buttons(call_or_message: Call | dict[str, Any]) -> dict[str, str]:
    """Button text -> callback data, of a sent message or a stored one."""
    source = call_or_message.params if isinstance(call_or_message, Call) else call_or_message
    markup = source.get("reply_markup") or {"inline_keyboard": []}
    return {b["text"]: b["callback_data"] for row in markup["inline_keyboard"] for b in row}


async def press(
    botapi: BotAPIServer, user: int, message_id: int, data: str
) -> tuple[str, list[Call]]:
    """Press a button on a message in `user`'s chat: the answerCallbackQuery text, and the
    successful edits made before the answer."""
    after = botapi.mark()
    query_id = botapi.push_callback(user, data, message_id=message_id, chat_id=user)
    answer = await botapi.wait_for_call(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query_id, after=after
    )
    edits = [
        c
        for c in botapi.calls[after:]
        if c.method in ("editMessageText", "editMessageReplyMarkup") and c.ok
    ]
    return str(answer[0].params.get("text", "")), edits


def shown(botapi: BotAPIServer, chat_id: int, message_id: int) -> dict[str, Any]:
    message = botapi.message(chat_id, message_id)
    assert message is not None
    return message


def sql_time(moment: datetime) -> str:
    """A UTC time as the fleet's SQLite columns hold it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def events_of(config: Path, task_id: int) -> list[tuple[Any, ...]]:
    return query(
        config,
        "SELECT kind, actor, from_status, to_status, body FROM task_events "
        "WHERE task_id = ? ORDER BY id",
        task_id,
    )


async def pause_all(botapi: BotAPIServer) -> None:
    for agent in ("hub", "coder"):
        assert (await reply(botapi, OPERATOR, f"/pause {agent}")).startswith(f"Paused {agent}.")


async def test_tasks_are_created_commented_cancelled_and_acted_on_by_buttons(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    config = fleet_config
    await pause_all(botapi)

    # /new: the hub's task; the first line is the title, the rest the body.
    text = await reply(botapi, OPERATOR, "/new Fix the login page\nUsers see a 500 <b> & more")
    assert text.startswith("Task #1 for hub: Fix the login page\nhub is paused"), text
    await wait_query(
        config,
        "SELECT id, title, body, assignee, creator, status FROM tasks",
        [
            (
                1,
                "Fix the login page",
                "Users see a 500 <b> & more",
                "hub",
                f"person:{OPERATOR}",
                "todo",
            )
        ],
    )
    assert await reply(botapi, OPERATOR, "/assign coder Write the tests") == (
        "Task #2 for coder: Write the tests\n"
        "coder is paused; it starts on this after /resume coder."
    )
    long_title = "x" * 250
    assert (await reply(botapi, OPERATOR, f"/assign coder {long_title}")).startswith(
        f"Task #3 for coder: {'x' * 199}…"
    )
    await wait_query(
        config, "SELECT length(title), body FROM tasks WHERE id = 3", [(200, long_title)]
    )

    # Refusals: unknown agent (with the closest ids), viewers, malformed arguments.
    text = await reply(botapi, OPERATOR, "/assign codr do it")
    assert 'Unknown agent "codr". Did you mean: coder?' in text
    assert "Usage: /assign &lt;agent&gt; &lt;text&gt;" in text
    assert "Usage: /assign" in await reply(botapi, OPERATOR, "/assign")
    assert "What should coder do?" in await reply(botapi, OPERATOR, "/assign coder")
    assert "Usage: /new" in await reply(botapi, OPERATOR, "/new")
    assert (
        await reply(botapi, VIEWER, "/assign coder sneak")
        == "/assign needs the operator role; you are viewer."
    )
    assert (
        await reply(botapi, VIEWER, "/new sneak")
        == "/new needs the operator role; you are viewer."
    )
    assert query(config, "SELECT count(*) FROM tasks") == [(3,)]

    # /comment adds an event; /cancel twice: the second names the current status.
    assert (await reply(botapi, OPERATOR, "/comment 2 cover the <edge> cases")).startswith(
        "Comment added to task #2"
    )
    await wait_query(
        config,
        "SELECT kind, actor, body FROM task_events WHERE task_id = 2 AND kind = 'comment'",
        [("comment", f"person:{OPERATOR}", "cover the <edge> cases")],
    )
    assert (
        await reply(botapi, OPERATOR, "/cancel 2")
        == "Task #2 cancelled: no run will pick it up again."
    )
    assert await reply(botapi, OPERATOR, "/cancel 2") == "Task #2 is already cancelled."
    await wait_query(config, "SELECT status FROM tasks WHERE id = 2", [("cancelled",)])
    assert "Usage: /comment" in await reply(botapi, OPERATOR, "/comment 2")
    assert await reply(botapi, OPERATOR, "/comment 99 hello") == "There is no task #99."
    assert await reply(botapi, OPERATOR, "/cancel 99") == "There is no task #99."
    huge = "9" * 40
    assert "There is no task #9999" in await reply(botapi, OPERATOR, f"/cancel {huge}")
    assert "There is no task #9999" in await reply(botapi, VIEWER, f"/task {huge}")
    assert "Usage: /task" in await reply(botapi, VIEWER, "/task ²")
    assert "Usage: /cancel" in await reply(botapi, OPERATOR, "/cancel -1")
    assert "Usage: /task" in await reply(botapi, VIEWER, "/task")

    # /task: the card, escaped, in the configured timezone, with its buttons.
    card = await send(botapi, OPERATOR, "/task 1")
    text = card.params["text"]
    assert "<b>Task #1</b> · todo" in text
    assert "Assignee: hub · priority normal" in text
    assert "Created by Ben at " in text and ("CET" in text or "CEST" in text)
    assert "Users see a 500 &lt;b&gt; &amp; more" in text
    assert "Ben created →todo: Fix the login page" in text
    assert set(buttons(card)) == {"Cancel", "Reassign"}
    card_id = card.result["message_id"]

    # A viewer may look but not press.
    own = await send(botapi, VIEWER, "/task 1")
    answer, edits = await press(botapi, VIEWER, own.result["message_id"], buttons(own)["Cancel"])
    assert answer == "This action needs the operator role; you are viewer."
    assert not edits

    # Reassign: the agents to choose from, then the card again with the new assignee.
    answer, edits = await press(botapi, OPERATOR, card_id, buttons(card)["Reassign"])
    assert answer == "Reassign task #1 (now hub) to…"
    picker = buttons(shown(botapi, OPERATOR, card_id))
    assert set(picker) == {"coder", "« Back"}
    answer, edits = await press(botapi, OPERATOR, card_id, picker["coder"])
    assert answer == "Task #1 reassigned to coder"
    assert "Assignee: coder" in edits[-1].params["text"]
    await wait_query(config, "SELECT assignee FROM tasks WHERE id = 1", [("coder",)])

    # Cancel, then the same press again: the reason, and nothing changes.
    cancel = buttons(shown(botapi, OPERATOR, card_id))["Cancel"]
    answer, edits = await press(botapi, OPERATOR, card_id, cancel)
    assert answer == "Task #1 cancelled"
    assert "<b>Task #1</b> · cancelled" in edits[-1].params["text"]
    assert buttons(shown(botapi, OPERATOR, card_id)) == {}
    await wait_query(config, "SELECT status FROM tasks WHERE id = 1", [("cancelled",)])
    before = events_of(config, 1)
    # The card has no buttons now: the old Cancel is not on it, and nothing changes.
    answer, edits = await press(botapi, OPERATOR, card_id, cancel)
    assert answer == NOT_ON_MESSAGE
    assert not edits
    assert events_of(config, 1) == before
    assert query(config, "SELECT status FROM tasks WHERE id = 1") == [("cancelled",)]

    # A card gone stale: the task was cancelled by command; the press says so and the card
    # is brought up to date.
    card = await send(botapi, OPERATOR, "/task 3")
    await reply(botapi, OPERATOR, "/cancel 3 not needed")
    await wait_query(config, "SELECT status FROM tasks WHERE id = 3", [("cancelled",)])
    before = events_of(config, 3)
    answer, edits = await press(
        botapi, OPERATOR, card.result["message_id"], buttons(card)["Cancel"]
    )
    assert answer == "Task #3 is already cancelled."
    assert "<b>Task #3</b> · cancelled" in edits[-1].params["text"]
    assert events_of(config, 3) == before

    # Unblock: only on a blocked task, back to todo.
    assert (await reply(botapi, OPERATOR, "/assign coder Rotate the keys")).startswith("Task #4")
    await wait_query(config, "SELECT status FROM tasks WHERE id = 4", [("todo",)])
    await execute(
        config,
        "UPDATE tasks SET status = 'blocked', blocked_reason = 'waiting for <keys>' WHERE id = 4",
    )
    card = await send(botapi, OPERATOR, "/task 4")
    assert "Blocked: waiting for &lt;keys&gt;" in card.params["text"]
    assert set(buttons(card)) == {"Cancel", "Unblock", "Reassign"}
    unblock = buttons(card)["Unblock"]
    answer, edits = await press(botapi, OPERATOR, card.result["message_id"], unblock)
    assert answer == "Task #4 unblocked: back to todo"
    await wait_query(
        config, "SELECT status, blocked_reason FROM tasks WHERE id = 4", [("todo", None)]
    )
    # The card no longer has Unblock: the old button is refused.
    answer, edits = await press(botapi, OPERATOR, card.result["message_id"], unblock)
    assert (answer, edits) == (NOT_ON_MESSAGE, [])
    assert query(config, "SELECT status FROM tasks WHERE id = 4") == [("todo",)]

    # A card stays under Telegram's limit however long the body and the history are
    # (the Bot API server checks the length Telegram counts: UTF-16, after the markup).
    long_body = "😀<&" * 1000
    assert (await reply(botapi, OPERATOR, f"/assign coder Big one\n{long_body}")).startswith(
        "Task #5"
    )
    for _ in range(12):
        await reply(botapi, OPERATOR, "/comment 5 " + "&<" * 1500)
    card = await send(botapi, VIEWER, "/task 5")
    assert "😀&lt;&amp;" in card.params["text"] and "…" in card.params["text"]
    assert "<b>History</b> (latest)" in card.params["text"]

    # Forged or outdated button data is answered, never ignored, and changes nothing.
    card_id = card.result["message_id"]
    before = events_of(config, 5)
    for forged in ("ta:cancel:" + "9" * 30 + ":", "ta:explode:5:", "ta:to:5:nobody", "ta:card:4:"):
        answer, edits = await press(botapi, VIEWER, card_id, forged)
        assert (answer, edits) == (NOT_ON_MESSAGE, []), forged
    assert events_of(config, 5) == before


async def test_tasks_listing_pages_and_filters(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    await pause_all(botapi)
    for n in range(1, 10):
        assert (await reply(botapi, OPERATOR, f"/assign coder Job {n}")).startswith(f"Task #{n}")
    for n in (10, 11):
        assert (await reply(botapi, OPERATOR, f"/new Hub job {n}")).startswith(f"Task #{n}")
    assert (
        await reply(botapi, OPERATOR, "/cancel 9")
        == "Task #9 cancelled: no run will pick it up again."
    )
    await wait_query(fleet_config, "SELECT count(*) FROM tasks WHERE status = 'todo'", [(10,)])

    listing = await send(botapi, VIEWER, "/tasks")
    text = listing.params["text"]
    assert text.startswith("<b>Open tasks</b>: 10 · page 1/2"), text
    assert "#1 todo · coder · Job 1" in text and "#8 todo" in text and "#10" not in text
    assert set(buttons(listing)) == {"Next »"}
    message_id = listing.result["message_id"]

    answer, edits = await press(botapi, VIEWER, message_id, buttons(listing)["Next »"])
    assert answer == "Page 2/2"
    page2 = edits[-1].params["text"]
    assert "page 2/2" in page2 and "#10 todo · hub · Hub job 10" in page2 and "#11" in page2
    assert "#1 " not in page2 and "#9 " not in page2
    assert set(buttons(shown(botapi, VIEWER, message_id))) == {"« Prev"}
    answer, edits = await press(
        botapi, VIEWER, message_id, buttons(shown(botapi, VIEWER, message_id))["« Prev"]
    )
    assert answer == "Page 1/2"
    assert "#1 todo" in edits[-1].params["text"]
    # Data that is not one of the listing's buttons is refused: the listing stays.
    for forged in ("tp::7", "tp:nobody:0", "tp::1:x"):
        answer, edits = await press(botapi, VIEWER, message_id, forged)
        assert (answer, edits) == (NOT_ON_MESSAGE, []), forged

    text = await reply(botapi, VIEWER, "/tasks coder")
    assert text.startswith("<b>Open tasks of coder</b>: 8 · page 1/1")
    text = await reply(botapi, VIEWER, "/tasks cancelled")
    assert text.startswith("<b>Cancelled tasks</b>: 1") and "#9 cancelled · coder" in text
    assert await reply(botapi, VIEWER, "/tasks done") == "No done tasks."
    text = await reply(botapi, VIEWER, "/tasks codr")
    assert '"codr" is neither an agent nor a status. Did you mean: coder, todo?' in text
    assert "Usage: /tasks [agent|status]" in text
    assert "Did you mean: blocked" in await reply(botapi, VIEWER, "/tasks blokced")


async def test_agents_pause_resume_wake_and_spend(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    config = fleet_config
    text = await reply(botapi, VIEWER, "/agents")
    assert "<b>hub</b> · active · no runs yet · 0 open tasks" in text
    assert "<b>coder</b> · active · no runs yet · 0 open tasks" in text

    assert await reply(botapi, OPERATOR, "/pause coder deploy freeze") == (
        "Paused coder. Its queued runs are skipped until /resume coder."
    )
    await wait_query(
        config,
        "SELECT agent_id, paused, paused_by, paused_reason FROM agent_state",
        [("coder", 1, f"person:{OPERATOR}", "deploy freeze")],
    )
    assert (await reply(botapi, OPERATOR, "/pause coder")).startswith(
        "coder is already paused by Ben since "
    )
    assert (
        await reply(botapi, VIEWER, "/pause hub")
        == "/pause needs the operator role; you are viewer."
    )
    assert "⏸ paused" in await reply(botapi, VIEWER, "/agents")
    assert 'Unknown agent "codr". Did you mean: coder?' in await reply(
        botapi, OPERATOR, "/pause codr"
    )

    # A task for the paused coder: its run is skipped, so it stays todo.
    assert (await reply(botapi, OPERATOR, "/assign coder Ship it")).startswith("Task #1")
    await wait_query(
        config,
        "SELECT status, outcome FROM runs WHERE agent_id = 'coder'",
        [("skipped", "paused")],
    )
    assert query(config, "SELECT status FROM tasks") == [("todo",)]

    # Spend this month: usage rows from this month count, last month's do not.
    now = datetime.now(UTC)
    last_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(
        seconds=1
    )
    for cost, at in (("1.25", now), ("0.5", now), ("7", last_month)):
        await execute(
            config,
            "INSERT INTO usage (agent_id, purpose, model, profile, input_tokens, output_tokens,"
            " cache_write_tokens, cache_read_tokens, cost_usd, price_known, latency_ms,"
            " fallback_used, status, created_at)"
            " VALUES ('coder', 'turn', 'm', 'primary', 0, 0, 0, 0, ?, 1, 0, 0, 'ok', ?)",
            cost,
            sql_time(at),
        )
    text = await reply(botapi, VIEWER, "/agent coder")
    assert "Reports to hub" in text
    assert "Status: ⏸ paused by Ben since " in text and ": deploy freeze" in text
    assert "Next task: #1 todo · Ship it" in text
    assert "skipped · assignment · " in text and ": paused" in text
    assert "Spend this month: $1.75 (no monthly budget)" in text
    await execute(config, "UPDATE agent_state SET budget_usd_month = 10 WHERE agent_id = 'coder'")
    assert "Spend this month: $1.75 of $10.00 (18%)" in await reply(botapi, VIEWER, "/agent coder")
    assert 'Unknown agent "cod". Did you mean: coder?' in await reply(botapi, VIEWER, "/agent cod")

    # /wake: refused while paused; merges into a run already queued.
    assert "coder is paused, so a run would be skipped" in await reply(
        botapi, OPERATOR, "/wake coder"
    )
    later = sql_time(now + timedelta(hours=1))
    await execute(
        config,
        "INSERT INTO runs (agent_id, trigger, status, not_before, queued_at, input_tokens,"
        " output_tokens, cost_usd, turns) VALUES ('hub', 'schedule', 'queued', ?, ?, 0, 0, 0, 0)",
        later,
        sql_time(now),
    )
    assert (await reply(botapi, OPERATOR, "/wake hub")).startswith(
        "hub already had a run queued; this wake joins it, so it runs once, now. With a task"
    )
    # Merged: the queued run now starts at once; the hub has nothing to do, so it is skipped.
    await wait_query(
        config,
        "SELECT trigger, status, outcome FROM runs WHERE agent_id = 'hub'",
        [("schedule", "skipped", "nothing to do")],
    )
    assert await reply(botapi, OPERATOR, "/wake hub") == (
        "hub will run now. With a task, a message or a HEARTBEAT.md check to do, that costs "
        "model calls; with nothing to do, it ends at once and costs nothing."
    )
    await wait_query(
        config,
        "SELECT trigger, status FROM runs WHERE agent_id = 'hub' ORDER BY id",
        [("schedule", "skipped"), ("manual", "skipped")],
    )
    text = await reply(botapi, VIEWER, "/agents")
    assert "<b>hub</b> · active · last run skipped " in text

    # /resume: the coder has a todo task, so it is woken; a second resume says it is not paused.
    assert await reply(botapi, OPERATOR, "/resume coder") == (
        "Resumed coder. It has work waiting and was woken."
    )
    await wait_query(config, "SELECT paused FROM agent_state WHERE agent_id = 'coder'", [(0,)])
    assert await reply(botapi, OPERATOR, "/resume coder") == "coder is not paused."
    assert await reply(botapi, OPERATOR, "/resume hub") == "hub is not paused."
