"""Stopping a run in flight, end to end (the real `fleet run`, the local Bot API and Messages API
servers): an agent scripted to loop for ten turns is stopped by /cancel of its task and by the
Stop button on its line in the activity feed. After the stop's answer no model request comes
(compared with the server's record of request times, as an ordering check), the run ends
`cancelled` with who stopped it, and nothing more is written to the task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.anthropic_server import AnthropicServer, tool_use
from tests.botapi_server import BotAPIServer
from tests.fleet import (
    ACTIVITY_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    press,
    query,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet
from tests.test_e2e_review import AGENTS, CODER

TURNS = 10
SLACK = 1.0  # seconds: the answer to the stop and the last model request, as an ordering check


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}) as server:
        yield server


async def looping_fleet(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> InProcessFleet:
    """coder, given task #1, comments on it turn after turn (each reply takes 0.4 s)."""
    anthropic.script(
        *(
            tool_use("comment", {"text": f"Still working, step {n}"}, delay=0.4)
            for n in range(1, TURNS + 1)
        ),
        model=CODER,
    )
    config = write_config(
        tmp_path,
        botapi.base_url,
        anthropic_base=anthropic.base_url,
        agents=AGENTS,
        extra=f"[runtime]\nmax_turns = {TURNS}",
    )
    fleet = InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    botapi.push_message(OPERATOR, "/assign coder Loop forever")
    # It is looping: two of its comments are on the task.
    await wait_query(
        config,
        "SELECT count(*) FROM task_events WHERE kind = 'comment' AND actor = 'agent:coder'",
        [(2,)],
        timeout=30,
    )
    return fleet


async def assert_stopped(
    fleet: InProcessFleet, anthropic: AnthropicServer, answered: float, events_then: int
) -> None:
    await wait_query(
        fleet.config,
        "SELECT status, outcome FROM runs WHERE agent_id = 'coder' AND turns > 0",
        [("cancelled", "stopped by Ben")],
        timeout=20,
    )
    calls = anthropic.requests_for(model=CODER)
    assert len(calls) < TURNS
    assert all(call.at <= answered + SLACK for call in calls), [c.at - answered for c in calls]
    # Nothing is written to the task after the stop: wait a little for a straggler.
    await asyncio.sleep(1.0)
    assert len(anthropic.requests_for(model=CODER)) == len(calls)
    [(events,)] = query(fleet.config, "SELECT count(*) FROM task_events WHERE task_id = 1")
    assert events == events_then
    assert query(fleet.config, "SELECT stop_requested_by FROM runs WHERE turns > 0") == [
        (f"person:{OPERATOR}",)
    ]


async def test_cancel_stops_the_run_in_flight(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    fleet = await looping_fleet(tmp_path, botapi, anthropic)
    after = botapi.mark()
    botapi.push_message(OPERATOR, "/cancel 1 wrong approach")
    [answer] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OPERATOR, after=after, timeout=15
    )
    assert answer.params["text"] == "Task #1 cancelled: no run will pick it up again."
    [(events,)] = query(fleet.config, "SELECT count(*) FROM task_events WHERE task_id = 1")
    await assert_stopped(fleet, anthropic, answer.at, events)
    assert query(fleet.config, "SELECT status FROM tasks") == [("cancelled",)]
    # The run's line in the activity feed ends with ⏹ and loses its Stop button.
    await botapi.wait_for_call(
        "editMessageText",
        lambda c: c.params["text"].startswith("⏹ <b>coder</b> on task #1: stopped by Ben"),
        timeout=15,
    )
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def test_the_stop_button_stops_the_run_in_flight(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    fleet = await looping_fleet(tmp_path, botapi, anthropic)
    [line] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ACTIVITY_TOPIC
            and "<b>coder</b> on task #1" in c.params["text"]
        ),
        timeout=15,
    )
    [[stop]] = line.params["reply_markup"]["inline_keyboard"]
    assert stop["text"] == "⏹ Stop"
    [(events_before,)] = query(fleet.config, "SELECT count(*) FROM task_events")
    after = botapi.mark()
    query_id = botapi.push_callback(
        OPERATOR, stop["callback_data"], message_id=line.result["message_id"], chat_id=FEED_CHAT
    )
    [answer] = await botapi.wait_for_call(
        "answerCallbackQuery",
        lambda c: c.params["callback_query_id"] == query_id,
        after=after,
        timeout=15,
    )
    assert answer.params["text"].startswith("Stopped run #")
    [(events,)] = query(fleet.config, "SELECT count(*) FROM task_events WHERE task_id = 1")
    assert events >= events_before
    await assert_stopped(fleet, anthropic, answer.at, events)
    # The task stays where it was; a second press says the run is over (or, once the line
    # has lost its button, that the button is not on it) and changes nothing.
    assert query(fleet.config, "SELECT status FROM tasks") == [("in_progress",)]
    again = await press(botapi, OPERATOR, stop["callback_data"], line.result["message_id"])
    assert again.endswith("is not running: it is cancelled.") or again == (
        "This button is not on this message; nothing was changed."
    )
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def test_stop_and_pause_commands(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    fleet = await looping_fleet(tmp_path, botapi, anthropic)
    after = botapi.mark()
    botapi.push_message(OPERATOR, "/pause coder")
    [answer] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OPERATOR, after=after, timeout=15
    )
    assert answer.params["text"] == (
        "Paused coder. Its queued runs are skipped until /resume coder; "
        "its run in flight is stopped."
    )
    [(events,)] = query(fleet.config, "SELECT count(*) FROM task_events WHERE task_id = 1")
    await assert_stopped(fleet, anthropic, answer.at, events)
    after = botapi.mark()
    botapi.push_message(OPERATOR, "/stop coder")
    [answer] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OPERATOR, after=after, timeout=15
    )
    assert answer.params["text"] == "coder has no run in flight."
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log
