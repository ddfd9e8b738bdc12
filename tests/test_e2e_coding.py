"""Coding agents end to end: the real `fleet run`, the local Bot API server, fake `claude` and
`codex` executables on PATH (tests/bin) and a local bare git repository as the remote."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.anthropic_server import AnthropicServer
from tests.botapi_server import BotAPIServer
from tests.fleet import (
    ACTIVITY_TOPIC,
    ANTHROPIC_KEY,
    OPERATOR,
    FleetProcess,
    ask,
    fleet_env,
    query,
    wait_query,
    write_config,
)
from tests.test_process_adapter import BIN, make_remote, remote_log

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "dev"
reports_to = "hub"
workspace = "workspaces/dev"
model = "claude-sonnet-4-6"
adapter = "process"
repo = "REPO"
clis = [
  { id = "claude", argv = ["claude", "-p", "--output-format", "json"] },
  { id = "codex", argv = ["codex", "exec", "--json"], model = "claude-haiku-4-5" },
]
"""


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}) as server:
        yield server


async def start(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, agents: str
) -> FleetProcess:
    config = write_config(
        tmp_path, botapi.base_url, anthropic_base=anthropic.base_url, agents=agents
    )
    fleet = FleetProcess(config, env=fleet_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    return fleet


async def test_an_assigned_task_ends_with_a_commit_a_comment_and_its_cost_in_costs(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer
) -> None:
    remote = make_remote(tmp_path)
    fleet = await start(tmp_path, botapi, anthropic, AGENTS.replace("REPO", str(remote)))
    botapi.push_message(OPERATOR, "/assign dev Add the greeting")
    await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 1", [("done",)], 60)
    branch = "fleet/1-add-the-greeting"
    assert remote_log(remote, branch)[0].startswith("claude: work on the task")
    [(comment,)] = query(
        fleet.config, "SELECT body FROM task_events WHERE kind = 'comment' AND task_id = 1"
    )
    assert comment.startswith("Implemented the task and committed it (claude).")
    assert query(fleet.config, "SELECT model, cost_usd, purpose FROM usage") == [
        ("claude", 0.0421, "coding")
    ]
    [report] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ACTIVITY_TOPIC and branch in c.params["text"]
        ),
    )
    assert "claude on fleet/1-add-the-greeting: 1 commit" in report.params["text"]
    assert "1 file changed" in report.params["text"] and "$0.0421" in report.params["text"]
    costs = await ask(botapi, OPERATOR, "/costs")
    assert "dev" in costs and "0.04" in costs
    assert anthropic.requests == []  # no model was called: the CLI did the work
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log
