"""The content pipeline, end to end: the real `fleet run`, the local Bot API server and the
local Messages API server scripting four agents (researcher, writer, social, marketer) that
hand files forward through the drafts folder; the final post reaches a Telegram channel only
after an owner's Approve, and a run killed mid-step resumes at that step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from tests.anthropic_server import AnthropicServer, Reply, text, tool_use
from tests.botapi_server import BotAPIServer
from tests.fleet import (
    ACTIVITY_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    OWNER,
    VIEWER,
    FleetProcess,
    ask,
    press,
    query,
    wait_query,
    write_config,
)
from tests.inproc import Fleet, InProcessFleet
from tests.pg import require_pg_url, temporary_database

RESEARCHER = "claude-haiku-4-5"
WRITER = "claude-opus-4-6"
SOCIAL = "claude-opus-4-5"
MARKETER = "claude-sonnet-4-5"
CHANNEL = -100888

AGENTS = f"""
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "researcher"
reports_to = "hub"
workspace = "workspaces/researcher"
model = "{RESEARCHER}"
folders = {{ drafts = "rw" }}

[[agents]]
id = "writer"
reports_to = "hub"
workspace = "workspaces/writer"
model = "{WRITER}"
folders = {{ drafts = "rw" }}

[[agents]]
id = "social"
reports_to = "hub"
workspace = "workspaces/social"
model = "{SOCIAL}"
folders = {{ drafts = "rw" }}

[[agents]]
id = "marketer"
reports_to = "hub"
workspace = "workspaces/marketer"
model = "{MARKETER}"
authority = ["comment", "publish"]
folders = {{ drafts = "rw" }}
"""

PIPELINE = f"""
[runtime]
lease_seconds = 3

[[folders]]
id = "drafts"
path = "shared/drafts"

[[publish_targets]]
id = "channel"
kind = "telegram"
chat_id = {CHANNEL}

[[pipelines]]
id = "content"
folder = "drafts"
steps = [
  {{ id = "research", agent = "researcher", produces = "brief.md", instructions = "Dig." }},
  {{ id = "draft", agent = "writer", consumes = ["brief.md"], produces = "post.md" }},
  {{ id = "social", agent = "social", consumes = ["post.md"], produces = "thread.md" }},
  {{ id = "plan", agent = "marketer", consumes = ["post.md", "thread.md"], produces = "plan.md" }},
]
"""

BRIEF = "Brief: agents hand files forward through shared folders; sources A and B."
POST = "Handoffs between agents, explained: each step reads the last one's file."
THREAD = "1/ Handoffs between agents. 2/ Each step reads a file."
PLAN = "Plan: post on Monday, boost the thread on Tuesday."


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}, default=text("Noted.")) as server:
        yield server


def write(name: str, content: str, delay: float = 0.0) -> Reply:
    return tool_use("write_file", {"path": f"drafts:1/{name}", "content": content}, delay=delay)


def read(name: str) -> Reply:
    return tool_use("read_file", {"path": f"drafts:1/{name}"})


def done(name: str) -> Reply:
    return tool_use("set_status", {"status": "done", "note": f"Wrote drafts:1/{name} as asked."})


async def requests_of(anthropic: AnthropicServer, model: str, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while len(anthropic.requests_for(model=model)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(anthropic.requests_for(model=model))} requests to {model}")
        await asyncio.sleep(0.05)


def tool_result(anthropic: AnthropicServer, model: str, index: int) -> str:
    last = anthropic.requests_for(model=model)[index].body["messages"][-1]
    return str(last["content"][0]["content"])


async def start(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, *, real: bool = False
) -> Fleet:
    """The fleet in the test's process; `real`: a `fleet run` process (to kill -9)."""
    config = write_config(
        tmp_path, botapi.base_url, anthropic_base=anthropic.base_url, agents=AGENTS, extra=PIPELINE
    )
    fleet = FleetProcess(config) if real else InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    return fleet


def script_rest(anthropic: AnthropicServer) -> None:
    """The social and marketer steps (the marketer publishes the post)."""
    anthropic.script(read("post.md"), write("thread.md", THREAD), done("thread.md"), model=SOCIAL)
    anthropic.script(
        read("thread.md"),
        tool_use("publish", {"target": "channel", "file": "drafts:1/post.md"}),
        write("plan.md", PLAN),
        done("plan.md"),
        model=MARKETER,
    )


