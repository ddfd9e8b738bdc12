"""The one configuration file: loading, secret references and validation.

A config is read once and validated completely: every problem is reported in one pass, with
the file, the key path (list entries by id) and what is wrong in a plain sentence; the
cross-checks such as duplicate ids run on a repaired copy next to the key errors
(bot.config_problems). Secret values never appear in an error: a problem with a secret names
the environment variable or the file it was meant to come from. What a fleet needs beyond a
valid file (people, keys, no placeholders) is bot.config_check's.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)

from agents.catalog import authorities, tool_names
from bot.config_problems import (
    describe,
    key_path,
    name_items,
    path_of,
    repair,
    said_already,
    under,
)
from bot.cron import crontab_trigger

DEFAULT_CONFIG_PATH = Path("fleet.toml")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$", re.ASCII)
# Milliseconds per unit: "ms" lets a test (or an impatient setup) say "200ms".
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
# The longest any duration may be: beyond it a typo ("99999999999d") would overflow timedelta
# and the scheduler; keys with a tighter bound say so with `at_most`.
MAX_DURATION = "365d"


class ConfigError(Exception):
    """The config cannot be used. `problems` holds one line per problem, each naming the file
    and the key path; none contains a secret value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(text: str, *, at_most: str = MAX_DURATION) -> timedelta:
    """Parse "45s", "10m", "2h", "1d" or "200ms", no longer than `at_most`; ValueError says
    why not."""
    match = _DURATION.match(text)
    if not match or not match.group(1).strip("0"):
        raise ValueError(f'"{text}" is not a duration like "45s", "10m", "2h" or "1d"')
    digits, unit = match.group(1).lstrip("0"), match.group(2)
    limit = _duration_ms(at_most)
    # Compared before any timedelta is built: a long digit string would overflow it.
    if len(digits) > 15 or int(digits) * _DURATION_UNITS[unit] > limit:
        raise ValueError(f'"{text}" is too long: must be at most {at_most}')
    return timedelta(milliseconds=int(digits) * _DURATION_UNITS[unit])


def _duration_ms(text: str) -> int:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"bad duration bound {text!r}")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def at_most(limit: str) -> AfterValidator:
    """The bound of a duration key: `Annotated[str, at_most("1h")]`."""
    _duration_ms(limit)  # a typo in a bound fails at import, not at the first config

    def check(text: str) -> str:
        parse_duration(text, at_most=limit)
        return text

    return AfterValidator(check)


# A duration kept as written ("10m"), between 1s and MAX_DURATION; read it with
# `parse_duration`. A key with a tighter bound is `Annotated[str, at_most("1d")]`.
Duration = Annotated[str, at_most(MAX_DURATION)]

# A node's name: the host name by default, so it must accept what host names look like.
NODE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


def _default_node_name() -> str:
    name = socket.gethostname().split(".")[0] or "node"
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:63]


def parse_latency(text: str) -> float:
    """Parse "500ms" or a duration like "2s" (at most 1h) into seconds."""
    stripped = text.strip()
    number = stripped[:-2].strip()
    if stripped.endswith("ms") and number.isascii() and number.isdigit():
        if len(number) > 7 or int(number) > 3_600_000:
            raise ValueError(f'"{text}" is too long: must be at most 1h')
        if int(number) > 0:
            return int(number) / 1000
    try:
        return parse_duration(stripped, at_most="1h").total_seconds()
    except ValueError as err:
        if "too long" in str(err):
            raise
        raise ValueError(f'"{text}" is not a latency like "500ms" or "2s"') from None


class Role(StrEnum):
    """What a person may do. Higher roles include everything lower roles may do."""

    viewer = "viewer"
    operator = "operator"
    owner = "owner"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_ROLE_RANK = {Role.viewer: 0, Role.operator: 1, Role.owner: 2}


class _Section(BaseModel):
    # No inf or nan: a price or a grace period of `inf` passes `ge=0` and breaks arithmetic.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _non_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError('is empty: write "${VARIABLE}" or use <key>_file to give the secret')
    return value


# A secret that must hold something ("" is a mistake, not "no key").
Secret = Annotated[SecretStr, AfterValidator(_non_empty_secret)]

# "<bot id>:<secret>"; the secret part is ~35 URL-safe characters from @BotFather (a local
# Bot API server accepts shorter ones, so the length is checked by check-config only).
BOT_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,100}$", re.ASCII)


class TelegramConfig(_Section):
    token: SecretStr
    api_base: str = ""
    polling_timeout: int = Field(default=30, ge=1, le=50)
    # Telegram's overall limit for bots; raise it only against a server that allows more.
    messages_per_second: int = Field(default=30, ge=1, le=100_000)

    @field_validator("token")
    @classmethod
    def _bot_token(cls, value: SecretStr) -> SecretStr:
        # The messages never quote the value: it may be a real token with a typo.
        token = value.get_secret_value()
        if not token.strip():
            raise ValueError(
                'is empty: write token = "${TELEGRAM_BOT_TOKEN}" and set that variable'
            )
        if "${" in token:
            raise ValueError(
                'holds "${...}" without a variable name: write "${TELEGRAM_BOT_TOKEN}"'
            )
        if not BOT_TOKEN.match(token):
            raise ValueError(
                "is not a bot token: @BotFather gives one like 123456789:AAH... "
                "(the bot's id, a colon, then about 35 letters, digits, - and _)"
            )
        return value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or an http(s):// URL of a Bot API server")
        return value.rstrip("/")


