"""The tools on an agent's own workspace memory: today's log, WORKSTATE.md, MEMORY.md."""

from __future__ import annotations

from typing import Any

from agents import workspace, workspace_writes
from agents.tools_base import Tool, ToolContext, ToolResult, _schema, _text, refused


async def _append_memory(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    path = workspace_writes.append_daily_log(ctx.workspace, ctx.today, args["text"], ctx.now)
    return ToolResult(True, f"appended to {path.name}", changed=True)


async def _update_workstate(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    workspace_writes.write_workstate(ctx.workspace, args["text"])
    return ToolResult(True, "WORKSTATE.md replaced", changed=True)


async def _remember(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    try:
        # Only what fits the loaded part of MEMORY.md is worth remembering.
        limit = workspace.DEFAULT_LIMITS["MEMORY.md"]
        workspace_writes.remember(ctx.workspace, args["text"], max_chars=limit)
    except ValueError as err:
        return refused(str(err))
    return ToolResult(True, "added to MEMORY.md", changed=True)


TOOLS: tuple[Tool, ...] = (
    Tool(
        "append_memory",
        "Append a line to today's log in your workspace (memory/YYYY-MM-DD.md).",
        _schema(["text"], text=_text("what happened")),
        None,
        _append_memory,
    ),
    Tool(
        "update_workstate",
        "Replace WORKSTATE.md: where you are, so the next run can continue.",
        _schema(["text"], text=_text("the whole new WORKSTATE.md")),
        None,
        _update_workstate,
    ),
    Tool(
        "remember",
        "Add a curated long-term fact to MEMORY.md.",
        _schema(["text"], text=_text("the fact", 1000)),
        None,
        _remember,
    ),
)
