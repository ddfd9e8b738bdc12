"""Coding agents end to end: the real `fleet run`, the local Bot API server, fake `claude` and
`codex` executables on PATH (tests/bin) and a local bare git repository as the remote."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import load_config
from storage import tasks
from storage import usage as spend
from storage.db import Database
from storage.models import utcnow
from tests.anthropic_server import AnthropicServer
from tests.botapi_server import BotAPIServer
from tests.fleet import (
    ACTIVITY_TOPIC,
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    OPERATOR,
    VIEWER,
    FleetProcess,
    ask,
    fleet_env,
    press,
    query,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet
from tests.test_process_adapter import BIN, alive, make_remote, remote_log

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
) -> InProcessFleet:
    config = write_config(
        tmp_path, botapi.base_url, anthropic_base=anthropic.base_url, agents=agents
    )
    fleet = InProcessFleet(config, env=fleet_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))
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
    await wait_query(
        fleet.config,
        "SELECT model, cost_usd, purpose FROM usage",
        [("claude", 0.0421, "coding")],
    )
    [running] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ACTIVITY_TOPIC
            and "is coding task #1" in c.params["text"]
        ),
    )
    assert f"<code>{branch}</code> (claude, codex; run 1)" in running.params["text"]
    assert running.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "⏹ Stop"
    [report] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ACTIVITY_TOPIC
            and f"{branch}: 1 commit" in c.params["text"]
        ),
    )
    # When the run ended, the running line lost its Stop button.
    [ended] = await botapi.wait_for_call(
        "editMessageText", lambda c: c.params["message_id"] == running.result["message_id"]
    )
    assert ended.params["text"].startswith("✅ <b>dev</b> coded task #1 (run 1): succeeded")
    assert "reply_markup" not in ended.params or not ended.params["reply_markup"]
    assert "claude on fleet/1-add-the-greeting: 1 commit" in report.params["text"]
    assert "1 file changed" in report.params["text"] and "$0.0421" in report.params["text"]
    costs = await ask(botapi, OPERATOR, "/costs")
    assert "dev" in costs and "0.04" in costs
    assert anthropic.requests == []  # no model was called: the CLI did the work
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def seed(
    tmp_path: Path, botapi: BotAPIServer, agents: str, specs: list[tuple[str, str, str, int]]
) -> Path:
    """Write the config and create tasks (assignee, title, body, priority) before the fleet
    starts, through storage (the commands give no priority)."""
    path = write_config(tmp_path, botapi.base_url, agents=agents)
    config = load_config(path)
    db = Database(config.database.url)
    await db.migrate()
    for assignee, title, body, priority in specs:
        async with db.claim() as session:
            await tasks.create(
                session,
                title=title,
                body=body,
                assignee=assignee,
                creator=f"person:{OPERATOR}",
                max_retries=3,
                priority=priority,
            )
    await db.dispose()
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the test's own load_config (the fleet gets fleet_env())."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)


async def test_stop_during_a_run_kills_the_cli_and_ends_it_cancelled(
    tmp_path: Path, botapi: BotAPIServer, env: None
) -> None:
    remote = make_remote(tmp_path)
    agents = AGENTS.replace("REPO", str(remote)).replace(
        'adapter = "process"', 'adapter = "process"\ntimeout = "10m"'
    )
    path = await seed(tmp_path, botapi, agents, [("dev", "Hang around", "FAKE:hang", 2)])
    # A real process: the stale press below must arrive before the activity line loses its
    # Stop button, which the subprocess's slower start of the edit makes likely.
    fleet = FleetProcess(path, env=fleet_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))
    await fleet.start()
    [line] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ACTIVITY_TOPIC
            and "is coding task #1" in c.params["text"]
        ),
        timeout=60,
    )
    [[stop]] = line.params["reply_markup"]["inline_keyboard"]
    assert stop["text"] == "⏹ Stop"
    pids_file = tmp_path / "workspaces" / "dev" / "checkouts" / "1" / ".fake-pids"
    for _ in range(600):
        if pids_file.exists() and pids_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(alive(pid) for pid in pids)
    answer = await press(botapi, OPERATOR, stop["callback_data"], line.result["message_id"])
    assert answer.startswith("Stopping run")
    await wait_query(
        fleet.config,
        "SELECT status FROM runs WHERE task_id = 1 AND status != 'skipped'",
        [("cancelled",)],
        30,
    )
    assert not any(alive(pid) for pid in pids)  # the CLI and its child: gone (ps)
    [(status, reason)] = query(fleet.config, "SELECT status, blocked_reason FROM tasks")
    assert status == "blocked" and reason.startswith("stopped by Ben; the checkout is kept.")
    assert (tmp_path / "workspaces" / "dev" / "checkouts" / "1" / ".git").exists()
    # A viewer's press is refused; a stale one says it is not running.
    assert "not running" in await press(
        botapi, OPERATOR, stop["callback_data"], line.result["message_id"]
    )
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


QUEUED = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"

[[agents]]
id = "dev"
reports_to = "hub"
workspace = "workspaces/dev"
model = "claude-sonnet-4-6"
adapter = "process"
repo = "REPO"
clis = [{ id = "claude", argv = ["claude", "-p", "--output-format", "json"] }]
queue = { cron = "CRON", max_tasks = 1 }

[[agents]]
id = "broke"
reports_to = "hub"
workspace = "workspaces/broke"
model = "claude-sonnet-4-6"
adapter = "process"
repo = "REPO"
budget_usd_month = 1
clis = [{ id = "claude", argv = ["claude", "-p", "--output-format", "json"] }]
queue = { cron = "CRON", max_tasks = 1 }
"""