class DatabaseConfig(_Section):
    url: str = "sqlite+aiosqlite:///fleet.db"

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
                "(the async drivers fleetbridge uses)"
            )
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


class Person(_Section):
    telegram_id: int
    name: str = Field(min_length=1)
    role: Role


class Feed(_Section):
    chat_id: int
    topic: int | None = None


class Feeds(_Section):
    alerts: Feed | None = None
    triage: Feed | None = None
    approvals: Feed | None = None
    activity: Feed | None = None

    def items(self) -> Iterator[tuple[str, Feed]]:
        for name in ("alerts", "triage", "approvals", "activity"):
            feed: Feed | None = getattr(self, name)
            if feed is not None:
                yield name, feed


class AnthropicProfile(_Section):
    api_key: Secret


class AnthropicConfig(_Section):
    base_url: str = ""
    profiles: dict[str, AnthropicProfile] = Field(default_factory=dict)


class Price(_Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0)  # 5-minute cache; default 1.25x input
    cache_write_1h: float | None = Field(default=None, ge=0)  # 1-hour cache; default 2x input
    cache_read: float | None = Field(default=None, ge=0)  # default 0.1x input


FolderMode = Literal["rw", "ro"]
# The root name of an agent's own workspace in file paths ("workspace:notes.md").
WORKSPACE_ROOT = "workspace"


class FolderConfig(_Section):
    """A shared folder agents may be granted as a file root (a handoff folder)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    path: Path


class ExecPolicy(_Section):
    """Which commands an agent's run_command may run: glob patterns over the argv joined by
    spaces. deny wins, then allow, then ask; a command no pattern names is asked."""

    allow: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)  # variables passed on besides PATH, HOME, LANG
    max_timeout: Duration = "10m"

    @field_validator("env")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _env_names(value)


def _env_names(value: list[str]) -> list[str]:
    for name in value:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError(f'"{name}" is not an environment variable name')
        if name.startswith(("TELEGRAM_", "ANTHROPIC_")) or name == "CREDENTIALS_DIRECTORY":
            raise ValueError(f"{name} holds the fleet's own secrets; commands never get it")
    return value


class CodingCli(_Section):
    """A coding CLI a process agent runs (Claude Code, Codex): its argv, the variables holding
    its own keys (passed on besides PATH, HOME, LANG), and the model its tokens are priced
    as when it reports tokens but no cost (Codex)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    argv: list[str] = Field(min_length=1)
    env: list[str] = Field(default_factory=list)
    model: str | None = None

    @field_validator("env")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _env_names(value)


class QueueConfig(_Section):
    """The nightly coding queue: at `cron`, up to `max_tasks` of the agent's todo tasks run."""

    cron: str = "0 2 * * *"
    max_tasks: int = Field(default=1, ge=1, le=20)


class AgentConfig(_Section):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    title: str = ""
    hub: bool = False
    reports_to: str | None = None
    workspace: Path
    model: str
    fallbacks: list[str] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=lambda: ["primary"])
    heartbeat: Annotated[str, at_most("30d")] | None = None
    cron: str | None = None
    quiet_hours: str | None = None
    budget_usd_month: float | None = Field(default=None, ge=0)
    authority: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    max_retries: int = Field(default=3, ge=0)
    folders: dict[str, FolderMode] = Field(default_factory=dict)  # folder id -> rw | ro
    max_file_kb: int = Field(default=512, ge=1, le=1_048_576)
    exec: ExecPolicy | None = None  # None: the agent has no run_command tool
    # "process": each run starts a coding CLI in a checkout of `repo` instead of model turns.
    adapter: Literal["anthropic", "process"] = "anthropic"
    clis: list[CodingCli] = Field(default_factory=list)
    repo: str | None = None  # a git URL or path (process agents)
    timeout: Duration = "45m"  # of one CLI run (process agents)
    queue: QueueConfig | None = None
    # the nodes that may run it (README: Several machines); empty: any node
    runs_on: list[Annotated[str, Field(pattern=NODE_NAME)]] = Field(default_factory=list)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None and not _QUIET_HOURS.match(value):
            raise ValueError(f'"{value}" is not a range like "23:00-07:00"')
        return value


class HimalayaOptions(_Section):
    bin: str = "himalaya"
    version: Literal[1, 2] | None = None


class GraphOptions(_Section):
    """A Microsoft 365 mailbox read by a daemon app (client-credentials flow)."""

    tenant: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: Secret
    authority: str = "https://login.microsoftonline.com"
    base_url: str = "https://graph.microsoft.com/v1.0"
    ca_bundle: Path | None = None
    token_cache: Path | None = None

    @field_validator("authority")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (msal refuses anything else)")
        return value.rstrip("/")

    @field_validator("base_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL of Microsoft Graph")
        return value.rstrip("/")


