"""Telegram handlers: one Router per feature. `get_routers` is used by the process and tests;
it builds new Routers on each call (see handlers.registry.Routes)."""

from __future__ import annotations

from aiogram import Router

from handlers import (
    agents,
    approvals,
    budget,
    coding,
    costs,
    errors,
    exec,
    fallback,
    files,
    incidents,
    outbox,
    pipelines,
    publish,
    replies,
    start,
    status,
    tasks,
    triage,
    web,
)


def get_routers() -> list[Router]:
    """Feature routers in order, newly built; the fallback for unknown commands comes last."""
    features = [
        errors.router,
        start.router,
        status.router,
        outbox.router,
        tasks.router,
        agents.router,
        budget.router,
        costs.router,
        coding.router,
        exec.router,  # before approvals: its Always allow button is an approval button
        approvals.router,
        files.router,
        publish.router,
        pipelines.router,
        incidents.router,
        triage.router,
        web.router,
        replies.router,
        fallback.router,
    ]
    return [routes.build() for routes in features]
