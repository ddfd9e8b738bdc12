"""The tools an agent may call in its turn. Every call is validated against its JSON schema and
checked against the agent's authority and the org chart before it acts; a refused call returns
an error to the model, is recorded on the task, and never takes effect."""

from __future__ import annotations

import logging
import zlib
from typing import Any

from jsonschema import Draft202012Validator

from agents import (
    tools_approvals,
    tools_commands,
    tools_files,
    tools_incidents,
    tools_memory,
    tools_publishing,
    tools_tasks,
)
from agents.tools_base import Tool, ToolContext, ToolResult, excerpt, refused
from bot.config import AgentConfig
from storage import inbox, tasks

log = logging.getLogger(__name__)


TOOLS: tuple[Tool, ...] = (
    *tools_tasks.TOOLS,
    *tools_memory.TOOLS,
    *tools_approvals.TOOLS,
    *tools_incidents.TOOLS,
    *tools_files.TOOLS,
    *tools_commands.TOOLS,
    *tools_publishing.TOOLS,
)
BY_NAME = {tool.name: tool for tool in TOOLS}


def definitions(agent: AgentConfig) -> list[dict[str, Any]]:
    """The tools offered to `agent`: those its `tools` list (all, if empty) and authority
    allow."""
    return [tool.definition() for tool in TOOLS if _refusal(tool, agent) is None]


def _refusal(tool: Tool, agent: AgentConfig) -> str | None:
    """Why `agent` may not use `tool`, or None."""
    if tool.offered is not None and not tool.offered(agent):
        return f"{tool.name} is not one of your tools (the config gives you no exec)"
    if agent.tools and tool.name not in agent.tools:
        return f"{tool.name} is not among your tools"
    if tool.authority is not None and tool.authority not in agent.authority:
        return f"{tool.name} needs the {tool.authority} authority, which you do not have"
    return None


async def execute(ctx: ToolContext, name: str, args: Any) -> ToolResult:
    """Run one tool call; never raises for a bad call (the model gets the reason)."""
    tool = BY_NAME.get(name)
    refusal = _refusal(tool, ctx.agent) if tool is not None else None
    if tool is None:
        result = refused(f'unknown tool "{excerpt(name)}"; available: {", ".join(BY_NAME)}')
    elif refusal is not None:
        result = ToolResult(False, f"refused: {refusal}", authority=True)
    elif not isinstance(args, dict):
        result = refused("tool input must be a JSON object")
    else:
        errors = sorted(Draft202012Validator(tool.schema).iter_errors(args), key=str)
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "input"
            result = refused(f"invalid input at {excerpt(where)}: {excerpt(errors[0].message)}")
        else:
            result = await tool.handler(ctx, args)
    if not result.ok and ctx.task_id is not None:
        async with ctx.db.claim() as session:
            await tasks.record_refusal(
                session, ctx.task_id, actor=ctx.actor, body=f"{name}: {result.content}"[:2000]
            )
    if result.authority:
        log.warning("%s: %s refused for authority: %s", ctx.agent.id, name, result.content)
    if result.authority and ctx.org.hub is not None and ctx.org.hub.id != ctx.agent.id:
        async with ctx.db.claim() as session:
            await inbox.oversight(
                session,
                ctx.org.hub.id,
                f"Tool refused for authority: {ctx.agent.id} called {name} "
                f"({str(args)[:300]}): {result.content}",
                dedup_key=f"oversight:refused:{ctx.run_id}:{name}:{zlib.crc32(str(args).encode())}",
            )
    return result