async def test_the_content_pipeline_runs_end_to_end_and_publishes_after_an_approve(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(write("brief.md", BRIEF), done("brief.md"), model=RESEARCHER)
    anthropic.script(read("brief.md"), write("post.md", POST), done("post.md"), model=WRITER)
    script_rest(anthropic)
    fleet = await start(tmp_path, botapi, anthropic)
    assert "Pipeline run #1 of content started" in await ask(
        botapi, OPERATOR, "/pipeline content Agents that hand off files"
    )

    await requests_of(anthropic, MARKETER, 4)
    # Each step saw the previous step's file.
    assert BRIEF in tool_result(anthropic, WRITER, 1)
    assert POST in tool_result(anthropic, SOCIAL, 1)
    assert THREAD in tool_result(anthropic, MARKETER, 1)
    assert "waits for approval #1" in tool_result(anthropic, MARKETER, 2)
    await wait_query(fleet.config, "SELECT status FROM pipeline_runs", [("done",)])
    assert query(
        fleet.config, "SELECT step, status, attempt FROM pipeline_steps ORDER BY position"
    ) == [
        ("research", "done", 1),
        ("draft", "done", 1),
        ("social", "done", 1),
        ("plan", "done", 1),
    ]
    assert (tmp_path / "shared" / "drafts" / "1" / "plan.md").read_text() == PLAN
    # The run's message was edited as it advanced, in the chat it was started from.
    [last] = await botapi.wait_for_call(
        "editMessageText",
        lambda c: (
            c.params["chat_id"] == OPERATOR
            and "Pipeline run #1</b> · content · done" in c.params["text"]
        ),
        timeout=30,
    )
    assert "✅ 4. plan · marketer · done" in last.params["text"]

    assert botapi.sent_texts(CHANNEL) == []  # nothing leaves before a person decides
    [card] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == FEED_CHAT and "Approval #1</b>" in c.params["text"],
        timeout=30,
    )
    assert "from drafts:1/post.md by marketer (step content #1 · plan)" in card.params["text"]
    assert await press(botapi, OWNER, "ap:y:1", card.result["message_id"]) == "Approved #1."
    [posted] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == CHANNEL, timeout=30
    )
    assert posted.params["text"] == POST
    await wait_query(fleet.config, "SELECT status FROM publications", [("published",)])

    shown = await ask(botapi, VIEWER, "/pipeline 1")
    assert "Pipeline run #1</b> · content · done" in shown
    assert "✅ 1. research · researcher · done" in shown and "→ brief.md" in shown
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def test_a_pipeline_killed_mid_step_resumes_at_that_step(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(write("brief.md", BRIEF), done("brief.md"), model=RESEARCHER)
    # The writer's second call hangs: the fleet is killed in the middle of the draft step.
    anthropic.script(read("brief.md"), write("post.md", POST, delay=60), model=WRITER)
    fleet = await start(tmp_path, botapi, anthropic, real=True)
    await ask(botapi, OPERATOR, "/pipeline content Resumable runs")
    await requests_of(anthropic, WRITER, 2)
    await fleet.kill()

    anthropic.script(read("brief.md"), write("post.md", POST), done("post.md"), model=WRITER)
    script_rest(anthropic)
    again = InProcessFleet(fleet.config)
    await again.start()
    await wait_query(again.config, "SELECT status FROM pipeline_runs", [("done",)], timeout=90)
    # The draft step resumed on its own subtask: no step ran twice.
    assert query(again.config, "SELECT step, attempt FROM pipeline_steps ORDER BY position") == [
        ("research", 1),
        ("draft", 1),
        ("social", 1),
        ("plan", 1),
    ]
    assert query(again.config, "SELECT count(*) FROM tasks WHERE parent_id = 1") == [(4,)]
    assert (tmp_path / "shared" / "drafts" / "1" / "post.md").read_text() == POST
    assert await again.stop() == 0


def test_a_pipeline_consuming_a_later_file_or_naming_an_unknown_agent_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:TEST-token")
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    bad = PIPELINE.replace('consumes = ["brief.md"]', 'consumes = ["thread.md"]').replace(
        'agent = "social"', 'agent = "socail"'
    )
    config = write_config(tmp_path, "http://127.0.0.1:9", agents=AGENTS, extra=bad)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    problems = [p.removeprefix(f"{config}: ") for p in info.value.problems]
    assert problems == [
        'pipelines.content.steps[1].consumes[0]: "thread.md" is not produced by an earlier step',
        'pipelines.content.steps[2].agent: unknown agent "socail"',
    ]


async def test_a_blocked_step_blocks_the_run_wakes_the_hub_and_is_retried(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(write("brief.md", BRIEF), done("brief.md"), model=RESEARCHER)
    anthropic.script(
        read("brief.md"),
        tool_use("set_status", {"status": "blocked", "note": "The brief names no sources."}),
        model=WRITER,
    )
    fleet = await start(tmp_path, botapi, anthropic)
    await ask(botapi, OPERATOR, "/pipeline content Sources matter")
    await wait_query(fleet.config, "SELECT status FROM pipeline_runs", [("blocked",)])
    assert query(fleet.config, "SELECT step, status FROM pipeline_steps WHERE position = 1") == [
        ("draft", "blocked")
    ]
    # The hub is woken with the reason.
    await requests_of(anthropic, "claude-sonnet-4-6", 1)
    woken = str(anthropic.requests_for(model="claude-sonnet-4-6")[-1].body["messages"])
    assert "The brief names no sources." in woken and "pipeline run #1" in woken
    [view] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == OPERATOR and "Pipeline run #1</b>" in c.params["text"],
        timeout=30,
    )
    [edit] = await botapi.wait_for_call(
        "editMessageText",
        lambda c: c.params["chat_id"] == OPERATOR and "content · blocked" in c.params["text"],
        timeout=30,
    )
    [row] = edit.params["reply_markup"]["inline_keyboard"]
    assert [(b["text"], b["callback_data"]) for b in row] == [
        ("Retry step", "pl:r:1"),
        ("Cancel", "pl:c:1"),
    ]
    message_id = view.result["message_id"]
    refused = await press(botapi, VIEWER, "pl:r:1", message_id, OPERATOR)
    assert refused == "This action needs the operator role; you are viewer."

    anthropic.script(read("brief.md"), write("post.md", POST), done("post.md"), model=WRITER)
    script_rest(anthropic)
    retried = await press(botapi, OPERATOR, "pl:r:1", message_id, OPERATOR)
    assert retried == "Pipeline run #1: The step starts again."
    await wait_query(fleet.config, "SELECT status FROM pipeline_runs", [("done",)], timeout=60)
    assert query(fleet.config, "SELECT step, attempt FROM pipeline_steps ORDER BY position") == [
        ("research", 1),
        ("draft", 2),
        ("social", 1),
        ("plan", 1),
    ]
    again = await press(botapi, OPERATOR, "pl:c:1", message_id, OPERATOR)
    assert again == "Pipeline run #1 is done already."
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def test_the_hub_starts_a_pipeline_with_its_tool_and_the_run_shows_in_activity(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    anthropic.script(
        tool_use("start_pipeline", {"pipeline": "content", "topic": "Weekly digest"}),
        text("Started."),
        model="claude-sonnet-4-6",
    )
    fleet = await start(tmp_path, botapi, anthropic)
    botapi.push_message(OPERATOR, "/assign hub Run the content pipeline on the weekly digest")
    await requests_of(anthropic, RESEARCHER, 1)  # the first step's agent is woken
    assert "pipeline run #1 of content started" in tool_result(anthropic, "claude-sonnet-4-6", 1)
    assert query(fleet.config, "SELECT pipeline, topic, requested_by FROM pipeline_runs") == [
        ("content", "Weekly digest", "agent:hub")
    ]
    prompt = str(anthropic.requests_for(model=RESEARCHER)[0].body["messages"][0]["content"])
    assert "Pipeline content, step research. Topic: Weekly digest" in prompt
    assert "Write drafts:1/brief.md with write_file" in prompt
    [view] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == FEED_CHAT and "Pipeline run #1</b>" in c.params["text"],
        timeout=30,
    )
    assert view.params["message_thread_id"] == ACTIVITY_TOPIC
    assert await fleet.stop() == 0


async def test_the_content_pipeline_runs_on_postgres(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    require_pg_url()
    anthropic.script(write("brief.md", BRIEF), done("brief.md"), model=RESEARCHER)
    anthropic.script(read("brief.md"), write("post.md", POST), done("post.md"), model=WRITER)
    script_rest(anthropic)
    async with temporary_database("pipeline") as url:
        config = write_config(
            tmp_path,
            botapi.base_url,
            anthropic_base=anthropic.base_url,
            agents=AGENTS,
            extra=PIPELINE,
            database_url=url,
        )
        fleet = InProcessFleet(config)
        await fleet.start()
        await botapi.wait_until_polling(timeout=30)
        await ask(botapi, OPERATOR, "/pipeline content On PostgreSQL")
        await botapi.wait_for_call(
            "editMessageText",
            lambda c: (
                c.params["chat_id"] == OPERATOR
                and "Pipeline run #1</b> · content · done" in c.params["text"]
            ),
            timeout=60,
        )
        assert THREAD in tool_result(anthropic, MARKETER, 1)
        assert (tmp_path / "shared" / "drafts" / "1" / "plan.md").read_text() == PLAN
        assert await fleet.stop() == 0
        assert "Traceback" not in fleet.log
