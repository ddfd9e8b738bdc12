"""Agent runs end to end: the real `fleet run`, the local Bot API server, and a local Anthropic
Messages API server answering with scripted replies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.anthropic_server import AnthropicServer, Reply, text, tool_use
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    ACTIVITY_TOPIC,
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    FleetProcess,
    query,
    wait_query,
    write_config,
)
from tests.inproc import Fleet, InProcessFleet

HUB_MODEL = "claude-sonnet-4-6"
CODER_MODEL = "claude-haiku-4-5"  # a model of its own, so replies can be scripted per agent
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
max_retries = 1
"""


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}) as server:
        yield server


async def start_fleet(
    tmp_path: Path,
    botapi: BotAPIServer,
    anthropic: AnthropicServer,
    *,
    agents: str = AGENTS,
    runtime: str = "",
    real: bool = False,
) -> Fleet:
    config = write_config(
        tmp_path,
        botapi.base_url,
        anthropic_base=anthropic.base_url,
        agents=agents,
        extra=f"[runtime]\n{runtime}" if runtime else "",
    )
    fleet = FleetProcess(config) if real else InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    return fleet


def to(chat: int) -> object:
    def match(call: Call) -> bool:
        return bool(call.params.get("chat_id") == chat)

    return match


async def test_assigned_task_is_done_by_the_agent_and_the_person_sees_it(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(
        tool_use("comment", {"text": "Looked at the login page; fixing the typo."}),
        tool_use(
            "set_status",
            {"status": "done", "note": "Fixed the typo in login.html and checked the page."},
        ),
    )
    fleet = await start_fleet(tmp_path, botapi, anthropic)
    pushed = time.monotonic()
    botapi.push_message(OPERATOR, "/assign coder Fix the typo on the login page")
    await anthropic_request(anthropic, 1)
    # Woken now, not at the next heartbeat (the fleet's only heartbeat is every 30 min).
    assert anthropic.requests[0].at - pushed < 15.0

    [note] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OPERATOR and "done" in c.params["text"]
    )
    assert "Task #1" in note.params["text"] and "Fixed the typo" in note.params["text"]
    await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 1", [("done",)])
    events = query(fleet.config, "SELECT kind, actor, to_status FROM task_events ORDER BY id")
    assert events == [
        ("created", f"person:{OPERATOR}", "todo"),
        ("status", "agent:coder", "in_progress"),
        ("comment", "agent:coder", None),
        ("status", "agent:coder", "done"),
    ]
    await wait_query(
        fleet.config,
        "SELECT agent_id, status, turns FROM runs WHERE status != 'skipped'",
        [("coder", "succeeded", 2)],
    )
    usage = query(fleet.config, "SELECT count(*), sum(input_tokens) > 0 FROM usage")
    assert usage == [(2, 1)]
    # The second model request carried the tool result of the first.
    second = anthropic.requests[1].body["messages"]
    assert second[-1]["content"][0]["type"] == "tool_result"
    assert anthropic.requests[0].body["system"].startswith("You are")
    await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ACTIVITY_TOPIC and "coder" in c.params["text"]
        ),
    )
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def anthropic_request(anthropic: AnthropicServer, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while len(anthropic.requests) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(anthropic.requests)} model requests, wanted {count}")
        await asyncio.sleep(0.02)


