"""/metrics: Prometheus text computed from the database at scrape time.

Each scrape reads a `Snapshot` (a handful of grouped queries) and renders it through a
prometheus_client collector registered on a registry of its own, so nothing is counted in
memory and every node shows what the shared database holds. Counters are totals of rows
still in the database (idle runs are pruned after `keep_idle_runs_days`; Prometheus's
rate() treats a drop as a reset)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config
from storage import incidents, usage
from storage.models import Approval, Incident, JobBeat, Outbox, Run, TriageItem, Usage, utcnow
from storage.statuses import ApprovalStatus, OutboxStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Snapshot:
    runs: list[tuple[str, str, int]] = field(default_factory=list)
    tokens: list[tuple[str, str, str, int]] = field(default_factory=list)
    cost: list[tuple[str, str, float]] = field(default_factory=list)
    budget_ratio: dict[str, float] = field(default_factory=dict)
    outbox_depth: int = 0
    outbox_oldest: float = 0.0
    poll_age: float | None = None
    rate_limited: int = 0
    incidents: dict[str, int] = field(default_factory=dict)
    approvals_pending: int = 0
    job_age: dict[str, float] = field(default_factory=dict)
    job_errors: dict[str, int] = field(default_factory=dict)
    triage: dict[str, int] = field(default_factory=dict)


async def snapshot(
    session: AsyncSession, config: Config, *, poll_age: float | None, rate_limited: int
) -> Snapshot:
    snap = Snapshot(poll_age=poll_age, rate_limited=rate_limited)
    runs = await session.execute(
        select(Run.agent_id, Run.status, func.count()).group_by(Run.agent_id, Run.status)
    )
    snap.runs = [(a, s, int(n)) for a, s, n in runs.all()]
    used = await session.execute(
        select(
            Usage.agent_id,
            Usage.model,
            func.sum(Usage.input_tokens),
            func.sum(Usage.output_tokens),
            func.sum(Usage.cache_write_tokens),
            func.sum(Usage.cache_read_tokens),
            func.sum(Usage.cost_usd),
        ).group_by(Usage.agent_id, Usage.model)
    )
    for agent, model, inp, out, write, read, usd in used.all():
        name = agent or usage.NO_AGENT
        for kind, value in (("input", inp), ("output", out), ("cache_write", write)):
            snap.tokens.append((name, model, kind, int(value or 0)))
        snap.tokens.append((name, model, "cache_read", int(read or 0)))
        snap.cost.append((name, model, float(usd or 0)))
    ids = [a.id for a in config.agents]
    spent = await usage.spend_since(session, usage.month_start(), ids)
    budgets = await usage.budgets(session, {a.id: a.budget_usd_month for a in config.agents})
    for agent_id, budget in budgets.items():
        if budget:
            snap.budget_ratio[agent_id] = float(spent.get(agent_id, Decimal(0)) / budget)
    depth, oldest = (
        await session.execute(
            select(func.count(), func.min(Outbox.created_at)).where(
                Outbox.status == OutboxStatus.PENDING
            )
        )
    ).one()
    snap.outbox_depth = int(depth)
    snap.outbox_oldest = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
    found = await session.execute(
        select(Incident.severity, func.count())
        .where(Incident.status.in_(incidents.LIVE))
        .group_by(Incident.severity)
    )
    snap.incidents = {severity: 0 for severity in incidents.SEVERITIES}
    snap.incidents.update({s: int(n) for s, n in found.all()})
    snap.approvals_pending = int(
        (
            await session.execute(
                select(func.count())
                .select_from(Approval)
                .where(Approval.status == ApprovalStatus.PENDING)
            )
        ).scalar_one()
    )
    now = utcnow()
    for beat in (await session.execute(select(JobBeat))).scalars():
        last = beat.last_finish or beat.last_start
        if last is not None:
            snap.job_age[beat.job_id] = (now - last).total_seconds()
        snap.job_errors[beat.job_id] = beat.failures
    verdicts = await session.execute(
        select(TriageItem.verdict, func.count()).group_by(TriageItem.verdict)
    )
    snap.triage = {v or "undecided": int(n) for v, n in verdicts.all()}
    return snap


class SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        runs = CounterMetricFamily(
            "fleet_runs",
            "Agent runs in the database, by agent and status",
            labels=["agent", "status"],
        )
        for agent, status, n in s.runs:
            runs.add_metric([agent, status], n)
        yield runs
        tokens = CounterMetricFamily(
            "fleet_model_tokens",
            "Model tokens by agent, model and kind",
            labels=["agent", "model", "kind"],
        )
        for agent, model, kind, n in s.tokens:
            tokens.add_metric([agent, model, kind], n)
        yield tokens
        cost = CounterMetricFamily(
            "fleet_model_cost_usd",
            "Model spend in USD by agent and model",
            labels=["agent", "model"],
        )
        for agent, model, usd in s.cost:
            cost.add_metric([agent, model], usd)
        yield cost
        ratio = GaugeMetricFamily(
            "fleet_budget_used_ratio", "This month's spend over the budget", labels=["agent"]
        )
        for agent, value in s.budget_ratio.items():
            ratio.add_metric([agent], value)
        yield ratio
        yield GaugeMetricFamily(
            "fleet_outbox_pending", "Outbound messages waiting to be sent", value=s.outbox_depth
        )
        yield GaugeMetricFamily(
            "fleet_outbox_oldest_age_seconds",
            "Age of the oldest message waiting to be sent (0 when none)",
            value=s.outbox_oldest,
        )
        if s.poll_age is not None:
            yield GaugeMetricFamily(
                "fleet_telegram_poll_age_seconds",
                "Seconds since the last completed getUpdates of this process",
                value=s.poll_age,
            )
        yield CounterMetricFamily(
            "fleet_telegram_rate_limited",
            "Telegram 429 answers to this process's sender",
            value=s.rate_limited,
        )
        open_incidents = GaugeMetricFamily(
            "fleet_incidents_open", "Live incidents by severity", labels=["severity"]
        )
        for severity, n in s.incidents.items():
            open_incidents.add_metric([severity], n)
        yield open_incidents
        yield GaugeMetricFamily(
            "fleet_approvals_pending",
            "Approvals waiting for a decision",
            value=s.approvals_pending,
        )
        age = GaugeMetricFamily(
            "fleet_job_beat_age_seconds", "Seconds since a scheduled job last ran", labels=["job"]
        )
        for job, seconds in s.job_age.items():
            age.add_metric([job], seconds)
        yield age
        errors = CounterMetricFamily(
            "fleet_job_errors", "Failed runs of a scheduled job", labels=["job"]
        )
        for job, n in s.job_errors.items():
            errors.add_metric([job], n)
        yield errors
        triage = GaugeMetricFamily(
            "fleet_triage_items", "Emails seen by triage, by verdict", labels=["verdict"]
        )
        for verdict, n in s.triage.items():
            triage.add_metric([verdict], n)
        yield triage


def render(snap: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)
