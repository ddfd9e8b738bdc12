"""`[[agents]] tools`: an allow-list of tool names, within what the agent's authority allows,
applied where an agent's tools are offered and where a call is executed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from agents import tools
from agents.org import OrgChart
from agents.tools_base import ToolContext
from bot.config import AgentConfig, load_config
from storage import tasks
from storage.db import Database
from storage.models import TaskEvent
from tests.fleet import ANTHROPIC_KEY, TOKEN, write_config

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-sonnet-4-6"
authority = ["comment"]
tools = ["set_status", "message_hub", "request_deploy"]
"""


def offered(**keys: object) -> list[str]:
    agent = AgentConfig.model_validate({"id": "coder", "workspace": "ws", "model": "m", **keys})
    return [tool["name"] for tool in tools.definitions(agent)]


def test_without_a_list_every_tool_the_authority_allows_is_offered() -> None:
    everything = offered(authority=["comment"])
    assert "comment" in everything and "set_status" in everything
    assert "request_deploy" not in everything


def test_a_list_offers_only_its_tools_and_only_those_the_authority_allows() -> None:
    listed = offered(authority=["comment"], tools=["set_status", "comment", "request_deploy"])
    assert listed == ["comment", "set_status"]


async def test_a_call_to_a_tool_left_out_is_refused_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", agents=AGENTS))
    db = Database(config.database.url)
    try:
        await db.migrate()
        async with db.claim() as session:
            task = await tasks.create(
                session, title="Fix it", assignee="coder", creator="agent:hub", max_retries=1
            )
        org = OrgChart(config)
        coder = org.get("coder")
        assert coder is not None
        ctx = ToolContext(
            config=config,
            org=org,
            db=db,
            agent=coder,
            run_id=1,
            task_id=task.id,
            workspace=tmp_path / "workspaces" / "coder",
            today=date(2026, 11, 25),
            now=datetime.now(UTC),
        )
        result = await tools.execute(ctx, "comment", {"text": "done, I think"})
        assert not result.ok
        assert result.content == "refused: comment is not among your tools"
        result = await tools.execute(ctx, "request_deploy", {"target": "x", "reason": "now"})
        assert result.content == (
            "refused: request_deploy needs the request_deploy authority, which you do not have"
        )
        async with db.session() as session:
            bodies = (await session.execute(select(TaskEvent.body))).scalars().all()
        assert "comment: refused: comment is not among your tools" in bodies
    finally:
        await db.dispose()