async def test_the_nightly_queue_takes_the_most_urgent_task_and_none_when_out_of_budget(
    tmp_path: Path, botapi: BotAPIServer, env: None
) -> None:
    remote = make_remote(tmp_path)
    # The next minute at least 20 s away, in the fleet's timezone.
    at = datetime.now(ZoneInfo("Europe/Amsterdam")) + timedelta(seconds=80)
    cron = f"{at.minute} {at.hour} * * *"
    agents = QUEUED.replace("REPO", str(remote)).replace("CRON", cron)
    path = await seed(
        tmp_path,
        botapi,
        agents,
        [
            ("dev", "Low chore", "", tasks.PRIORITIES["low"]),
            ("dev", "Urgent fix", "", tasks.PRIORITIES["urgent"]),
            ("dev", "Another urgent", "", tasks.PRIORITIES["urgent"]),
            ("broke", "Anything", "", tasks.PRIORITIES["urgent"]),
        ],
    )
    config = load_config(path)
    db = Database(config.database.url)
    async with db.claim() as session:
        await spend.record(
            session,
            [
                {
                    "agent_id": "broke",
                    "run_id": None,
                    "purpose": "coding",
                    "model": "claude",
                    "profile": "cli:claude",
                    "input_tokens": 1,
                    "output_tokens": 1,
                    "cost_usd": Decimal("1.50"),
                    "created_at": utcnow(),
                }
            ],
        )
    await db.dispose()
    fleet = InProcessFleet(path, env=fleet_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    # Assigned todo tasks wait for the night: their runs are skipped, no CLI starts.
    await wait_query(
        fleet.config,
        "SELECT count(*) FROM runs WHERE outcome = 'waits for the nightly queue'",
        [(2,)],
        30,
    )
    after = botapi.mark()
    botapi.push_message(OPERATOR, "/queue dev")
    [shown] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OPERATOR, after=after
    )
    listing = shown.params["text"]
    assert (
        listing.index("#2 Urgent fix")
        < listing.index("#3 Another urgent")
        < listing.index("#1 Low chore")
    )
    buttons = [b for row in shown.params["reply_markup"]["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons[:2]] == ["⬆ #2", "✖ #2 out"]
    # Operators reorder: #3 moves ahead of #2 (the queue will take it), #1 leaves the queue.
    message_id = shown.result["message_id"]
    assert await press(botapi, OPERATOR, "cq:u:dev:3", message_id, OPERATOR) == (
        "Task #3 moved up."
    )
    assert "first already" in await press(botapi, OPERATOR, "cq:u:dev:3", message_id, OPERATOR)
    assert "backlog" in await press(botapi, OPERATOR, "cq:o:dev:1", message_id, OPERATOR)
    assert "not on this message" in await press(botapi, OPERATOR, "cq:zz", message_id, OPERATOR)
    viewer = await ask(botapi, VIEWER, "/queue dev")
    assert viewer.index("#3 Another urgent") < viewer.index("#2 Urgent fix")
    assert "Low chore" not in viewer
    await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 3", [("done",)], 150)
    assert query(fleet.config, "SELECT id, status FROM tasks ORDER BY id") == [
        (1, "backlog"),
        (2, "todo"),
        (3, "done"),
        (4, "todo"),
    ]
    [said] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ALERTS_TOPIC
            and "nightly queue of <b>broke</b>" in c.params["text"]
        ),
    )
    assert "took no task: its monthly budget is spent ($1.50 of $1.00)" in said.params["text"]
    said_all = [
        c for c in botapi.calls_of("sendMessage") if "nightly queue of" in c.params["text"]
    ]
    assert len(said_all) == 1
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def test_a_limited_cli_hands_over_in_the_same_run_and_all_limited_defers(
    tmp_path: Path, botapi: BotAPIServer, env: None
) -> None:
    remote = make_remote(tmp_path)
    agents = AGENTS.replace("REPO", str(remote))
    path = await seed(
        tmp_path,
        botapi,
        agents,
        [
            ("dev", "First", "FAKE:limit-claude", tasks.PRIORITIES["urgent"]),
            ("dev", "Second", "FAKE:limit-codex", tasks.PRIORITIES["normal"]),
        ],
    )
    fleet = InProcessFleet(path, env=fleet_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"))
    await fleet.start()
    await wait_query(fleet.config, "SELECT status FROM tasks WHERE id = 1", [("done",)], 60)
    done = "SELECT outcome FROM runs WHERE task_id = 1 AND status = 'succeeded'"
    await wait_query(fleet.config, f"SELECT count(*) FROM ({done}) AS d", [(1,)])
    [(outcome,)] = query(fleet.config, done)
    assert outcome.startswith("codex on fleet/1-first: 1 commit")  # the same run, at once
    assert remote_log(remote, "fleet/1-first")[0].startswith("codex: work on the task")
    # Claude is still cooling down and Codex is limited now: the second task's run is
    # deferred, not failed, and the task waits in progress.
    await wait_query(
        fleet.config,
        "SELECT count(*) FROM runs WHERE task_id = 2 AND status = 'skipped' "
        "AND outcome LIKE 'deferred until %every coding CLI is cooling down%'",
        [(1,)],
        60,
    )
    assert query(fleet.config, "SELECT status FROM tasks WHERE id = 2") == [("in_progress",)]
    assert query(fleet.config, "SELECT count(*) FROM runs WHERE status = 'failed'") == [(0,)]
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log
