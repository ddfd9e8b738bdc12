"""The tools that put work out: publish to a publish target, and start a pipeline run."""

from __future__ import annotations

from typing import Any

from agents import files
from agents import pipelines as pipeline_runs
from agents.tools_base import Tool, ToolContext, ToolResult, _schema, _text, refused
from agents.tools_files import _confinement, _unverified_file
from integrations import publish as publishing
from storage import pipelines, publications
from storage.statuses import PublicationStatus


async def _publish(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    target = next((t for t in ctx.config.publish_targets if t.id == args["target"]), None)
    if target is None:
        known = ", ".join(t.id for t in ctx.config.publish_targets) or "none configured"
        return refused(f'unknown publish target "{args["target"]}" (known: {known})')
    if ("file" in args) == ("text" in args):
        return refused("give either file (root:path) or text, not both or neither")
    source: str | None = None
    if "file" in args:
        try:
            found, text = _confinement(ctx).read(args["file"], 0, 100_000)
        except files.FileRefused as err:
            return refused(f"file: {err}")
        source = found.shown
        problem = await _unverified_file(ctx, source)
        if problem is not None:
            return refused(problem)
    else:
        text = args["text"]
    async with ctx.db.claim() as session:
        step = await pipelines.step_of_task(session, ctx.task_id)
        created = await publications.create(
            session,
            policy=ctx.approval_policy,
            target=target.id,
            kind=target.kind,
            guards=publishing.guards(target),
            text=text,
            agent_id=ctx.agent.id,
            task_id=ctx.task_id,
            source=source,
            step=step,
        )
    publication = created.publication
    if created.refusal:
        return refused(f"publication #{publication.id} to {target.id}: {created.refusal}")
    if publication.status == PublicationStatus.AWAITING:
        return ToolResult(
            True,
            f"publication #{publication.id} waits for approval #{publication.approval_id}; "
            "once a person decides, it is published (by the system, once) and you hear the "
            "outcome on this task",
            changed=True,
        )
    return ToolResult(
        True,
        f"publication #{publication.id} is queued; you hear the verified outcome on this task",
        changed=True,
    )


async def _start_pipeline(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    if not ctx.agent.hub:
        return ToolResult(False, "refused: only the hub starts pipelines", authority=True)
    pipeline = pipeline_runs.find(ctx.config, args["pipeline"])
    if pipeline is None:
        known = ", ".join(p.id for p in ctx.config.pipelines) or "none configured"
        return refused(f'unknown pipeline "{args["pipeline"]}" (known: {known})')
    run = await pipeline_runs.start_run(
        ctx.config, ctx.db, pipeline, args["topic"], requested_by=ctx.actor
    )
    return ToolResult(
        True,
        f"pipeline run #{run.id} of {pipeline.id} started (task #{run.task_id}); its steps "
        "run in order, and you are woken if one fails or blocks",
        changed=True,
    )


TOOLS: tuple[Tool, ...] = (
    Tool(
        "publish",
        "Publish a text, or a file (root:path), to a publish target. It passes the target's "
        "limits, a near-duplicate check against its recent publications and its quality "
        "gate, then usually a person's approval; the system publishes it once and verifies "
        "it, and you hear the outcome on this task.",
        _schema(
            ["target"],
            target={"type": "string", "maxLength": 32},
            text=_text("the text to publish", 100_000),
            file={"type": "string", "minLength": 1, "maxLength": 1024},
        ),
        "publish",
        _publish,
    ),
    Tool(
        "start_pipeline",
        "Start a run of a configured pipeline on a topic: its steps run in order, each "
        "agent woken when the files it needs are there.",
        _schema(
            ["pipeline", "topic"],
            pipeline={"type": "string", "maxLength": 32},
            topic=_text("what the run is about", 1000),
        ),
        None,
        _start_pipeline,
        offered=lambda agent: agent.hub,
    ),
)
