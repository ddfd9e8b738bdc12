"""The mail tables: `[[mailboxes]]`, one type per backend (chosen by `backend`, so each has
only its own options and requires them), and `[triage]`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from bot.config.problems import WhenMissing
from bot.config.values import Loc, Secret, Section, at_most


class HimalayaOptions(Section):
    bin: str = "himalaya"
    version: Literal[1, 2] | None = None


class GraphOptions(Section):
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


class _Mailbox(Section):
    """What every backend's mailbox has: how often it is read and how its mail is judged."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    backend: str  # each backend's table narrows it to its own name
    folder: str = "INBOX"
    every: Annotated[timedelta, at_most("1d")] = timedelta(minutes=10)
    vip: list[str] = Field(default_factory=list)
    urgent_keywords: list[str] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)
    urgent_domains: list[str] = Field(default_factory=list)
    ignore_keywords: list[str] = Field(default_factory=list)
    high_importance_urgent: bool = True
    timeout: Annotated[timedelta, at_most("1h")] = timedelta(seconds=60)
    page_size: int = Field(default=500, ge=1, le=1000)
    failures_before_incident: int = Field(default=3, ge=1)


class HimalayaMailbox(_Mailbox):
    """A mailbox read by the himalaya CLI, from one of its accounts."""

    backend: Literal["himalaya"]
    account: Annotated[str, WhenMissing("required for the himalaya backend")]
    himalaya: HimalayaOptions = Field(default_factory=HimalayaOptions)

    def cross_problems(self) -> Iterator[tuple[Loc, str]]:
        if not self.account:
            yield ("account",), "required for the himalaya backend"


class GraphMailbox(_Mailbox):
    """A Microsoft 365 user's mailbox read through Microsoft Graph."""

    backend: Literal["graph"]
    user: Annotated[str, WhenMissing("required for the graph backend")]
    graph: Annotated[
        GraphOptions,
        WhenMissing("required for the graph backend (tenant, client_id, client_secret)"),
    ]

    def cross_problems(self) -> Iterator[tuple[Loc, str]]:
        if not self.user:
            yield ("user",), "required for the graph backend"


MailboxConfig = Annotated[HimalayaMailbox | GraphMailbox, Field(discriminator="backend")]


class TriageConfig(Section):
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
