"""Shared model state with a real `fleet run` on PostgreSQL: a 429 seen by another node (this
test process, with its own engine and `Gateway`, as a second machine would have) keeps the
fleet's runs off that key until the cooldown ends.

A second `fleet run` on one database needs the standby mode of issue 16 (branch `leader`);
until then the other node is this process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from agents.gateway import Gateway
from bot.config import load_config
from storage.db import Database
from storage.models import Task, Usage
from tests.anthropic_server import AnthropicServer, error, text, tool_use
from tests.botapi_server import BotAPIServer
from tests.fleet import ANTHROPIC_KEY, OPERATOR, TOKEN, FleetProcess, write_config
from tests.pg import require_pg_url, temporary_database

MODEL = "claude-sonnet-4-6"
SECONDARY_KEY = "sk-ant-test-secondary-9a8b7c"
DONE = tool_use("set_status", {"status": "done", "note": "Fixed the typo and checked the page."})

AGENTS = f"""
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "{MODEL}"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "{MODEL}"
profiles = ["primary", "secondary"]
authority = ["comment"]
"""


async def _wait_done(db: Database, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with db.session() as session:
            statuses = list((await session.execute(select(Task.status))).scalars())
        if statuses == ["done"]:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"tasks: {statuses}, expected one done")
        await asyncio.sleep(0.1)


async def test_e2e_a_429_seen_by_another_node_keeps_fleet_run_off_that_key(
    tmp_path: Path, botapi: BotAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_pg_url()
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    async with (
        AnthropicServer(valid_keys={ANTHROPIC_KEY, SECONDARY_KEY}) as anthropic,
        temporary_database("e2e_model_state") as url,
    ):
        anthropic.script(error(429, retry_after=120), api_key=ANTHROPIC_KEY)
        anthropic.script(text("ok"), DONE, api_key=SECONDARY_KEY)
        path = write_config(
            tmp_path,
            botapi.base_url,
            database_url=url,
            anthropic_base=anthropic.base_url,
            agents=AGENTS,
            profiles={"secondary": SECONDARY_KEY},
        )
        fleet = FleetProcess(path)
        await fleet.start()
        await botapi.wait_until_polling(timeout=30)

        # The other node: its call meets the 429 on the primary key and moves on.
        config = load_config(path)
        db = Database(url)
        gateway = Gateway(config, db)
        try:
            coder = next(a for a in config.agents if a.id == "coder")
            reply = await gateway.create(
                coder,
                run_id=None,
                purpose="turn",
                system="You are coder.",
                messages=[{"role": "user", "content": "hello"}],
            )
            assert reply.profile == "secondary"
            await gateway.flush()

            # The fleet's run goes straight to the secondary key: it never calls the primary.
            botapi.push_message(OPERATOR, "/assign coder Fix the typo on the login page")
            await _wait_done(db)
            assert [r.api_key for r in anthropic.requests] == [
                ANTHROPIC_KEY,
                SECONDARY_KEY,
                SECONDARY_KEY,
            ]
            async with db.session() as session:
                rows = (await session.execute(select(Usage.profile, Usage.status))).all()
            assert sorted(rows) == [("primary", "error"), ("secondary", "ok"), ("secondary", "ok")]
        finally:
            await gateway.close()
            await db.dispose()
        assert await fleet.stop() == 0
        assert "Traceback" not in fleet.log, fleet.log
        for secret in (ANTHROPIC_KEY, SECONDARY_KEY):
            assert secret not in fleet.log
