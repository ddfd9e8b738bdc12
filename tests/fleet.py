"""Runs the real `fleet run` process against the local Bot API server, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from storage import approvals
from storage.approval_policy import ApprovalPolicy
from storage.models import utcnow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from storage.models import Approval
    from tests.botapi_server import BotAPIServer

TOKEN = "123456:TEST-token"
OWNER = 1001
OPERATOR = 1002
VIEWER = 1003
STRANGER = 6666
FEED_CHAT = -100500
ALERTS_TOPIC = 3

ACTIVITY_TOPIC = 5
ANTHROPIC_KEY = "sk-ant-test-primary"

FLEET = Path(sys.executable).parent / "fleet"

DEFAULT_AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
heartbeat = "30m"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-sonnet-4-6"
authority = ["comment", "request_deploy"]
"""


def write_config(
    folder: Path,
    api_base: str,
    *,
    polling_timeout: int = 2,
    extra: str = "",
    database_url: str | None = None,
    anthropic_base: str = "http://127.0.0.1:9",
    agents: str = DEFAULT_AGENTS,
    profiles: dict[str, str] | None = None,
) -> Path:
    """A small fleet: three people, one feed group with topics, a hub and a specialist.
    `agents` replaces the [[agents]] tables; `extra` is appended (e.g. a [runtime] table);
    `profiles` adds key profiles next to `primary` (name -> literal api_key)."""
    for agent in re.findall(r'^id = "([a-z0-9_-]+)"', agents, re.MULTILINE):
        (folder / "workspaces" / agent).mkdir(parents=True, exist_ok=True)
    more_profiles = "".join(
        f'[anthropic.profiles.{name}]\napi_key = "{key}"\n'
        for name, key in (profiles or {}).items()
    )
    path = folder / "fleet.toml"
    path.write_text(
        f"""
timezone = "Europe/Amsterdam"

[telegram]
token = "${{TELEGRAM_BOT_TOKEN}}"
api_base = "{api_base}"
polling_timeout = {polling_timeout}

[database]
url = "{database_url or f"sqlite+aiosqlite:///{folder / 'fleet.db'}"}"

[[people]]
telegram_id = {OWNER}
name = "Ana"
role = "owner"

[[people]]
telegram_id = {OPERATOR}
name = "Ben"
role = "operator"

[[people]]
telegram_id = {VIEWER}
name = "Cy"
role = "viewer"

[feeds]
alerts = {{ chat_id = {FEED_CHAT}, topic = {ALERTS_TOPIC} }}
approvals = {{ chat_id = {FEED_CHAT} }}
activity = {{ chat_id = {FEED_CHAT}, topic = {ACTIVITY_TOPIC} }}

[anthropic]
base_url = "{anthropic_base}"
[anthropic.profiles.primary]
api_key = "${{ANTHROPIC_API_KEY}}"
{more_profiles}
{agents}
{extra}
""",
        encoding="utf-8",
    )
    return path


def fleet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TELEGRAM_"))}
    env["TELEGRAM_BOT_TOKEN"] = TOKEN
    env["ANTHROPIC_API_KEY"] = ANTHROPIC_KEY
    env.update(extra)
    return env


class FleetProcess:
    """One `fleet run` subprocess; its log goes to a file the test can read. Every process
    still alive when its test ends is killed (see `kill_leftovers`)."""

    started: ClassVar[list[FleetProcess]] = []

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env or fleet_env()
        self.log_path = config.parent / f"fleet-{id(self)}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            str(FLEET),
            "run",
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        FleetProcess.started.append(self)

    @classmethod
    async def kill_leftovers(cls) -> None:
        for process in cls.started:
            if process.proc is not None and process.proc.returncode is None:
                process.proc.kill()
                await process.proc.wait()
        cls.started.clear()

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_log(self, needle: str, timeout: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while needle not in self.log:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"fleet exited {self.proc.returncode}:\n{self.log}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{needle!r} not logged in {timeout} s:\n{self.log}")
            await asyncio.sleep(0.05)

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.wait(timeout)

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `fleet <args>`; returns the exit code and the combined output."""
    proc = await asyncio.create_subprocess_exec(
        str(FLEET),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env or fleet_env(),
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def query(config: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the fleet's SQLite database directly, as an operator would."""
    with sqlite3.connect(config.parent / "fleet.db") as db:
        return db.execute(sql, params).fetchall()


async def execute(config: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """`query` in a thread: for writes while a fleet runs in the test's process, whose open
    transaction needs the event loop (which a blocking write would hold) to end."""
    return await asyncio.to_thread(query, config, sql, *params)


async def wait_query(
    config: Path, sql: str, expected: list[tuple[Any, ...]], timeout: float = 15.0
) -> None:
    """Wait until `sql` returns `expected` (the process writes after Telegram answers)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (rows := query(config, sql)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{sql} gave {rows}, expected {expected}")
        await asyncio.sleep(0.05)


async def press(
    botapi: BotAPIServer, user: int, data: str, message_id: int, chat_id: int = FEED_CHAT
) -> str:
    """Press a button (callback `data`) on a message; returns the answerCallbackQuery text."""
    after = botapi.mark()
    query_id = botapi.push_callback(user, data, message_id=message_id, chat_id=chat_id)
    [answer] = await botapi.wait_for_call(
        "answerCallbackQuery",
        lambda c: c.params["callback_query_id"] == query_id,
        after=after,
        timeout=15,
    )
    return str(answer.params.get("text", ""))


async def ask(botapi: BotAPIServer, user: int, text: str, chat_id: int | None = None) -> str:
    """Send `text` as `user` (in their private chat, or `chat_id`); returns the bot's first
    message to that chat afterwards."""
    after = botapi.mark()
    botapi.push_message(user, text, chat_id=chat_id)
    where = chat_id or user
    [sent] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == where, after=after, timeout=15
    )
    return str(sent.params["text"])


async def request_action(
    session: AsyncSession,
    policy: ApprovalPolicy,
    summary: str,
    *,
    on_timeout: str | None = None,
    **overrides: Any,
) -> Approval:
    """An action approval asked for by `agent:coder`, under `policy`; `overrides` replace any
    other argument of `approvals.request`. With `on_timeout`, the deadline is two hours
    away."""
    if on_timeout is not None:
        overrides = {
            "deadline": utcnow() + timedelta(hours=2),
            "on_timeout": on_timeout,
            **overrides,
        }
    arguments: dict[str, Any] = {
        "policy": policy,
        "kind": "action",
        "payload": {"summary": summary},
        "requested_by": "agent:coder",
        **overrides,
    }
    return await approvals.request(session, **arguments)
