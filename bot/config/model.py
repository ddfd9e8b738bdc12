"""The root of the config (`Config`) and its small tables: `[telegram]`, `[database]`,
`[[people]]`, `[feeds]`, `[anthropic]`, `[pricing]`, `[runtime]`, `[budget]` and `[node]`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, SecretStr, field_validator

from bot.config.agents import AgentConfig, FolderConfig, PipelineConfig
from bot.config.mail import GraphMailbox, MailboxConfig, TriageConfig
from bot.config.operations import (
    AlertingConfig,
    ApprovalsConfig,
    CheckConfig,
    DeployConfig,
    PublishTarget,
    WatchdogConfig,
    WebConfig,
)
from bot.config.values import (
    NODE_NAME,
    Duration,
    Role,
    Secret,
    Section,
    at_most,
    default_node_name,
)

# "<bot id>:<secret>"; the secret part is ~35 URL-safe characters from @BotFather (a local
# Bot API server accepts shorter ones, so the length is checked by check-config only).
BOT_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,100}$", re.ASCII)


class TelegramConfig(Section):
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


class DatabaseConfig(Section):
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


class Person(Section):
    telegram_id: int
    name: str = Field(min_length=1)
    role: Role


class Feed(Section):
    chat_id: int
    topic: int | None = None


class Feeds(Section):
    alerts: Feed | None = None
    triage: Feed | None = None
    approvals: Feed | None = None
    activity: Feed | None = None

    def items(self) -> Iterator[tuple[str, Feed]]:
        for name in ("alerts", "triage", "approvals", "activity"):
            feed: Feed | None = getattr(self, name)
            if feed is not None:
                yield name, feed


class AnthropicProfile(Section):
    api_key: Secret


class AnthropicConfig(Section):
    base_url: str = ""
    profiles: dict[str, AnthropicProfile] = Field(default_factory=dict)


class Price(Section):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0)  # 5-minute cache; default 1.25x input
    cache_write_1h: float | None = Field(default=None, ge=0)  # 1-hour cache; default 2x input
    cache_read: float | None = Field(default=None, ge=0)  # default 0.1x input


class RuntimeConfig(Section):
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
    retry_backoff: Duration = timedelta(minutes=1)
    retry_backoff_max: Duration = timedelta(minutes=30)
    # Wakes of one agent within this window become one run (a blocked task's notice and
    # its escalation, say); a person's wake (an assignment, /wake) is not delayed.
    wake_window: Duration = timedelta(seconds=2)


class BudgetConfig(Section):
    """Fleet-wide spending limits. Per-agent budgets are `budget_usd_month` on each agent."""

    fleet_usd_month: float | None = Field(default=None, ge=0)
    raise_step_usd: float = Field(default=10, gt=0)


class NodeConfig(Section):
    """This machine, when several `fleet run` share one PostgreSQL database (README: Several
    machines). On SQLite there is one node and these settings change nothing."""

    name: str = Field(default_factory=default_node_name, pattern=NODE_NAME)
    # a standby takes over within this
    leader_takeover: Annotated[timedelta, at_most("10m")] = timedelta(seconds=15)
    # how often a node says it is alive
    renew_every: Annotated[timedelta, at_most("1m")] = timedelta(seconds=3)


class Config(Section):
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
        graphs = [m.graph for m in self.mailboxes if isinstance(m, GraphMailbox)]
        values += [graph.client_secret.get_secret_value() for graph in graphs]
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