class MailboxConfig(_Section):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    backend: Literal["himalaya", "graph"]
    account: str | None = None
    user: str | None = None
    folder: str = "INBOX"
    himalaya: HimalayaOptions = Field(default_factory=HimalayaOptions)
    every: Annotated[str, at_most("1d")] = "10m"
    vip: list[str] = Field(default_factory=list)
    urgent_keywords: list[str] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)
    graph: GraphOptions | None = None
    urgent_domains: list[str] = Field(default_factory=list)
    ignore_keywords: list[str] = Field(default_factory=list)
    high_importance_urgent: bool = True
    timeout: Annotated[str, at_most("1h")] = "60s"
    page_size: int = Field(default=500, ge=1, le=1000)
    failures_before_incident: int = Field(default=3, ge=1)


class TriageConfig(_Section):
    """How mail is judged once rules have not decided, and when the digest goes out."""

    agent: str | None = None  # the agent the model calls are billed to; default the hub
    model: str = "claude-haiku-4-5"
    fallbacks: list[str] = Field(default_factory=list)
    body_chars: int = Field(default=4000, ge=200, le=50_000)
    digest_at: str = "18:00"

    @field_validator("digest_at")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not re.match(r"^([01]\d|2[0-3]):([0-5]\d)$", value):
            raise ValueError(f'"{value}" is not a time like "18:00"')
        return value


class CheckConfig(_Section):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    http: str | None = None
    tcp: str | None = None
    command: str | None = None
    expect_status: list[int] = Field(default_factory=lambda: [200])
    expect_text: str | None = None
    every: Annotated[str, at_most("1d")] = "1m"
    timeout: Annotated[str, at_most("1h")] = "10s"
    failures_before_alert: int = Field(default=3, ge=1)
    successes_before_resolve: int = Field(default=2, ge=1)
    recover: str | None = None
    max_latency: str | None = None
    severity: Literal["P3", "P2"] = "P2"
    recover_max_per_hour: int = Field(default=3, ge=1, le=60)
    recover_timeout: Annotated[str, at_most("1d")] = "2m"
    on: str | None = Field(default=None, pattern=NODE_NAME)  # the node that runs it; None = any

    @field_validator("max_latency")
    @classmethod
    def _latency(cls, value: str | None) -> str | None:
        if value is not None:
            parse_latency(value)
        return value

    def seconds(self, key: Literal["every", "timeout", "recover_timeout"]) -> float:
        return parse_duration(getattr(self, key)).total_seconds()


class DeployConfig(_Section):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    command: str
    verify: list[str] = Field(default_factory=list)
    rollback: str | None = None
    approvers: str | list[str] = "owner"
    shell: bool = False
    timeout: Annotated[str, at_most("1d")] = "10m"
    verify_status: list[int] = Field(default_factory=lambda: [200])
    verify_text: str | None = None
    verify_timeout: Annotated[str, at_most("1h")] = "10s"
    verify_attempts: int = Field(default=3, ge=1, le=20)
    verify_interval: Annotated[str, at_most("1h")] = "5s"
    required: int = Field(default=1, ge=1, le=10)
    on: str | None = Field(default=None, pattern=NODE_NAME)  # the node that runs it; None = any

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value != "owner":
            raise ValueError('must be "owner" or a list of owners\' names (deploys need an owner)')
        if isinstance(value, list) and not value:
            raise ValueError('an empty list: name at least one owner, or use "owner"')
        return value

    def approval_approvers(self) -> dict[str, Any]:
        """The `approvers` of this target's deploy approvals."""
        if isinstance(self.approvers, list):
            return {"people": list(self.approvers)}
        return {"role": "owner"}


