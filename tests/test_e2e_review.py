"""Review end to end (the real `fleet run`, the local Bot API and Messages API servers): a task
in review is accepted or sent back from Telegram, and news on it (a comment) runs its agent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.anthropic_server import AnthropicServer, text, tool_use
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import ANTHROPIC_KEY, OPERATOR, query, wait_query, write_config
from tests.inproc import InProcessFleet
from tests.test_e2e_tasks import buttons, press, reply, send

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-haiku-4-5"
authority = ["comment", "subtask"]
"""
CODER = "claude-haiku-4-5"


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}) as server:
        yield server


async def start(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> InProcessFleet:
    config = write_config(
        tmp_path, botapi.base_url, anthropic_base=anthropic.base_url, agents=AGENTS
    )
    fleet = InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    return fleet


async def requests(anthropic: AnthropicServer, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(anthropic.requests_for(model=CODER)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(anthropic.requests)} model requests, wanted {count}")
        await asyncio.sleep(0.02)


def first_prompt(anthropic: AnthropicServer, index: int) -> str:
    content: Any = anthropic.requests_for(model=CODER)[index].body["messages"][0]["content"]
    return content if isinstance(content, str) else str(content)


async def delivered(fleet: InProcessFleet) -> None:
    """Wait until the operator's notices (e.g. "ready for review") are delivered, so a
    command's answer is the next message in the chat."""
    await wait_query(
        fleet.config,
        f"SELECT count(*) FROM outbox WHERE chat_id = {OPERATOR} AND status != 'sent'",
        [(0,)],
    )


async def idle(fleet: InProcessFleet) -> None:
    """No run of coder queued or running."""
    await wait_query(
        fleet.config,
        "SELECT count(*) FROM runs WHERE agent_id = 'coder' AND status IN ('queued', 'running')",
        [(0,)],
        timeout=20,
    )


async def card(botapi: BotAPIServer, task_id: int) -> Call:
    return await send(botapi, OPERATOR, f"/task {task_id}")


async def test_a_task_in_review_is_commented_sent_back_and_accepted(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    review = "Wrote the parser in parse.py and ran its tests."
    anthropic.script(tool_use("set_status", {"status": "in_review", "note": review}), model=CODER)
    fleet = await start(tmp_path, botapi, anthropic)
    assert (await reply(botapi, OPERATOR, "/assign coder Write the parser")).startswith("Task #1")
    await wait_query(fleet.config, "SELECT status FROM tasks", [("in_review",)], timeout=20)
    await idle(fleet)
    await delivered(fleet)

    # A comment on a task in review runs its agent, and the prompt says what is new.
    anthropic.script(text("Noted; the test is in parse_test.py already."), model=CODER)
    answer = await reply(botapi, OPERATOR, "/comment 1 Please also add a test for empty input")
    assert answer.startswith("Comment added to task #1 (in_review, coder)")
    await requests(anthropic, 2)
    prompt = first_prompt(anthropic, 1)
    assert prompt.startswith("New on task #1 since your last run:"), prompt
    assert "Please also add a test for empty input" in prompt
    await idle(fleet)
    assert query(fleet.config, "SELECT status FROM tasks") == [("in_review",)]
    [(status,)] = query(fleet.config, "SELECT status FROM runs ORDER BY id DESC LIMIT 1")
    assert status == "succeeded"

    # The card of a task in review offers Accept and Send back; Send back asks for the reason.
    shown = await card(botapi, 1)
    offered = buttons(shown)
    assert list(offered) == ["Accept", "Send back", "Cancel", "Reassign"]
    anthropic.script(
        tool_use("set_status", {"status": "in_review", "note": "Empty input is handled now."}),
        model=CODER,
    )
    after = botapi.mark()
    said, _ = await press(botapi, OPERATOR, shown.result["message_id"], offered["Send back"])
    assert said == "Reply with the reason to send it back."
    [prompt_call] = await botapi.wait_for_call(
        "sendMessage", lambda c: "why send task #1 back?" in c.params["text"], after=after
    )
    assert prompt_call.params["reply_markup"]["force_reply"] is True
    after = botapi.mark()
    botapi.push_message(
        OPERATOR, "Empty input still crashes", reply_to=prompt_call.result["message_id"]
    )
    [told] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OPERATOR, after=after
    )
    assert told.params["text"] == (
        "Task #1 sent back to coder (in_progress); it is woken with your reason."
    )
    await requests(anthropic, 3)
    prompt = first_prompt(anthropic, 2)
    assert "Sent back: Empty input still crashes" in prompt, prompt
    assert prompt.startswith("New on task #1 since your last run:")
    await wait_query(fleet.config, "SELECT status FROM tasks", [("in_review",)], timeout=20)
    await idle(fleet)

    # Accept: done, the evidence kept, the agent told (in its inbox, without a run).
    shown = await card(botapi, 1)
    said, edits = await press(
        botapi, OPERATOR, shown.result["message_id"], buttons(shown)["Accept"]
    )
    assert said == "Task #1 accepted: done"
    assert edits and "<b>Task #1</b> · done" in edits[-1].params["text"]
    assert query(fleet.config, "SELECT status FROM tasks") == [("done",)]
    events = query(
        fleet.config, "SELECT kind, actor, to_status, body FROM task_events ORDER BY id"
    )
    assert ("status", "agent:coder", "in_review", review) in events
    assert events[-1] == ("status", f"person:{OPERATOR}", "done", "accepted")
    assert query(fleet.config, "SELECT agent_id, body FROM inbox") == [
        ("coder", "task #1 (Write the parser) was accepted: it is done")
    ]
    # Commands say why when the task is not in review.
    assert await reply(botapi, OPERATOR, "/accept 1") == "Task #1 is done, not in_review."
    assert await reply(botapi, OPERATOR, "/sendback 1 more") == "Task #1 is done, not in_review."
    assert "What should the agent change?" in await reply(botapi, OPERATOR, "/sendback 1")
    assert len(anthropic.requests_for(model=CODER)) == 3
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def test_accept_and_sendback_commands(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(
        tool_use("set_status", {"status": "in_review", "note": "Drafted the release notes."}),
        tool_use("set_status", {"status": "in_review", "note": "Added the shortcuts section."}),
        model=CODER,
    )
    fleet = await start(tmp_path, botapi, anthropic)
    await reply(botapi, OPERATOR, "/assign coder Release notes")
    await wait_query(fleet.config, "SELECT status FROM tasks", [("in_review",)], timeout=20)
    await idle(fleet)
    await delivered(fleet)
    answer = await reply(botapi, OPERATOR, "/sendback 1 Mention the keyboard shortcuts")
    assert answer == "Task #1 sent back to coder (in_progress); it is woken with your reason."
    await requests(anthropic, 2)
    assert "Sent back: Mention the keyboard shortcuts" in first_prompt(anthropic, 1)
    await wait_query(fleet.config, "SELECT status FROM tasks", [("in_review",)], timeout=20)
    await idle(fleet)
    assert await reply(botapi, OPERATOR, "/accept 1") == "Task #1 accepted: done."
    assert query(fleet.config, "SELECT status FROM tasks") == [("done",)]
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log
