"""What every tool an agent may call is made of: the context of its call, its result, its
entry in the table (name, schema, authority, handler), the schema helpers and the refusal."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from agents.org import OrgChart
from bot.config import AgentConfig, Config
from storage.approval_policy import ApprovalPolicy
from storage.db import Database
from storage.models import MAX_ID

TEXT_MAX = 4000


@dataclass
class ToolContext:
    config: Config
    org: OrgChart
    db: Database
    agent: AgentConfig
    run_id: int
    task_id: int | None
    workspace: Path
    today: date
    now: datetime
    fallback_model: str | None = None  # set while acting on a reply from a fallback model

    @property
    def actor(self) -> str:
        return f"agent:{self.agent.id}"

    @property
    def approval_policy(self) -> ApprovalPolicy:
        """Who decides what this run asks for, from the config the run reads."""
        return ApprovalPolicy.from_config(self.config)


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    content: str
    changed: bool = False
    ends_run: bool = False
    authority: bool = False  # refused for authority: the hub gets an oversight notice


Handler = Callable[[ToolContext, dict[str, Any]], Awaitable[ToolResult]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    schema: dict[str, Any]
    authority: str | None  # None: every agent may use it
    handler: Handler
    offered: Callable[[AgentConfig], bool] | None = None  # None: to every agent

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.schema}


def _text(description: str, max_length: int = TEXT_MAX) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "description": description}


# A row id as the model may give it: the columns' range (32 bits on PostgreSQL); a larger
# one is refused by the schema instead of failing inside the database.
ROW_ID: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def _schema(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def key_part(text: str) -> str:
    """Free text (a title, a summary, a ref) as a part of an idempotency key: a short digest,
    so that the key fits its String(128) column however long the text (PostgreSQL refuses
    longer ones) and the same text still gives the same key."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


EXCERPT = 200  # characters of the model's own input quoted back in a refusal


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """`text`, or its first `limit` characters and how long it was: a refusal must not echo a
    300,000-character input back into the next request."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def refused(reason: str) -> ToolResult:
    return ToolResult(False, f"refused: {excerpt(reason, 4 * EXCERPT)}")
