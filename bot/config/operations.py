"""The tables of operations: `[[checks]]`, `[[deploys]]`, `[[publish_targets]]`,
`[alerting]`, `[watchdog]`, `[approvals]` and `[web]` (Mission Control and its alert
sources)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator

from bot.config.values import NODE_NAME, Latency, Loc, Secret, Section, at_most


class CheckConfig(Section):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    http: str | None = None
    tcp: str | None = None
    command: str | None = None
    expect_status: list[int] = Field(default_factory=lambda: [200])
    expect_text: str | None = None
    every: Annotated[timedelta, at_most("1d")] = timedelta(minutes=1)
    timeout: Annotated[timedelta, at_most("1h")] = timedelta(seconds=10)
    failures_before_alert: int = Field(default=3, ge=1)
    successes_before_resolve: int = Field(default=2, ge=1)
    recover: str | None = None
    max_latency: Latency | None = None
    severity: Literal["P3", "P2"] = "P2"
    recover_max_per_hour: int = Field(default=3, ge=1, le=60)
    recover_timeout: Annotated[timedelta, at_most("1d")] = timedelta(minutes=2)
    on: str | None = Field(default=None, pattern=NODE_NAME)  # the node that runs it; None = any

    def cross_problems(self) -> Iterator[tuple[Loc, str]]:
        if len([k for k in (self.http, self.tcp, self.command) if k]) != 1:
            yield (), "give exactly one of http, tcp or command"


class DeployConfig(Section):
    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    command: str
    verify: list[str] = Field(default_factory=list)
    rollback: str | None = None
    approvers: str | list[str] = "owner"
    shell: bool = False
    timeout: Annotated[timedelta, at_most("1d")] = timedelta(minutes=10)
    verify_status: list[int] = Field(default_factory=lambda: [200])
    verify_text: str | None = None
    verify_timeout: Annotated[timedelta, at_most("1h")] = timedelta(seconds=10)
    verify_attempts: int = Field(default=3, ge=1, le=20)
    verify_interval: Annotated[timedelta, at_most("1h")] = timedelta(seconds=5)
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


class PublishTarget(Section):
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
    min_gap: Annotated[timedelta, at_most("30d")] | None = None
    max_per_day: int | None = Field(default=None, ge=1, le=1000)
    dedup_threshold: float = Field(default=0.85, gt=0, le=1)
    min_chars: int = Field(default=1, ge=1)
    max_chars: int = Field(default=4000, ge=1, le=100_000)
    banned: list[str] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)
    approve: bool = True

    def cross_problems(self) -> Iterator[tuple[Loc, str]]:
        """Each kind has what it needs to reach its destination (a named feed must exist:
        bot.config.semantics checks that against [feeds])."""
        if self.kind == "telegram" and (self.chat_id is None) == (self.feed is None):
            yield (), "a telegram target needs exactly one of chat_id or feed"
        if self.kind == "webhook":
            for key, value in (("url", self.url), ("verify_url", self.verify_url)):
                if value is not None and not value.startswith(("http://", "https://")):
                    yield (key,), "must be an http:// or https:// URL"
            if self.url is None:
                yield ("url",), "required for a webhook target"
        if self.kind == "folder" and self.path is None:
            yield ("path",), "required for a folder target"
        if self.min_chars > self.max_chars:
            yield (), "min_chars is over max_chars"


class AlertingConfig(Section):
    """How incidents reach the alerts feed; the defaults are Alertmanager's."""

    group_wait: Annotated[timedelta, at_most("1h")] = timedelta(seconds=30)
    group_interval: Annotated[timedelta, at_most("1d")] = timedelta(minutes=5)
    repeat_interval: Annotated[timedelta, at_most("30d")] = timedelta(hours=4)


class WatchdogConfig(Section):
    """Monitoring the monitoring: job beats, leases, agent heartbeats, the clock, the config."""

    every: Annotated[timedelta, at_most("1d")] = timedelta(minutes=1)
    clock_url: str = ""
    max_clock_skew: Annotated[timedelta, at_most("1d")] = timedelta(seconds=30)
    config_poll: Annotated[timedelta, at_most("1h")] = timedelta(seconds=10)

    @field_validator("clock_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or an http(s):// URL whose Date header is checked")
        return value


class ApprovalsConfig(Section):
    """How approvals wait for people: the default deadline, what happens when it passes
    (a reminder at half time either way), and whether approvers also get a private message."""

    deadline: Annotated[timedelta, at_most("30d")] = timedelta(hours=24)
    on_timeout: Literal["escalate", "expire"] = "expire"
    notify_private: bool = False
    check_every: int = Field(default=30, ge=1, le=3600)


Severity = Literal["P3", "P2", "P1", "P0"]


def _default_severities() -> dict[str, Severity]:
    return {"critical": "P1", "warning": "P2", "info": "P3"}


class WebSource(Section):
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


class WebConfig(Section):
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