async def test_hub_routes_work_and_a_specialist_cannot_delegate_upward(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(
        tool_use(
            "create_subtask",
            {"assignee": "coder", "title": "Write the weekly report", "body": "Numbers."},
        ),
        tool_use("set_status", {"status": "in_review", "note": "Delegated to coder as #2."}),
        # hub's run, woken by the escalation
        text("Noted; I will ask the owner for the numbers."),
        model=HUB_MODEL,
    )
    # coder's run (which may start before the hub's first run ends): tries to hand work to
    # its manager, then blocks.
    anthropic.script(
        tool_use("create_subtask", {"assignee": "hub", "title": "You do it"}),
        tool_use("set_status", {"status": "blocked", "note": "Need the sales numbers."}),
        model=CODER_MODEL,
    )
    fleet = await start_fleet(tmp_path, botapi, anthropic)
    botapi.push_message(OPERATOR, "/new Weekly report\nWith the usual numbers")
    await wait_query(
        fleet.config,
        "SELECT id, assignee, parent_id, status FROM tasks ORDER BY id",
        [(1, "hub", None, "in_review"), (2, "coder", 1, "blocked")],
        timeout=30,
    )
    refusals = query(fleet.config, "SELECT actor, body FROM task_events WHERE kind = 'refused'")
    assert len(refusals) == 1
    assert refusals[0][0] == "agent:coder"
    assert "hub does not report to you" in refusals[0][1]
    # The refusal went back to the model as an error tool result.
    coder_second = anthropic.requests_for(model=CODER_MODEL)[1].body["messages"][-1]["content"][0]
    assert coder_second["is_error"] is True
    # Blocking woke the manager with the reason, through its inbox.
    await wait_query(
        fleet.config,
        "SELECT agent_id, kind, read_at IS NOT NULL FROM inbox",
        [("hub", "escalation", 1)],
        timeout=20,
    )
    await anthropic_request(anthropic, 5)
    hub_third = anthropic.requests_for(model=HUB_MODEL)[2]
    assert "Need the sales numbers" in str(hub_third.body["messages"][0]["content"])
    assert await fleet.stop() == 0


async def test_an_idle_heartbeat_makes_no_model_call(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    agents = AGENTS.replace('authority = ["assign", "comment", "subtask"]', 'heartbeat = "1s"')
    fleet = await start_fleet(tmp_path, botapi, anthropic, agents=agents)
    await wait_query(
        fleet.config,
        "SELECT count(*) >= 3 FROM runs WHERE agent_id = 'hub' AND status = 'skipped'",
        [(1,)],
        timeout=20,
    )
    assert anthropic.requests == []
    assert await fleet.stop() == 0


async def test_a_confused_model_is_bounded_and_alerted(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(
        tool_use("set_status", {"status": "finished!!"}),  # not in the schema
        tool_use("deploy_everything", {}),  # not a tool
        tool_use("comment", {"text": ""}),  # too short
        text("Still thinking..."),
        model=CODER_MODEL,
    )
    anthropic.default = text("Noted the blocked task.")  # the hub, woken by the escalation
    agents = AGENTS.replace("max_retries = 1", "max_retries = 0")
    fleet = await start_fleet(tmp_path, botapi, anthropic, agents=agents, runtime="max_turns = 3")
    botapi.push_message(OPERATOR, "/assign coder Do the thing")
    [alert] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == FEED_CHAT and "failed" in c.params["text"],
        timeout=20,
    )
    assert alert.params["message_thread_id"] == ALERTS_TOPIC
    assert "turn limit of 3" in alert.params["text"]
    [(status, outcome)] = query(
        fleet.config,
        "SELECT status, outcome FROM runs WHERE agent_id = 'coder' AND status != 'skipped'",
    )
    assert status == "failed" and "turn limit" in outcome
    coder = [r for r in anthropic.requests if '(agent "coder")' in str(r.body["system"])]
    assert len(coder) == 3
    results = [r.body["messages"][-1]["content"][0] for r in coder[1:]]
    assert all(r["is_error"] for r in results)
    assert "invalid input at status" in results[0]["content"]
    assert 'unknown tool "deploy_everything"' in results[1]["content"]
    refused = query(fleet.config, "SELECT count(*) FROM task_events WHERE kind = 'refused'")
    assert refused == [(3,)]
    # No retries left: the task is blocked (not left in progress) and the manager is told.
    await wait_query(fleet.config, "SELECT status FROM tasks", [("blocked",)])
    await wait_query(fleet.config, "SELECT agent_id, kind FROM inbox", [("hub", "escalation")])
    assert await fleet.stop() == 0


async def test_a_killed_run_is_retried_after_its_lease_then_blocked(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    slow = Reply(content=[{"type": "text", "text": "slow"}], delay=60)
    anthropic.script(slow, slow)
    fleet = await start_fleet(tmp_path, botapi, anthropic, runtime="lease_seconds = 3", real=True)
    botapi.push_message(OPERATOR, "/assign coder Long job")
    await anthropic_request(anthropic, 1)
    await fleet.kill()
    assert query(fleet.config, "SELECT status FROM tasks") == [("in_progress",)]

    # A new process reaps the dead run after its lease: the task is retried (once).
    second = FleetProcess(fleet.config)
    await second.start()
    await anthropic_request(anthropic, 2, timeout=30)
    assert query(fleet.config, "SELECT status, retries FROM tasks") == [("in_progress", 1)]
    running = query(fleet.config, "SELECT count(*) FROM runs WHERE status = 'running'")
    assert running == [(1,)]  # never two runs of one agent at once
    await second.kill()

    anthropic.script(text("Looking at the blocked task."))
    third = InProcessFleet(fleet.config)
    await third.start()
    await wait_query(fleet.config, "SELECT status, retries FROM tasks", [("blocked", 2)], 30)
    timed_out = query(fleet.config, "SELECT count(*) FROM runs WHERE status = 'timed_out'")
    assert timed_out == [(2,)]
    # The manager is woken with the reason.
    await wait_query(fleet.config, "SELECT agent_id, kind FROM inbox", [("hub", "escalation")], 20)
    await anthropic_request(anthropic, 3, timeout=20)
    assert anthropic.requests[2].api_key == ANTHROPIC_KEY
    assert await third.stop() == 0


async def test_a_nearly_full_context_flushes_workstate_and_ends_the_run(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    big = tool_use("comment", {"text": "Read the whole codebase."})
    big.usage = {"input_tokens": 950, "output_tokens": 20}
    anthropic.script(
        big,
        tool_use("update_workstate", {"text": "Halfway through the refactor of bot/."}),
    )
    fleet = await start_fleet(tmp_path, botapi, anthropic, runtime="context_budget_tokens = 1000")
    botapi.push_message(OPERATOR, "/assign coder Refactor everything")
    await wait_query(
        fleet.config,
        "SELECT status, turns FROM runs WHERE status != 'skipped'",
        [("succeeded", 2)],
        timeout=20,
    )
    flush = anthropic.requests[1].body["messages"][-1]["content"][-1]
    assert flush["type"] == "text" and "update_workstate" in flush["text"]
    workstate = tmp_path / "workspaces" / "coder" / "WORKSTATE.md"
    assert workstate.read_text(encoding="utf-8").startswith("Halfway through")
    assert len(anthropic.requests) == 2
    assert await fleet.stop() == 0
