"""Fault injection against the model side, with the real `fleet run`, the local Bot API server
and the local Messages API server (issue 18): 429 / 529 / 500 / 401 / 400, malformed and huge
tool input, a reply cut at max_tokens, kill -9 during a run, and secrets in command output and
model errors. Retry backoffs are configured in seconds so the faults play out quickly; nothing
here asserts a duration."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.anthropic_server import AnthropicServer, Reply, error, text, tool_use
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    FleetProcess,
    fleet_env,
    query,
    wait_query,
    write_config,
)
from tests.inproc import Fleet, InProcessFleet

SECONDARY_KEY = "sk-ant-test-secondary-0f9e8d"
CHECK_TOKEN = "chk-9f8e7d6c5b4a"
FAST = """
[runtime]
lease_seconds = {lease}
retry_backoff = "1s"
retry_backoff_max = "2s"
wake_window = "3s"
"""
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
profiles = ["primary", "secondary"]
authority = ["comment", "subtask"]
max_retries = 1
"""
CODER = "claude-haiku-4-5"
DONE = tool_use("set_status", {"status": "done", "note": "Fixed the typo and checked it."})


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY, SECONDARY_KEY}) as server:
        server.default = text("Noted.")  # the hub, told about what happened
        yield server


async def start(
    tmp_path: Path,
    botapi: BotAPIServer,
    anthropic: AnthropicServer,
    *,
    extra: str = "",
    env: dict[str, str] | None = None,
    agents: str = AGENTS,
    lease: int = 120,
    real: bool = False,
) -> Fleet:
    """`lease`: seconds; short only where a killed run must be found soon, since a loaded
    machine can miss a short lease's renewal and a live run would be reaped. The fleet runs
    in the test's process; `real`: a `fleet run` process (to kill -9)."""
    config = write_config(
        tmp_path,
        botapi.base_url,
        anthropic_base=anthropic.base_url,
        agents=agents,
        profiles={"secondary": SECONDARY_KEY},
        extra=FAST.format(lease=lease) + extra,
    )
    fleet = FleetProcess(config, env=env) if real else InProcessFleet(config, env=env)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    return fleet


def _text(call: Call) -> str:
    return str(call.params.get("text", ""))


def alerts(botapi: BotAPIServer) -> list[Call]:
    return [
        c
        for c in botapi.calls_of("sendMessage")
        if c.params["chat_id"] == FEED_CHAT and c.params.get("message_thread_id") == ALERTS_TOPIC
    ]


def database_text(config: Path) -> str:
    """Every row of every table, as text."""
    with sqlite3.connect(config.parent / "fleet.db") as db:
        return "\n".join(db.iterdump())


def coder_requests(anthropic: AnthropicServer) -> list[Any]:
    return [r for r in anthropic.requests if r.model == CODER]


async def assign_and_finish(fleet: Fleet, botapi: BotAPIServer, text: str) -> None:
    botapi.push_message(OPERATOR, f"/assign coder {text}")
    await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 1", [("done",)], 60)


def statuses(config: Path, task_id: int = 1) -> list[str]:
    rows = query(
        config, "SELECT to_status FROM task_events WHERE task_id = ? AND kind = 'status'", task_id
    )
    return [row[0] for row in rows]