class PublishTarget(_Section):
    """Where the publish tool sends: a Telegram chat (through the outbox), a webhook (an HTTP
    POST of JSON, `headers` from secrets via ${VAR}) or a folder a static site serves. Each
    publication passes, in order, the limits, the near-duplicate check, the quality gate and
    (unless `approve = false`) a person's approval."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    kind: Literal["telegram", "webhook", "folder"]
    chat_id: int | None = None  # telegram: the channel or chat ...
    topic: int | None = None
    feed: str | None = None  # ... or one of the [feeds]
    url: str | None = None  # webhook
    headers: dict[str, str] = Field(default_factory=dict)
    verify_url: str | None = None  # webhook: a GET of it must show the text
    path: Path | None = None  # folder
    min_gap: Annotated[str, at_most("30d")] | None = None
    max_per_day: int | None = Field(default=None, ge=1, le=1000)
    dedup_threshold: float = Field(default=0.85, gt=0, le=1)
    min_chars: int = Field(default=1, ge=1)
    max_chars: int = Field(default=4000, ge=1, le=100_000)
    banned: list[str] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)
    approve: bool = True

    def gap(self) -> timedelta | None:
        return parse_duration(self.min_gap, at_most="30d") if self.min_gap else None


class PipelineStep(_Section):
    """One step of a pipeline: `agent` writes `produces` (a file name in the run's folder),
    after reading the files it `consumes` (each produced by an earlier step)."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    agent: str
    produces: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    consumes: list[str] = Field(default_factory=list)
    instructions: str = ""


class PipelineConfig(_Section):
    """A sequence of steps run by `/pipeline <id> <topic>` or the hub's start_pipeline tool;
    the steps hand files forward in `<folder>/<run id>/`."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    folder: str
    steps: list[PipelineStep] = Field(min_length=1, max_length=20)


class AlertingConfig(_Section):
    """How incidents reach the alerts feed; the defaults are Alertmanager's."""

    group_wait: Annotated[str, at_most("1h")] = "30s"
    group_interval: Annotated[str, at_most("1d")] = "5m"
    repeat_interval: Annotated[str, at_most("30d")] = "4h"

    def seconds(self, key: Literal["group_wait", "group_interval", "repeat_interval"]) -> float:
        return parse_duration(getattr(self, key)).total_seconds()


class WatchdogConfig(_Section):
    """Monitoring the monitoring: job beats, leases, agent heartbeats, the clock, the config."""

    every: Annotated[str, at_most("1d")] = "1m"
    clock_url: str = ""
    max_clock_skew: Annotated[str, at_most("1d")] = "30s"
    config_poll: Annotated[str, at_most("1h")] = "10s"

    @field_validator("clock_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or an http(s):// URL whose Date header is checked")
        return value

    def seconds(self, key: Literal["every", "max_clock_skew", "config_poll"]) -> float:
        return parse_duration(getattr(self, key)).total_seconds()


class RuntimeConfig(_Section):
    """How agent runs are executed."""

    max_concurrent_runs: int = Field(default=4, ge=1, le=64)
    lease_seconds: int = Field(default=120, ge=3, le=86_400)
    max_turns: int = Field(default=10, ge=1, le=100)
    context_budget_tokens: int = Field(default=200_000, ge=1000, le=10_000_000)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    # Idle heartbeats (skipped runs that did nothing) are deleted after this many days.
    keep_idle_runs_days: int = Field(default=7, ge=1, le=3650)
    # After a failed run the agent's next run waits `retry_backoff`, doubling with each
    # failed run in a row up to `retry_backoff_max`.
    retry_backoff: Duration = "1m"
    retry_backoff_max: Duration = "30m"
    # Wakes of one agent within this window become one run (a blocked task's notice and
    # its escalation, say); a person's wake (an assignment, /wake) is not delayed.
    wake_window: Duration = "2s"

    def seconds(self, key: Literal["retry_backoff", "retry_backoff_max", "wake_window"]) -> float:
        return parse_duration(getattr(self, key)).total_seconds()


class BudgetConfig(_Section):
    """Fleet-wide spending limits. Per-agent budgets are `budget_usd_month` on each agent."""

    fleet_usd_month: float | None = Field(default=None, ge=0)
    raise_step_usd: float = Field(default=10, gt=0)


class ApprovalsConfig(_Section):
    """How approvals wait for people: the default deadline, what happens when it passes
    (a reminder at half time either way), and whether approvers also get a private message."""

    deadline: Annotated[str, at_most("30d")] = "24h"
    on_timeout: Literal["escalate", "expire"] = "expire"
    notify_private: bool = False
    check_every: int = Field(default=30, ge=1, le=3600)


Severity = Literal["P3", "P2", "P1", "P0"]


def _default_severities() -> dict[str, Severity]:
    return {"critical": "P1", "warning": "P2", "info": "P3"}


class WebSource(_Section):
    """An outside alert source: `POST /hooks/alertmanager/<id>` (kind alertmanager) or
    `POST /hooks/alert/<id>` (kind alert), each with its own bearer token. An Alertmanager
    source with `url` also gets a silence there when a person presses Silence."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    kind: Literal["alertmanager", "alert"] = "alertmanager"
    token: Secret
    url: str = ""
    severity_label: str = "severity"
    # label value -> P3..P0; values not listed map to `default_severity`.
    severities: dict[str, Severity] = Field(default_factory=_default_severities)
    default_severity: Literal["P3", "P2", "P1", "P0"] = "P2"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or the http(s):// URL of the Alertmanager")
        return value.rstrip("/")


class WebConfig(_Section):
    """Mission Control: the read-only web page, /metrics, /healthz and the alert hooks.
    Off unless `listen` is set ("127.0.0.1:8088")."""

    listen: str = ""
    public_url: str = ""
    # The key that signs sign-in links and session cookies; unset: one is generated once and
    # kept in the database.
    secret: SecretStr | None = None
    metrics_from: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    session_hours: int = Field(default=12, ge=1, le=168)
    sources: list[WebSource] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f'"{value}" is not an address like "127.0.0.1:8088"')
        return value

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or the http(s):// URL people open the page at")
        return value.rstrip("/")

    @field_validator("metrics_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f'"{item}" is not an address or network') from None
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def base_url(self) -> str:
        """Where people open the page: `public_url`, else the listen address."""
        return self.public_url or f"http://{self.listen}"


class NodeConfig(_Section):
    """This machine, when several `fleet run` share one PostgreSQL database (README: Several
    machines). On SQLite there is one node and these settings change nothing."""

    name: str = Field(default_factory=lambda: _default_node_name(), pattern=NODE_NAME)
    leader_takeover: Annotated[str, at_most("10m")] = "15s"  # a standby takes over within this
    renew_every: Annotated[str, at_most("1m")] = "3s"  # how often a node says it is alive

    def seconds(self, key: Literal["leader_takeover", "renew_every"]) -> float:
        return parse_duration(getattr(self, key)).total_seconds()


class Config(_Section):
    """The whole validated configuration. `path` is where it was read from."""

    path: Path = Path("fleet.toml")
    timezone: str = "UTC"
    telegram: TelegramConfig
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    people: list[Person] = Field(default_factory=list)
    feeds: Feeds = Field(default_factory=Feeds)
    anthropic: AnthropicConfig = Field(default_factory=AnthropicConfig)
    pricing: dict[str, Price] = Field(default_factory=dict)
    agents: list[AgentConfig] = Field(default_factory=list)
    mailboxes: list[MailboxConfig] = Field(default_factory=list)
    checks: list[CheckConfig] = Field(default_factory=list)
    deploys: list[DeployConfig] = Field(default_factory=list)
    folders: list[FolderConfig] = Field(default_factory=list)
    publish_targets: list[PublishTarget] = Field(default_factory=list)
    pipelines: list[PipelineConfig] = Field(default_factory=list)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)
    triage: TriageConfig = Field(default_factory=TriageConfig)
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    node: NodeConfig = Field(default_factory=NodeConfig)
    # Every value `${VAR}` or `<key>_file` put into the config while loading, with what it
    # replaced ("${DEPLOY_TOKEN}"): any of them may be a secret, wherever it went (a deploy
    # command, a check URL), so all are redacted.
    _substituted: dict[str, str] = PrivateAttr(default_factory=dict)
    # The exact bytes `load_config` validated: the last-known-good copy is saved from them, not
    # from the file re-read later (an edit landing meanwhile would be kept unvalidated).
    _source: bytes | None = PrivateAttr(default=None)

    @property
    def source(self) -> bytes | None:
        return self._source

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'unknown time zone "{value}" (use an IANA name)') from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def person(self, telegram_id: int) -> Person | None:
        for person in self.people:
            if person.telegram_id == telegram_id:
                return person
        return None

    def feed(self, name: str) -> Feed | None:
        feed: Feed | None = getattr(self.feeds, name, None)
        return feed

    @property
    def feed_chat_ids(self) -> frozenset[int]:
        return frozenset(feed.chat_id for _, feed in self.feeds.items())

    @property
    def hub(self) -> AgentConfig | None:
        return next((agent for agent in self.agents if agent.hub), None)

    def folder_path(self, folder: FolderConfig) -> Path:
        """A folder's path, relative ones anchored at the config file."""
        return folder.path if folder.path.is_absolute() else self.path.parent / folder.path

    def own_secrets(self) -> list[str]:
        """The fleet's own secrets (bot token, API keys, Graph secret): never given to the
        commands it runs (integrations.process.environment)."""
        values = [self.telegram.token.get_secret_value()]
        values += [p.api_key.get_secret_value() for p in self.anthropic.profiles.values()]
        values += [m.graph.client_secret.get_secret_value() for m in self.mailboxes if m.graph]
        values += [s.token.get_secret_value() for s in self.web.sources]
        if self.web.secret is not None:
            values.append(self.web.secret.get_secret_value())
        return [v for v in values if v]

    def secret_values(self) -> list[str]:
        """Every secret the config holds, for redaction in logs, chats and command output:
        its own secrets and every value substituted by `${VAR}` or `<key>_file`."""
        return list(dict.fromkeys([*self.own_secrets(), *self._substituted]))

    def unexpand(self, text: str) -> str:
        """`text` with every substituted value put back as its reference ("${DEPLOY_TOKEN}"),
        for showing a configured command as it was written."""
        for value in sorted(self._substituted, key=len, reverse=True):
            if len(value) >= 4:  # as bot.logs: shorter values would garble the text
                text = text.replace(value, self._substituted[value])
        return text

    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for PostgreSQL or an in-memory database."""
        if not self.database.is_sqlite:
            return None
        rest = self.database.url.split(":///", 1)[1] if ":///" in self.database.url else ""
        if not rest or rest.startswith(":memory:"):
            return None
        return Path(rest.split("?", 1)[0])


def load_config(path: Path) -> Config:
    """Read, resolve and validate a config file; raise ConfigError listing every problem."""
    data, raw = read_config(path)
    checked = validate_config(raw, path)
    if checked.problems or checked.config is None:
        raise ConfigError(checked.lines())
    checked.config._source = data
    return checked.config


def read_config(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its TOML; ConfigError (one line) when it cannot be read or is not
    TOML, since nothing else can be checked then."""
    where = str(path)
    try:
        data = path.read_bytes()
        return data, tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{where}: file not found (create one with `fleet init`)"]) from None
    except OSError as err:
        raise ConfigError([f"{where}: cannot read: {err.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{where}: {_toml_problem(err)}"]) from None


def _toml_problem(err: tomllib.TOMLDecodeError) -> str:
    # tomllib (3.11) puts the position at the end: "Expected ... (at line 2, column 5)".
    text = str(err)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if match is None:
        return f"not valid TOML: {text}"
    what = text[: match.start()]
    what = what[:1].lower() + what[1:]
    return f"not valid TOML at line {match.group(1)}, column {match.group(2)}: {what}"


@dataclass
class Checked:
    """The outcome of `validate_config`. With problems, `config` (if any) is a repaired copy
    good only for further checks; `skip` holds the key paths (positional, "agents[1].model")
    already reported or left unresolved, about which later checks must say nothing."""

    path: Path
    raw: dict[str, Any]
    config: Config | None
    problems: list[str] = field(default_factory=list)
    skip: set[str] = field(default_factory=set)

    def lines(self) -> list[str]:
        return [f"{self.path}: {problem}" for problem in self.problems]

    def named(self, problems: list[str]) -> list[str]:
        """Positional key paths of further problems, named by id; those under `skip` left out."""
        return [name_items(p, self.raw) for p in problems if not said_already(p, self.skip)]


def validate_config(raw: dict[str, Any], path: Path, *, offline: bool = False) -> Checked:
    """Every problem of a parsed config at once: unresolved secrets, keys and types, and the
    cross-checks, each key reported once. `offline` leaves `${VAR}` and `<key>_file` unread
    (and says nothing about the keys they feed)."""
    resolution = _Resolution(path.parent, offline)
    resolved = _resolve_secrets(raw, (), resolution)
    resolved["path"] = path
    problems = list(resolution.problems)
    skip = {path_of(p) for p in problems} | resolution.skip
    config: Config | None
    try:
        config = Config.model_validate(resolved)
    except ValidationError as err:
        described = describe(err.errors(include_input=False), Config)
        problems += [f"{at}: {what}" for at, what in described if not under(at, skip)]
        skip |= {at for at, _ in described}
        config = _repaired(resolved, err)
    if config is not None:
        config._substituted = resolution.substituted
        problems += [p for p in _semantic_problems(config) if not said_already(p, skip)]
        config = _anchor_sqlite(config)
    return Checked(path, raw, config, [name_items(p, raw) for p in problems], skip)


def _repaired(resolved: dict[str, Any], err: ValidationError) -> Config | None:
    """A copy of the data validated after `repair`, so that the cross-checks can run next to
    the key errors; None if it still fails after a few rounds (then only those are said)."""
    data = copy.deepcopy(resolved)
    errors = err.errors(include_input=False)
    for _ in range(6):
        repair(data, errors, Config)
        try:
            return Config.model_validate(data)
        except ValidationError as again:
            errors = again.errors(include_input=False)
    return None


def _anchor_sqlite(config: Config) -> Config:
    """A relative SQLite path is relative to the config file, like workspaces, not to
    wherever the process happens to start (systemd, cron and shells differ)."""
    prefix = "sqlite+aiosqlite:///"
    url = config.database.url
    if not url.startswith(prefix) or url[len(prefix) :].startswith(("/", ":memory:")):
        return config
    if not url[len(prefix) :]:
        return config
    absolute = (config.path.parent / url[len(prefix) :]).resolve()
    database = config.database.model_copy(update={"url": f"{prefix}{absolute}"})
    return config.model_copy(update={"database": database})


@dataclass
class _Resolution:
    """What resolving secrets found: problems, every value put in (value -> what it replaced,
    for redaction) and the key paths left without a value."""

    base: Path
    offline: bool
    problems: list[str] = field(default_factory=list)
    substituted: dict[str, str] = field(default_factory=dict)
    skip: set[str] = field(default_factory=set)


def _resolve_secrets(node: Any, loc: tuple[str | int, ...], res: _Resolution) -> Any:
    """Expand ${VAR} references and read `<key>_file` entries into `<key>`."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.endswith("_file") and isinstance(value, str) and len(key) > 5:
                target = key.removesuffix("_file")
                here = key_path((*loc, key))
                if target in node:
                    res.problems.append(f"{here}: give either {target} or {key}, not both")
                    res.skip.add(key_path((*loc, target)))
                    continue
                out[target] = _read_secret_file(value, here, res)
                if not out[target]:  # unread or unreadable: said under `here`, if at all
                    res.skip.add(key_path((*loc, target)))
                continue
            out[key] = _resolve_secrets(value, (*loc, key), res)
        return out
    if isinstance(node, list):
        return [_resolve_secrets(v, (*loc, i), res) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        return _expand(node, key_path(loc), res)
    return node


def _expand(text: str, here: str, res: _Resolution) -> str:
    if res.offline and _VAR.search(text):
        res.skip.add(here)
        return text

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        value = os.environ.get(name)
        if value is None:
            res.problems.append(f"{here}: references ${{{name}}}, which is not set")
            return ""
        if not value.strip():
            res.problems.append(f"{here}: references ${{{name}}}, which is empty")
            return ""
        res.substituted.setdefault(value, f"${{{name}}}")
        return value

    return _VAR.sub(value_of, text)


def _read_secret_file(name: str, here: str, res: _Resolution) -> str:
    if res.offline:
        return ""
    # The path may use ${VAR}, e.g. systemd's ${CREDENTIALS_DIRECTORY}/telegram.
    if "${" in name:
        before = len(res.problems)
        name = _expand(name, here, res)
        if len(res.problems) > before:
            return ""
    file = (res.base / name) if not Path(name).is_absolute() else Path(name)
    try:
        value = file.read_text(encoding="utf-8").strip()
    except OSError as err:
        res.problems.append(f"{here}: cannot read {file}: {err.strerror}")
        return ""
    except UnicodeDecodeError:
        res.problems.append(f"{here}: {file} is not UTF-8 text")
        return ""
    if not value:
        res.problems.append(f"{here}: {file} is empty")
    else:
        res.substituted.setdefault(value, f"[{here}]")
    return value


def _semantic_problems(config: Config) -> list[str]:
    problems: list[str] = []

    seen_people: set[int] = set()
    seen_names: set[str] = set()
    for i, person in enumerate(config.people):
        if person.telegram_id in seen_people:
            problems.append(f"people[{i}].telegram_id: duplicate person {person.telegram_id}")
        seen_people.add(person.telegram_id)
        if person.name.casefold() in seen_names:
            problems.append(
                f'people[{i}].name: duplicate name "{person.name}" (names say who decided, '
                "and deploy approvers are named)"
            )
        seen_names.add(person.name.casefold())
    if config.people and not any(p.role is Role.owner for p in config.people):
        problems.append("people: no person has role owner (deploys and P0 need one)")

    ids: dict[str, int] = {}
    for i, agent in enumerate(config.agents):
        if agent.id in ids:
            problems.append(f'agents[{i}].id: duplicate agent id "{agent.id}"')
        ids.setdefault(agent.id, i)
    hubs = [i for i, agent in enumerate(config.agents) if agent.hub]
    if config.agents and not hubs:
        problems.append("agents: no agent has hub = true (exactly one must)")
    for i in hubs[1:]:
        problems.append(f"agents[{i}].hub: more than one hub (exactly one agent has hub = true)")

    profiles = set(config.anthropic.profiles)
    base = config.path.parent
    for i, agent in enumerate(config.agents):
        if agent.reports_to is not None and agent.reports_to not in ids:
            problems.append(f'agents[{i}].reports_to: unknown agent "{agent.reports_to}"')
        if agent.hub and agent.reports_to is not None:
            problems.append(f"agents[{i}].reports_to: the hub reports to no agent")
        if agent.heartbeat and agent.cron:
            problems.append(f"agents[{i}]: give either heartbeat or cron, not both")
        if agent.adapter == "process" and (not agent.clis or not agent.repo):
            problems.append(f'agents[{i}]: adapter = "process" needs clis and repo')
        if agent.queue is not None:
            try:
                crontab_trigger(agent.queue.cron, config.tz)
            except ValueError as err:
                problems.append(
                    f'agents[{i}].queue.cron: "{agent.queue.cron}" is not a crontab line: {err}'
                )
        if agent.cron is not None:
            try:
                crontab_trigger(agent.cron, config.tz)
            except ValueError as err:
                problems.append(f'agents[{i}].cron: "{agent.cron}" is not a crontab line: {err}')
        folder = agent.workspace if agent.workspace.is_absolute() else base / agent.workspace
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            problems.append(
                f"agents[{i}].workspace: folder {folder} {what} "
                "(`fleet init` writes example workspaces)"
            )
        for j, profile in enumerate(agent.profiles):
            # With no [anthropic.profiles], "primary" is the SDK's own ANTHROPIC_API_KEY.
            if profile not in profiles and (profiles or profile != "primary"):
                default = " (the default)" if profile == "primary" else ""
                problems.append(
                    f'agents[{i}].profiles[{j}]: unknown profile "{profile}"{default}; '
                    f"define [anthropic.profiles.{profile}] or list this agent's profiles"
                )
    problems += _cycles(config.agents)
    problems += _tool_problems(config.agents)

    named: dict[str, list[str]] = {
        "mailboxes": [m.id for m in config.mailboxes],
        "checks": [c.id for c in config.checks],
        "deploys": [d.id for d in config.deploys],
        "folders": [f.id for f in config.folders],
        "publish_targets": [t.id for t in config.publish_targets],
        "pipelines": [p.id for p in config.pipelines],
        "web.sources": [w.id for w in config.web.sources],
    }
    for kind, item_ids in named.items():
        seen: set[str] = set()
        for i, item_id in enumerate(item_ids):
            if item_id in seen:
                problems.append(f'{kind}[{i}].id: duplicate id "{item_id}"')
            seen.add(item_id)
    for i, mailbox in enumerate(config.mailboxes):
        if mailbox.backend == "himalaya" and not mailbox.account:
            problems.append(f"mailboxes[{i}].account: required for the himalaya backend")
        if mailbox.backend == "graph" and not mailbox.user:
            problems.append(f"mailboxes[{i}].user: required for the graph backend")
        if mailbox.backend == "graph" and mailbox.graph is None:
            problems.append(
                f"mailboxes[{i}].graph: required for the graph backend "
                "(tenant, client_id, client_secret)"
            )
    if config.mailboxes and config.triage.agent is not None:
        if config.triage.agent not in ids:
            problems.append(f'triage.agent: unknown agent "{config.triage.agent}"')
    elif config.mailboxes and config.agents and config.hub is None:
        problems.append("triage.agent: no hub to bill triage model calls to; name an agent")
    for i, check in enumerate(config.checks):
        kinds = [k for k in (check.http, check.tcp, check.command) if k]
        if len(kinds) != 1:
            problems.append(f"checks[{i}]: give exactly one of http, tcp or command")
    problems += _folder_problems(config)
    problems += _publish_problems(config)
    problems += _pipeline_problems(config)
    owners = {p.name for p in config.people if p.role is Role.owner}
    for i, deploy in enumerate(config.deploys):
        listed = deploy.approvers if isinstance(deploy.approvers, list) else []
        for j, name in enumerate(listed):
            if name not in owners:
                problems.append(
                    f'deploys[{i}].approvers[{j}]: "{name}" is not an owner in [[people]] '
                    "(deploys need an owner)"
                )
    return problems


def _tool_problems(agents: list[AgentConfig]) -> list[str]:
    """`authority` and `tools` name what agents.tools defines: a typo would silently take a
    right away (or never grant it)."""
    known_authority, known_tools = authorities(), tool_names()
    problems: list[str] = []
    for i, agent in enumerate(agents):
        for j, name in enumerate(agent.authority):
            if name not in known_authority:
                problems.append(
                    f'agents[{i}].authority[{j}]: unknown authority "{name}" '
                    f"(known: {', '.join(known_authority)})"
                )
        for j, name in enumerate(agent.tools):
            if name not in known_tools:
                problems.append(
                    f'agents[{i}].tools[{j}]: unknown tool "{name}" '
                    f"(known: {', '.join(known_tools)})"
                )
    return problems


def _folder_problems(config: Config) -> list[str]:
    """Folders exist (or are created) and are folders; agents are granted only known ones."""
    problems: list[str] = []
    for i, folder in enumerate(config.folders):
        if folder.id == WORKSPACE_ROOT:
            problems.append(
                f'folders[{i}].id: "{WORKSPACE_ROOT}" names each agent\'s own workspace; '
                "choose another id"
            )
        path = config.folder_path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            problems.append(f"folders[{i}].path: {path} exists and is not a folder")
        except OSError as err:
            problems.append(f"folders[{i}].path: cannot create {path}: {err.strerror}")
    known = {f.id for f in config.folders}
    for i, agent in enumerate(config.agents):
        for folder_id in agent.folders:
            if folder_id not in known:
                listed = ", ".join(sorted(known)) or "none in [[folders]]"
                problems.append(
                    f'agents[{i}].folders.{folder_id}: unknown folder "{folder_id}" '
                    f"(known: {listed})"
                )
    return problems


def _publish_problems(config: Config) -> list[str]:
    """Each target kind has what it needs to reach its destination."""
    problems: list[str] = []
    feeds = {name for name, _ in config.feeds.items()}
    for i, target in enumerate(config.publish_targets):
        where = f"publish_targets[{i}]"
        if target.kind == "telegram":
            if (target.chat_id is None) == (target.feed is None):
                problems.append(f"{where}: a telegram target needs exactly one of chat_id or feed")
            elif target.feed is not None and target.feed not in feeds:
                problems.append(f'{where}.feed: unknown feed "{target.feed}"')
        if target.kind == "webhook":
            for key, value in (("url", target.url), ("verify_url", target.verify_url)):
                if value is not None and not value.startswith(("http://", "https://")):
                    problems.append(f"{where}.{key}: must be an http:// or https:// URL")
            if target.url is None:
                problems.append(f"{where}.url: required for a webhook target")
        if target.kind == "folder" and target.path is None:
            problems.append(f"{where}.path: required for a folder target")
        if target.min_chars > target.max_chars:
            problems.append(f"{where}: min_chars is over max_chars")
    return problems


def _pipeline_problems(config: Config) -> list[str]:
    """Steps name known agents and folders; every consumed file is produced by an earlier
    step (a later one would never have written it yet)."""
    problems: list[str] = []
    agents = {a.id for a in config.agents}
    folders = {f.id for f in config.folders}
    for i, pipeline in enumerate(config.pipelines):
        where = f"pipelines[{i}]"
        if pipeline.folder not in folders:
            problems.append(f'{where}.folder: unknown folder "{pipeline.folder}"')
        produced: set[str] = set()
        step_ids: set[str] = set()
        for j, step in enumerate(pipeline.steps):
            if step.id in step_ids:
                problems.append(f'{where}.steps[{j}].id: duplicate step "{step.id}"')
            step_ids.add(step.id)
            if step.agent not in agents:
                problems.append(f'{where}.steps[{j}].agent: unknown agent "{step.agent}"')
            else:
                granted = next(a for a in config.agents if a.id == step.agent).folders
                need = "rw" if step.produces else "ro"
                if granted.get(pipeline.folder) not in (("rw",) if need == "rw" else ("rw", "ro")):
                    problems.append(
                        f"{where}.steps[{j}].agent: {step.agent} needs folders = "
                        f'{{ {pipeline.folder} = "{need}" }} to hand files forward'
                    )
            for k, name in enumerate(step.consumes):
                if name not in produced:
                    problems.append(
                        f'{where}.steps[{j}].consumes[{k}]: "{name}" is not produced by an '
                        "earlier step"
                    )
            if step.produces is not None:
                produced.add(step.produces)
    return problems


def _cycles(agents: list[AgentConfig]) -> list[str]:
    manager = {agent.id: agent.reports_to for agent in agents}
    problems: list[str] = []
    reported: set[str] = set()
    for agent in agents:
        chain = [agent.id]
        current = manager.get(agent.id)
        while current is not None and current in manager:
            if current in chain:
                cycle = [*chain[chain.index(current) :], current]
                if not reported.intersection(cycle):
                    problems.append("agents: reports_to forms a cycle: " + " -> ".join(cycle))
                    reported.update(cycle)
                break
            chain.append(current)
            current = manager[current]
    return problems
