"""The tool that runs a program under the agent's exec policy: now, never, or after a
person's approval."""

from __future__ import annotations

from typing import Any

from agents import commands, exec_policy, files
from agents.tools_base import Tool, ToolContext, ToolResult, _schema, key_part, refused
from agents.tools_files import _confinement
from storage import approvals
from storage import exec as exec_runs
from storage.statuses import ExecStatus


async def _run_command(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    policy = ctx.agent.exec
    if policy is None:
        return refused("you have no exec policy: no commands")
    argv: list[str] = args["argv"]
    if any("\x00" in word for word in argv):
        return refused("argv contains a NUL character")
    maximum = int(policy.max_timeout.total_seconds())
    timeout = args.get("timeout_s", min(commands.DEFAULT_TIMEOUT, maximum))
    if timeout > maximum:
        return refused(f"timeout_s {timeout} is over your maximum of {maximum} s")
    try:
        cwd = _confinement(ctx).resolve(args.get("cwd", "workspace:"), write=True)
    except files.FileRefused as err:
        return refused(f"cwd: {err}")
    if not cwd.path.is_dir():
        return refused(f"cwd: {cwd.shown} is not a folder")
    async with ctx.db.session() as session:
        rules = await exec_runs.live_rules(session, ctx.agent.id)
    decision = exec_policy.decide(policy, argv, rules)
    line = exec_policy.joined(argv)
    if decision.verdict == "deny":
        return refused(f"`{line}` is denied by your exec policy ({decision.why})")
    where = f"{cwd.root.id}:{cwd.relative}"
    if decision.verdict == "ask":
        async with ctx.db.claim() as session:
            approval = await approvals.request(
                session,
                policy=ctx.approval_policy,
                kind="exec",
                payload=exec_runs.payload(
                    argv=argv,
                    cwd=where,
                    agent_id=ctx.agent.id,
                    task_id=ctx.task_id,
                    timeout_s=timeout,
                ),
                requested_by=ctx.actor,
                task_id=ctx.task_id,
                idempotency_key=f"exec:{ctx.run_id}:{key_part(line + chr(0) + where)}",
            )
        return ToolResult(
            True,
            f"waiting for approval #{approval.id}: `{line}` needs a person's approval "
            f"({decision.why}). This run ends now; once decided, the system runs it (you do "
            "not) and you are woken with the result or the reason it was denied",
            changed=True,
            ends_run=True,
        )
    async with ctx.db.claim() as session:
        run = await exec_runs.start(
            session,
            agent_id=ctx.agent.id,
            task_id=ctx.task_id,
            run_id=ctx.run_id,
            argv=argv,
            cwd=where,
            timeout_s=timeout,
            allowed_by=decision.why[:64],
        )
    result = await commands.execute(ctx.config, ctx.db, run)
    async with ctx.db.claim() as session:
        await exec_runs.finish(
            session,
            run.id,
            result.status,
            exit_code=result.exit_code,
            duration_s=result.seconds,
            output_tail=result.output[-commands.SHOWN_TAIL :],
            artifact_id=result.artifact_id,
            note=commands.note(run, result),
        )
    return ToolResult(result.status != ExecStatus.FAILED, result.for_model(run), changed=True)


TOOLS: tuple[Tool, ...] = (
    Tool(
        "run_command",
        "Run a program: argv is a list (no shell), cwd a folder in a root you may write "
        "(default your workspace). Your exec policy decides: allowed commands run now, "
        "denied ones never, others wait for a person's approval (the run then ends and you "
        "are woken with the result).",
        _schema(
            ["argv"],
            argv={
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 4000},
                "minItems": 1,
                "maxItems": 200,
            },
            cwd={"type": "string", "maxLength": 1024},
            timeout_s={"type": "integer", "minimum": 1, "maximum": 86400},
        ),
        None,
        _run_command,
        offered=lambda agent: agent.exec is not None,
    ),
)