async def test_a_revoked_primary_key_fails_over_to_the_secondary_once_per_key(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.valid_keys = {SECONDARY_KEY}  # the primary key was revoked
    anthropic.script(
        tool_use("comment", {"text": "On it."}), DONE, model=CODER, api_key=SECONDARY_KEY
    )
    fleet = await start(tmp_path, botapi, anthropic)
    await assign_and_finish(fleet, botapi, "Fix the typo")
    revoked = [r for r in coder_requests(anthropic) if r.api_key == ANTHROPIC_KEY]
    assert len(revoked) == 1  # the second turn went straight to the secondary
    await botapi.wait_for_call("sendMessage", lambda c: "rejected the key" in _text(c))
    key_alerts = [c for c in alerts(botapi) if "rejected the key" in _text(c)]
    assert len(key_alerts) == 1 and "primary" in _text(key_alerts[0])
    assert "blocked" not in statuses(fleet.config)
    await fleet.stop()

    # Same config after a restart: the rejected key is still not called.
    anthropic.script(DONE, model=CODER, api_key=SECONDARY_KEY)
    again = InProcessFleet(fleet.config)
    await again.start()
    botapi.push_message(OPERATOR, "/assign coder Second task")
    await wait_query(again.config, "SELECT status FROM tasks WHERE id = 2", [("done",)], 60)
    revoked = [r for r in coder_requests(anthropic) if r.api_key == ANTHROPIC_KEY]
    assert len(revoked) == 1
    assert len([c for c in alerts(botapi) if "rejected the key" in _text(c)]) == 1
    await again.stop()


async def test_529_on_every_call_for_a_while_is_one_edited_alert_and_the_task_completes(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    outage = [error(529), error(500), error(529), error(529), error(500), error(529)]
    # Both keys fail (one pair each per run): six runs in a row, then the model is back.
    anthropic.script(*outage, DONE, model=CODER)
    fleet = await start(tmp_path, botapi, anthropic)
    await assign_and_finish(fleet, botapi, "Fix the typo")
    assert "blocked" not in statuses(fleet.config)
    failed = query(fleet.config, "SELECT count(*) FROM runs WHERE status = 'failed'")[0][0]
    assert failed >= 2
    await botapi.wait_for_call(
        "editMessageText", lambda c: f"{failed} runs failed since" in _text(c), timeout=20
    )
    run_alerts = [c for c in alerts(botapi) if "failed" in _text(c)]
    assert len(run_alerts) == 1, [_text(c) for c in run_alerts]
    # The task kept its retries: an outage is not the task's fault.
    assert query(fleet.config, "SELECT retries FROM tasks WHERE id = 1") == [(0,)]
    await fleet.stop()


async def test_429_defers_and_the_task_completes(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(error(429, retry_after=1), error(429, retry_after=1), DONE, model=CODER)
    fleet = await start(tmp_path, botapi, anthropic)
    await assign_and_finish(fleet, botapi, "Fix the typo")
    assert not [c for c in alerts(botapi) if "failed" in _text(c)]
    await fleet.stop()


async def test_an_invalid_model_blocks_the_task_at_once_with_the_reason_and_no_key(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    # A proxy at base_url that repeats the key in its error message.
    anthropic.script(
        error(400, message=f"model claude-haiku-4-5 not found for key {ANTHROPIC_KEY}"),
        model=CODER,
    )
    fleet = await start(tmp_path, botapi, anthropic)
    botapi.push_message(OPERATOR, "/assign coder Fix the typo")
    await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 1", [("blocked",)], 30)
    assert len(coder_requests(anthropic)) == 1  # not retried as if it were transient
    [(reason,)] = query(fleet.config, "SELECT blocked_reason FROM tasks WHERE id = 1")
    assert "configuration" in reason and "400" in reason and "***" in reason
    [alert] = await botapi.wait_for_call("sendMessage", lambda c: "failed" in _text(c))
    assert "400" in _text(alert) and "***" in _text(alert)
    for call in botapi.calls:
        assert ANTHROPIC_KEY not in repr(call.params)
    await fleet.stop()
    assert ANTHROPIC_KEY not in database_text(fleet.config)


async def test_a_huge_malformed_tool_input_is_refused_with_an_excerpt(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(
        tool_use("comment", {"text": "x" * 300_000}),
        tool_use("comment", {"txet": 5}),
        DONE,
        model=CODER,
    )
    fleet = await start(tmp_path, botapi, anthropic)
    await assign_and_finish(fleet, botapi, "Fix the typo")
    second, third = coder_requests(anthropic)[1:3]
    refusal = second.body["messages"][-1]["content"][0]
    assert refusal["is_error"] and "characters)" in str(refusal["content"])
    assert len(str(refusal["content"])) < 1000  # the input is not echoed back whole
    assert third.body["messages"][-1]["content"][0]["is_error"]
    await fleet.stop()


async def test_a_reply_cut_at_max_tokens_fails_loudly_and_is_retried(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    cut = Reply(
        content=[{"type": "text", "text": "I will fix it once I have checked that the rende"}],
        stop_reason="max_tokens",
    )
    anthropic.script(cut, DONE, model=CODER)
    fleet = await start(tmp_path, botapi, anthropic)
    await assign_and_finish(fleet, botapi, "Fix the typo")
    [(outcome,)] = query(fleet.config, "SELECT outcome FROM runs WHERE status = 'failed'")
    assert "max_tokens" in outcome
    [alert] = await botapi.wait_for_call("sendMessage", lambda c: "failed" in _text(c))
    assert "max_tokens" in _text(alert)
    await fleet.stop()


async def test_kill_9_during_a_run_records_each_comment_once_and_the_agent_goes_on(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    # The first run comments, then hangs in its next model call; the process is killed.
    # max_retries = 0: the reaper blocks the task after the restart, and must wake the agent
    # for its other todo task instead of leaving it to a heartbeat.
    anthropic.script(
        tool_use("comment", {"text": "First finding."}),
        text("never answered", delay=60),
        model=CODER,
    )
    agents = AGENTS.replace("max_retries = 1", "max_retries = 0")
    fleet = await start(tmp_path, botapi, anthropic, agents=agents, lease=3, real=True)
    botapi.push_message(OPERATOR, "/assign coder Fix the typo")
    await wait_query(
        fleet.config, "SELECT count(*) FROM task_events WHERE kind = 'comment'", [(1,)], 30
    )
    while len(coder_requests(anthropic)) < 2:  # the run now waits for its hanging call
        await asyncio.sleep(0.05)
    botapi.push_message(OPERATOR, "/assign coder Second task")
    await wait_query(fleet.config, "SELECT count(*) FROM tasks", [(2,)], 30)
    await fleet.kill()

    anthropic.script(DONE, model=CODER)
    again = InProcessFleet(fleet.config, env=fleet_env())
    await again.start()
    await wait_query(again.config, "SELECT status FROM tasks WHERE id = 1", [("blocked",)], 60)
    await wait_query(again.config, "SELECT status FROM tasks WHERE id = 2", [("done",)], 60)
    comments = query(again.config, "SELECT task_id, body FROM task_events WHERE kind='comment'")
    assert comments == [(1, "First finding.")]
    await again.stop()


async def test_a_check_command_printing_a_secret_is_redacted_in_alerts_and_the_database(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    checks = """
[alerting]
group_wait = "1s"
group_interval = "1s"

[[checks]]
id = "probe"
command = 'echo "probe token=${CHECK_TOKEN}"; exit 1'
every = "1s"
failures_before_alert = 1
recover = 'echo "recovering with ${CHECK_TOKEN}"; exit 1'
"""
    fleet = await start(
        tmp_path, botapi, anthropic, extra=checks, env=fleet_env(CHECK_TOKEN=CHECK_TOKEN)
    )
    await botapi.wait_for_call("sendMessage", lambda c: "probe token=***" in _text(c), timeout=30)
    await botapi.wait_for_call("sendMessage", lambda c: "recovering with ***" in _text(c))
    await fleet.stop()
    for call in botapi.calls:
        assert CHECK_TOKEN not in repr(call.params)
    dump = database_text(fleet.config)
    assert "probe token=***" in dump and CHECK_TOKEN not in dump
    assert CHECK_TOKEN not in fleet.log


async def test_a_refusal_notice_and_an_escalation_make_one_hub_run_about_the_escalated_task(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    agents = AGENTS.replace("max_retries = 1", "max_retries = 0")
    fleet = await start(tmp_path, botapi, anthropic, agents=agents)
    botapi.push_message(OPERATOR, "/assign hub Plan the week")  # the hub's own task, #1
    await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 1", [("in_progress",)])
    while len(anthropic.requests) < 1:
        await asyncio.sleep(0.05)
    # coder calls a tool it has no authority for (an oversight notice wakes the hub), then its
    # reply is cut: the run fails, its task is blocked (no retries) and escalated to the hub.
    anthropic.script(
        tool_use("assign_task", {"task_id": 2, "assignee": "hub"}),
        Reply(content=[{"type": "text", "text": "I will"}], stop_reason="max_tokens"),
        model=CODER,
    )
    botapi.push_message(OPERATOR, "/assign coder Fix the typo")
    await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 2", [("blocked",)], 30)
    await wait_query(
        fleet.config,
        "SELECT count(*) FROM inbox WHERE agent_id = 'hub' AND read_at IS NULL",
        [(0,)],
        30,
    )
    await wait_query(
        fleet.config,
        "SELECT count(*) FROM runs WHERE agent_id = 'hub' AND status IN ('queued', 'running')",
        [(0,)],
    )
    hub = [r for r in anthropic.requests if r.model != CODER]
    assert len(hub) == 2, [r.body["messages"][0]["content"][:80] for r in hub]
    brief = hub[1].body["messages"][0]["content"]
    assert brief.startswith("Your task: #2 Fix the typo"), brief
    assert "escalation" in brief or "blocked" in brief
    await fleet.stop()
