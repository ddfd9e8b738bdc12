"""Pipelines at work: starting a run (from /pipeline or the hub's start_pipeline tool) and the
worker that advances running runs from the database and keeps each run's message current.

The worker holds no state of its own: every pass reads the runs and their steps, so a process
killed at any point resumes where the database says, and a step starts at most once (the
transitions in storage.pipelines are conditional updates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config, PipelineConfig
from bot.views.pipelines import buttons, render
from storage import outbox, pipelines
from storage.db import Database
from storage.models import PipelineRun

log = logging.getLogger(__name__)

MOVES_PER_PASS = 10  # a run advanced at most this many times per pass (no busy loop)


def spec_of(config: Config, pipeline: PipelineConfig) -> pipelines.Spec:
    folder = next(f for f in config.folders if f.id == pipeline.folder)
    hub = config.hub
    return pipelines.Spec(
        id=pipeline.id,
        folder=folder.id,
        folder_path=config.folder_path(folder),
        steps=[
            pipelines.StepSpec(s.id, s.agent, s.produces, tuple(s.consumes), s.instructions)
            for s in pipeline.steps
        ],
        hub=hub.id if hub is not None else None,
        max_retries=hub.max_retries if hub is not None else 3,
    )


def find(config: Config, pipeline_id: str) -> PipelineConfig | None:
    return next((p for p in config.pipelines if p.id == pipeline_id), None)


def where_shown(config: Config, chat_id: int | None, topic: int | None) -> outbox.Destination:
    """The run's message goes where it was asked for, else to the activity feed."""
    if chat_id is not None:
        return outbox.Destination(chat_id, topic)
    feed = config.feed("activity")
    assert feed is not None  # show() posts nothing without one
    return outbox.Destination(feed.chat_id, feed.topic, "activity")


async def show(session: AsyncSession, config: Config, run: PipelineRun) -> None:
    """Queue the run's message as it is now: the first version, then edits of it."""
    fresh = await pipelines.get(session, run.id)
    if fresh is None or (fresh.chat_id is None and config.feed("activity") is None):
        return
    steps = await pipelines.steps_of(session, run.id)
    costs = await pipelines.costs(session, [s.task_id for s in steps if s.task_id is not None])
    version = await pipelines.mark_shown(session, run.id)
    first = f"pipeline:{run.id}:view"
    await outbox.enqueue(
        session,
        where_shown(config, fresh.chat_id, fresh.topic_id),
        render(fresh, steps, costs),
        buttons=buttons(fresh) or None,
        dedup_key=first if version == 1 else f"{first}:{version}",
        edit_of=None if version == 1 else first,
    )


async def start_run(
    config: Config,
    db: Database,
    pipeline: PipelineConfig,
    topic: str,
    *,
    requested_by: str,
    chat_id: int | None = None,
    topic_id: int | None = None,
) -> PipelineRun:
    async with db.claim() as session:
        run = await pipelines.start(
            session,
            spec_of(config, pipeline),
            topic,
            requested_by=requested_by,
            chat_id=chat_id,
            topic_id=topic_id,
        )
        await show(session, config, run)
    return run


class PipelineWorker:
    """Advances running pipeline runs until stopped (one per process; two would only race
    for the same conditional updates)."""

    def __init__(self, config: Config, db: Database, *, idle_poll: float = 1.0) -> None:
        self.config = config
        self.db = db
        self.idle_poll = idle_poll

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.pass_once()
            except Exception:  # the worker must outlive a database hiccup
                log.exception("pipeline pass failed; retrying in %.0f s", self.idle_poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.idle_poll)

    async def pass_once(self) -> None:
        async with self.db.session() as session:
            runs = await pipelines.running(session)
        for run in runs:
            pipeline = find(self.config, run.pipeline)
            if pipeline is None:
                continue
            spec = spec_of(self.config, pipeline)
            for _ in range(MOVES_PER_PASS):
                async with self.db.claim() as session:
                    moved = await pipelines.advance(session, run.id, spec)
                    if moved:
                        await show(session, self.config, run)
                if not moved:
                    break
                log.info("pipeline run #%d advanced", run.id)
