"""The tools that ask a person to approve: an action or a publication, and a deploy of a
configured target."""

from __future__ import annotations

from typing import Any

from agents.tools_base import Tool, ToolContext, ToolResult, _schema, _text, key_part, refused
from integrations.deploy import shown_command
from storage import approvals, deploys


async def _request_approval(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    kind = args["kind"]
    if kind == "deploy":
        return refused("deploys are requested with the request_deploy tool (a named target)")
    if "request_approval" not in ctx.agent.authority:
        return refused(f"{kind} approvals need the request_approval authority")
    async with ctx.db.claim() as session:
        # approvals.request posts the message with its buttons to the approvals feed.
        approval = await approvals.request(
            session,
            policy=ctx.approval_policy,
            kind=kind,
            payload={"summary": args["summary"], "details": args.get("details", "")},
            requested_by=ctx.actor,
            task_id=ctx.task_id,
            idempotency_key=f"approval:{ctx.run_id}:{kind}:{key_part(args['summary'])}",
        )
    return ToolResult(
        True,
        f"approval #{approval.id} requested; a person will decide, and the decision is "
        "commented on this task",
        changed=True,
    )


async def _request_deploy(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    target = next((d for d in ctx.config.deploys if d.id == args["target"]), None)
    if target is None:
        known = ", ".join(d.id for d in ctx.config.deploys) or "none configured"
        return refused(f'unknown deploy target "{args["target"]}" (known: {known})')
    ref = args.get("ref") or None
    if ref is not None and not deploys.valid_ref(ref):
        return refused("ref must be a commit, tag or version: letters, digits and ._/-")
    key = f"deploy:{ctx.run_id}:{target.id}:{key_part(ref or '')}"
    async with ctx.db.claim() as session:
        busy = await deploys.in_flight(session, target.id, idempotency_key=key)
        if busy is not None:
            return refused(f"{busy}; wait for its report instead of asking again")
        policy = ctx.approval_policy
        approvers, required = policy.deploy_approvers(target.id)
        approval = await approvals.request(
            session,
            policy=policy,
            kind="deploy",
            payload=deploys.payload(
                target.id, ref, shown_command(ctx.config, target), args["reason"]
            ),
            requested_by=ctx.actor,
            task_id=ctx.task_id,
            approvers=approvers,
            required=required,
            idempotency_key=key,
        )
    return ToolResult(
        True,
        f"deploy approval #{approval.id} requested; an owner decides, and the deploy's report "
        "is commented on this task",
        changed=True,
    )


TOOLS: tuple[Tool, ...] = (
    Tool(
        "request_approval",
        "Ask a person to approve an action, a publication or a deploy.",
        _schema(
            ["kind", "summary"],
            kind={"enum": ["action", "publish"]},
            summary=_text("what exactly should be approved", 500),
            details=_text("details a person needs to decide"),
        ),
        "request_approval",
        _request_approval,
    ),
    Tool(
        "request_deploy",
        "Ask an owner to approve deploying a configured target; the deploy runs, is verified "
        "and rolled back on failure by the system, never by you.",
        _schema(
            ["target", "reason"],
            target=_text("the deploy target's id from the config", 32),
            ref=_text("commit, tag or version to deploy, if any", 128),
            reason=_text("why deploy now", 500),
        ),
        "request_deploy",
        _request_deploy,
    ),
)
