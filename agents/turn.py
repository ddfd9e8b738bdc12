"""One agent turn: the Messages API tool-use loop, bounded in turns and in context."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from agents.gateway import BudgetExceeded, Gateway, GatewayError
from agents.tools import definitions, execute
from agents.tools_base import ToolContext

CONTEXT_FLUSH_AT = 0.85
FLUSH_NOTE = (
    "Your context is nearly full. Call update_workstate now with where you are and what is "
    "next; the run ends after this turn."
)


class StopSignal:
    """Set when a person asks to stop the run in flight (`storage.runs.request_stop`): the
    model call being awaited is abandoned and no tool call runs after it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.by = ""

    def set(self, by: str) -> None:
        if not self.event.is_set():
            self.by = by
            self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()


@dataclass
class TurnResult:
    status: str  # succeeded | failed | deferred | cancelled
    outcome: str
    changed: bool = False
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    retry_at: datetime | None = None
    alerted: bool = False  # the gateway told `alerts` why the run stopped (a budget stop)
    # Why a failed run failed, for what comes next: "config" (no model can answer until the
    # config changes: the task is blocked), "unavailable" (no model answered this time: the
    # task waits and is retried, without using up its retries), "budget" (the agent is paused
    # until its budget is raised, which wakes it), "" (the run itself failed).
    cause: str = ""
    actions: list[str] = field(default_factory=list)


T = TypeVar("T")

# Told what the run is doing now ("thinking", "comment #3"), with the totals so far.
Progress = Callable[[str, TurnResult], Awaitable[None]]


def _stopped(result: TurnResult, stop: StopSignal) -> TurnResult:
    result.status = "cancelled"
    result.outcome = f"stopped by {stop.by}"
    return result


async def _model_call(call: Coroutine[Any, Any, T], stop: StopSignal) -> T | None:
    """Await the model's reply unless the stop comes first; then the call is cancelled (its
    HTTP request abandoned) and None is returned."""
    request = asyncio.create_task(call)
    stopping = asyncio.ensure_future(stop.event.wait())
    try:
        await asyncio.wait({request, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not request.done():
            request.cancel()
    if not request.done() or request.cancelled():
        try:
            await request
        except asyncio.CancelledError:
            if not stop.requested:
                raise
        return None
    return request.result()


def _target(args: Any) -> str:
    """What a tool call acts on, for the progress line."""
    if not isinstance(args, dict):
        return ""
    for key in ("task_id", "target", "kind", "status", "agent"):
        if key in args and isinstance(args[key], str | int):
            value = str(args[key])
            return f"#{value}" if key == "task_id" else value
    return ""


async def run_turn(
    ctx: ToolContext,
    gateway: Gateway,
    *,
    system: str,
    brief: str,
    max_turns: int,
    context_budget: int,
    stop: StopSignal | None = None,
    progress: Progress | None = None,
) -> TurnResult:
    result = TurnResult(status="failed", outcome="")
    stop = stop or StopSignal()
    messages: list[Any] = [{"role": "user", "content": brief}]
    tools = definitions(ctx.agent)
    flushing = False
    for turn in range(1, max_turns + 1):
        if stop.requested:
            return _stopped(result, stop)
        if progress is not None:
            await progress("thinking", result)
        try:
            reply = await _model_call(
                gateway.create(
                    ctx.agent,
                    run_id=ctx.run_id,
                    purpose="turn",
                    system=system,
                    messages=messages,
                    tools=tools,
                ),
                stop,
            )
        except GatewayError as err:
            result.status = "deferred" if err.retry_at is not None else "failed"
            result.outcome = str(err)
            result.retry_at = err.retry_at
            result.alerted = err.alerted
            if isinstance(err, BudgetExceeded):
                result.cause = "budget"
            elif err.permanent:
                result.cause = "config"
            elif err.retry_at is None and not err.alerted:
                result.cause = "unavailable"
            return result
        if reply is None:
            return _stopped(result, stop)
        result.turns = turn
        result.input_tokens += reply.input_tokens
        result.output_tokens += reply.output_tokens
        result.cost_usd += reply.cost_usd
        content = reply.message.content
        if reply.message.stop_reason == "max_tokens":
            # The reply was cut off: a half-written tool call or answer must not pass for the
            # end of the run. Failed loudly (alerted, the task retried), never continued: a
            # cut tool_use block cannot be completed by asking for more.
            result.status = "failed"
            result.outcome = (
                f"the model's reply was cut at max_tokens ({reply.output_tokens} output "
                "tokens); the run stopped without acting on it"
            )
            return result
        messages.append({"role": "assistant", "content": content})
        calls = [block for block in content if block.type == "tool_use"]
        if not calls:
            text = " ".join(block.text for block in content if block.type == "text").strip()
            result.status = "succeeded"
            result.outcome = text[:500] or "(the model ended its turn without text)"
            return result
        if reply.fallback_used:
            # Sticky for the run: work a fallback model did is not marked done later by the
            # main model either; it goes to review.
            ctx.fallback_model = reply.model
        tool_results: list[dict[str, Any]] = []
        ends = False
        for call in calls:
            if stop.requested:
                return _stopped(result, stop)
            if progress is not None:
                await progress(f"{call.name} {_target(call.input)}".strip(), result)
            outcome = await execute(ctx, call.name, call.input)
            result.changed |= outcome.changed
            ends |= outcome.ends_run
            result.actions.append(f"{call.name}: {outcome.content}")
            if progress is not None and outcome.ok and call.name.startswith("request_"):
                await progress("waiting for approval", result)
            tool_results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": outcome.content,
                    "is_error": not outcome.ok,
                }
            )
        if ends or flushing:
            result.status = "succeeded"
            result.outcome = result.actions[-1][:500]
            return result
        follow_up: list[dict[str, Any]] = tool_results
        if reply.input_tokens > CONTEXT_FLUSH_AT * context_budget:
            flushing = True
            follow_up = [*tool_results, {"type": "text", "text": FLUSH_NOTE}]
        messages.append({"role": "user", "content": follow_up})
    result.status = "failed"
    result.outcome = f"turn limit of {max_turns} reached without finishing"
    return result
