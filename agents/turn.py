"""One agent turn: the Messages API tool-use loop, bounded in turns and in context."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from agents.gateway import BudgetExceeded, Gateway, GatewayError
from agents.tools import ToolContext, definitions, execute

CONTEXT_FLUSH_AT = 0.85
FLUSH_NOTE = (
    "Your context is nearly full. Call update_workstate now with where you are and what is "
    "next; the run ends after this turn."
)


@dataclass
class TurnResult:
    status: str  # succeeded | failed | deferred
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


async def run_turn(
    ctx: ToolContext,
    gateway: Gateway,
    *,
    system: str,
    brief: str,
    max_turns: int,
    context_budget: int,
) -> TurnResult:
    result = TurnResult(status="failed", outcome="")
    messages: list[Any] = [{"role": "user", "content": brief}]
    tools = definitions(ctx.agent)
    flushing = False
    for turn in range(1, max_turns + 1):
        try:
            reply = await gateway.create(
                ctx.agent,
                run_id=ctx.run_id,
                purpose="turn",
                system=system,
                messages=messages,
                tools=tools,
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
            outcome = await execute(ctx, call.name, call.input)
            result.changed |= outcome.changed
            ends |= outcome.ends_run
            result.actions.append(f"{call.name}: {outcome.content}")
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
