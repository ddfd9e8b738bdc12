"""Incidents and their escalation gates, through the real agent tools and a real database:
no agent can raise P0, P1 waits for the hub, P0 waits for the hub and then a person.

`on_p0_decided` is called here on an approval whose status a small helper sets (the approvals
branch provides `approvals.decide`, which calls it in the decision's transaction)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from agents import tools
from agents.org import OrgChart
from agents.tools_base import ToolContext
from bot.alerting import Alerting
from bot.config import CheckConfig, Config, load_config
from storage import incident_gates, incidents, tasks
from storage.approval_policy import ApprovalPolicy
from storage.db import Database
from storage.models import Approval, InboxMessage, Incident, Outbox, TaskEvent, utcnow
from storage.statuses import IncidentStatus
from tests import pg
from tests.fleet import (
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    OWNER,
    TOKEN,
    VIEWER,
    write_config,
)

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
authority = ["assign", "comment", "subtask", "confirm_incident"]

[[agents]]
id = "security"
reports_to = "hub"
workspace = "workspaces/security"
model = "claude-sonnet-4-6"
authority = ["comment"]
"""


@dataclass
class Env:
    config: Config
    db: Database
    org: OrgChart
    task_id: int

    def ctx(self, agent_id: str, run_id: int = 1) -> ToolContext:
        agent = self.org.get(agent_id)
        assert agent is not None
        return ToolContext(
            config=self.config,
            org=self.org,
            db=self.db,
            agent=agent,
            run_id=run_id,
            task_id=self.task_id if agent_id != "hub" else None,
            workspace=self.config.path.parent / "workspaces" / agent_id,
            today=date(2026, 11, 25),
            now=datetime.now(UTC),
        )

    async def rows(self, model: Any, *where: Any) -> list[Any]:
        async with self.db.session() as session:
            found = await session.execute(select(model).where(*where).order_by(model.id))
            return list(found.scalars())


@pytest.fixture(params=["sqlite", "postgresql"])
async def env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Env]:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    async with contextlib.AsyncExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = await stack.enter_async_context(pg.temporary_database("incidents"))
        path = write_config(tmp_path, "http://127.0.0.1:9", agents=AGENTS, database_url=url)
        config = load_config(path)
        db = Database(config.database.url)
        stack.push_async_callback(db.dispose)
        await db.migrate()
        async with db.claim() as session:
            task = await tasks.create(
                session,
                title="Watch the logs",
                assignee="security",
                creator="agent:hub",
                max_retries=1,
            )
        yield Env(config, db, OrgChart(config), task.id)


async def escalation(env: Env, incident_id: int) -> list[dict[str, Any]]:
    """The incident's escalation record (`incidents.confirmations`)."""
    async with env.db.session() as session:
        return await incidents.confirmations(session, incident_id)


async def decide(db: Database, approval_id: int, status: str, by: str) -> None:
    """Stands in for approvals.decide: sets the decision, then calls the incident effect."""
    async with db.claim() as session:
        await session.execute(
            update(Approval)
            .where(Approval.id == approval_id, Approval.status == "pending")
            .values(status=status, decided_by=by, decided_at=datetime.now(UTC))
        )
        approval = await session.get(Approval, approval_id, populate_existing=True)
        assert approval is not None
        await incident_gates.on_p0_decided(session, approval)


async def test_an_agents_p0_is_refused_recorded_and_reported_to_the_hub(env: Env) -> None:
    result = await tools.execute(
        env.ctx("security"),
        "raise_incident",
        {"title": "Fleet-wide breach", "severity": "P0", "details": "one odd log line"},
    )
    assert not result.ok and result.authority
    assert "no agent may raise P0" in result.content
    assert await env.rows(Incident) == []
    [refusal] = await env.rows(TaskEvent, TaskEvent.kind != "created")
    assert refusal.actor == "agent:security" and "raise_incident" in refusal.body
    [notice] = await env.rows(InboxMessage)
    assert (notice.agent_id, notice.kind) == ("hub", "oversight")
    assert "security called raise_incident" in notice.body
    assert await env.rows(Outbox) == []


async def test_p1_is_a_request_until_the_hub_confirms_it(env: Env) -> None:
    raised = await tools.execute(
        env.ctx("security"),
        "raise_incident",
        {"title": "Login errors at 30%", "severity": "P1", "fingerprint": "login-errors"},
    )
    assert raised.ok, raised.content
    [incident] = await env.rows(Incident)
    assert (incident.severity, incident.requested_severity) == ("P2", "P1")
    [request] = await env.rows(InboxMessage)
    assert request.agent_id == "hub" and "confirm_incident" in request.body

    again = await tools.execute(
        env.ctx("security", run_id=2),
        "raise_incident",
        {"title": "Login errors at 31%", "severity": "P2", "fingerprint": "login-errors"},
    )
    assert again.ok and "already open" in again.content
    assert len(await env.rows(Incident)) == 1

    # The specialist cannot confirm its own request: refused for authority, hub told.
    own = await tools.execute(
        env.ctx("security"), "confirm_incident", {"incident_id": incident.id, "severity": "P1"}
    )
    assert not own.ok and own.authority
    assert [m.kind for m in await env.rows(InboxMessage)] == ["message", "oversight"]

    confirmed = await tools.execute(
        env.ctx("hub"), "confirm_incident", {"incident_id": incident.id, "severity": "P1"}
    )
    assert confirmed.ok, confirmed.content
    [incident] = await env.rows(Incident)
    assert (incident.severity, incident.requested_severity) == ("P1", None)
    assert (await escalation(env, incident.id))[0]["by"] == "agent:hub"
    twice = await tools.execute(
        env.ctx("hub"), "confirm_incident", {"incident_id": incident.id, "severity": "P1"}
    )
    assert not twice.ok and "P1 already" in twice.content


async def test_p0_posts_an_approval_and_pages_only_after_a_person_approves(env: Env) -> None:
    async with env.db.claim() as session:
        first, _ = await incidents.open_incident(
            session, fingerprint="db-down", severity="P2", title="Database down", source="x"
        )
        second, _ = await incidents.open_incident(
            session, fingerprint="disk-full", severity="P2", title="Disk full", source="x"
        )
    for incident in (first, second):
        asked = await tools.execute(
            env.ctx("hub"), "confirm_incident", {"incident_id": incident.id, "severity": "P0"}
        )
        assert asked.ok and "nobody is paged" in asked.content
    approvals = await env.rows(Approval)
    assert [(a.kind, a.status, a.payload["incident_id"]) for a in approvals] == [
        ("incident_p0", "pending", first.id),
        ("incident_p0", "pending", second.id),
    ]
    posted = await env.rows(Outbox)
    assert [o.feed for o in posted] == ["approvals", "approvals"]
    assert "Database down" in posted[0].text
    # Asking again reuses the pending approval.
    await tools.execute(
        env.ctx("hub", run_id=9), "confirm_incident", {"incident_id": first.id, "severity": "P0"}
    )
    assert len(await env.rows(Approval)) == 2

    await decide(env.db, approvals[1].id, "rejected", f"person:{OWNER}")
    [rejected] = await env.rows(Incident, Incident.id == second.id)
    assert rejected.severity == "P2"
    assert (await escalation(env, rejected.id))[-1]["p0"] == "rejected"
    asked = await tools.execute(
        env.ctx("hub", run_id=10), "confirm_incident", {"incident_id": second.id, "severity": "P0"}
    )
    assert not asked.ok and "was rejected already" in asked.content
    assert len(await env.rows(Outbox)) == 2  # nothing paged

    await decide(env.db, approvals[0].id, "approved", f"person:{OWNER}")
    [paged] = await env.rows(Incident, Incident.id == first.id)
    assert paged.severity == "P0"
    pages = await env.rows(Outbox, Outbox.dedup_key.like("incident-page:%"))
    assert sorted((p.chat_id, p.topic) for p in pages) == sorted(
        [(FEED_CHAT, ALERTS_TOPIC), (OWNER, None), (OPERATOR, None)]
    )
    assert all(p.chat_id != VIEWER for p in pages)
    assert f"tg://user?id={OWNER}" in pages[0].text and "Database down" in pages[0].text
    # A repeated effect (a retried transaction) pages nobody twice.
    async with env.db.claim() as session:
        approval = await session.get(Approval, approvals[0].id)
        assert approval is not None
        await incident_gates.on_p0_decided(session, approval)
    assert len(await env.rows(Outbox, Outbox.dedup_key.like("incident-page:%"))) == 3


async def test_open_incident_dedups_and_never_grants_above_p2(env: Env) -> None:
    async with env.db.claim() as session:
        one, opened = await incidents.open_incident(
            session, fingerprint="mailbox:work", severity="P0", title="IMAP down", source="x"
        )
        same, again = await incidents.open_incident(
            session, fingerprint="mailbox:work", severity="P2", title="IMAP down", source="x"
        )
    assert opened and not again and same.id == one.id
    assert (one.severity, one.requested_severity) == ("P2", "P0")
    async with env.db.claim() as session:
        assert await incidents.resolve(session, fingerprint="mailbox:work", actor="mailbox:work")
        assert not await incidents.resolve(session, fingerprint="mailbox:work", actor="x")
        reopened, fresh = await incidents.open_incident(
            session, fingerprint="mailbox:work", severity="P3", title="IMAP down", source="x"
        )
    assert fresh and reopened.id != one.id
    # Never announced (resolved before any alert): no resolved notice either.
    assert await env.rows(Outbox) == []


async def shift(db: Database, seconds: float, *, alerted: bool = False) -> None:
    """Move incidents' opened_at (or alerted_at and reminded_at) back in time: the test's
    stand-in for waiting out group_wait, group_interval or repeat_interval."""
    async with db.claim() as session:
        for incident in (await session.execute(select(Incident))).scalars():
            if alerted:
                if incident.alerted_at is not None:
                    incident.alerted_at -= timedelta(seconds=seconds)
                if incident.reminded_at is not None:
                    incident.reminded_at -= timedelta(seconds=seconds)
            else:
                incident.opened_at -= timedelta(seconds=seconds)


async def test_alerts_feed_groups_waits_silences_and_reminds(env: Env) -> None:
    alerting = Alerting(env.config, env.db)  # Alertmanager's defaults: 30 s, 5 min, 4 h

    async def open_(fingerprint: str, severity: str = "P2") -> Incident:
        async with env.db.claim() as session:
            incident, _ = await incidents.open_incident(
                session, fingerprint=fingerprint, severity=severity, title=fingerprint, source="t"
            )
        return incident

    async def alerts() -> list[Outbox]:
        return await env.rows(Outbox, Outbox.feed == "alerts")

    a, b = await open_("disk"), await open_("cpu")
    await open_("noise", "P3")
    short = await open_("blip")
    await alerting.flush()
    assert await alerts() == []  # inside group_wait
    async with env.db.claim() as session:
        assert await incidents.resolve(session, fingerprint="blip", actor="check:blip")
    await shift(env.db, 31)
    await alerting.flush()
    [burst] = await alerts()
    assert "2 incidents" in burst.text and "disk" in burst.text and "cpu" in burst.text
    assert "noise" not in burst.text and "blip" not in burst.text  # P3; resolved in group_wait
    assert burst.buttons is not None and len(burst.buttons) == 2
    keys = {i.fingerprint: i.alert_key for i in await env.rows(Incident)}
    assert keys["disk"] == keys["cpu"] == burst.dedup_key and keys["noise"] is None
    assert short.id not in {
        i.id for i in await env.rows(Incident, Incident.alert_key.is_not(None))
    }

    await open_("memory")
    await shift(env.db, 31)
    await alerting.flush()
    assert len(await alerts()) == 1  # group_interval (5 min) since the burst
    await shift(env.db, 301, alerted=True)
    await alerting.flush()
    assert "memory" in (await alerts())[-1].text

    async with env.db.claim() as session:
        await incidents.silence(session, "quiet", utcnow() + timedelta(hours=1), actor="t")
    await open_("check:quiet")
    await shift(env.db, 400)
    await shift(env.db, 400, alerted=True)
    await alerting.flush()
    assert not any("quiet" in o.text for o in await alerts())  # silenced before it fired

    async with env.db.claim() as session:
        assert await incident_gates.confirm_p1(session, a.id, actor="agent:hub")
    [p1] = await env.rows(Outbox, Outbox.dedup_key == f"incident-p1:{a.id}")
    assert p1.reply_to == burst.dedup_key
    await shift(env.db, 4 * 3600 + 1, alerted=True)
    await alerting.flush()
    await alerting.flush()
    reminders = await env.rows(Outbox, Outbox.dedup_key.like("incident-remind:%"))
    assert len(reminders) == 1 and reminders[0].reply_to == burst.dedup_key
    assert f"#{a.id}" in reminders[0].text
    async with env.db.claim() as session:
        assert await incidents.acknowledge(session, a.id, actor=f"person:{OPERATOR}")
        assert not await incidents.acknowledge(session, a.id, actor=f"person:{OPERATOR}")
    await shift(env.db, 4 * 3600 + 1, alerted=True)
    await alerting.flush()
    assert len(await env.rows(Outbox, Outbox.dedup_key.like("incident-remind:%"))) == 1

    async with env.db.claim() as session:
        assert await incidents.resolve_id(session, b.id, actor=f"person:{OPERATOR}")
    [done] = await env.rows(Outbox, Outbox.dedup_key == f"incident-resolved:{b.id}")
    assert done.reply_to == burst.dedup_key and "Resolved" in done.text


async def test_fingerprint_squatting_agent_cannot_take_a_checks_fingerprint(env: Env) -> None:
    squat = await tools.execute(
        env.ctx("security"),
        "raise_incident",
        {"title": "minor note", "severity": "P3", "fingerprint": "check:site"},
    )
    assert not squat.ok and "reserved" in squat.content
    assert await env.rows(Incident) == []
    own = await tools.execute(
        env.ctx("security", run_id=2),
        "raise_incident",
        {"title": "minor note", "severity": "P3", "fingerprint": "site"},
    )
    assert own.ok, own.content

    check = CheckConfig.model_validate(
        {"id": "site", "tcp": "127.0.0.1:9", "every": "1m", "failures_before_alert": 1}
    )
    alerting = Alerting(env.config, env.db)
    await alerting.run_check(check)
    await shift(env.db, 31)
    await alerting.flush()
    found = {i.fingerprint: i for i in await env.rows(Incident)}
    assert set(found) == {"agent:security:site", "check:site"}
    assert found["check:site"].severity == "P2" and found["agent:security:site"].severity == "P3"
    [alert] = await env.rows(Outbox, Outbox.feed == "alerts")
    assert alert.dedup_key == found["check:site"].alert_key


async def test_fingerprint_squatting_a_higher_report_raises_the_open_incident(env: Env) -> None:
    alerting = Alerting(env.config, env.db)
    first = await tools.execute(
        env.ctx("security"),
        "raise_incident",
        {"title": "disk filling", "severity": "P3", "fingerprint": "disk"},
    )
    assert first.ok, first.content
    await shift(env.db, 31)
    await alerting.flush()
    assert await env.rows(Outbox, Outbox.feed == "alerts") == []  # P3 is logged only

    worse = await tools.execute(
        env.ctx("security", run_id=2),
        "raise_incident",
        {"title": "disk full", "severity": "P1", "fingerprint": "disk"},
    )
    assert worse.ok and "now P2" in worse.content
    [incident] = await env.rows(Incident)
    assert (incident.severity, incident.requested_severity) == ("P2", "P1")
    events = [c.get("raised") or c.get("requested") for c in await escalation(env, incident.id)]
    assert events == ["P2", "P1"]
    [request] = await env.rows(InboxMessage)
    assert request.agent_id == "hub" and "confirm_incident" in request.body
    await alerting.flush()
    [alert] = await env.rows(Outbox, Outbox.feed == "alerts")
    [incident] = await env.rows(Incident)
    assert alert.dedup_key == incident.alert_key and "disk filling" in alert.text


async def test_hub_cannot_confirm_the_p1_it_raised_itself(env: Env) -> None:
    raised = await tools.execute(
        env.ctx("hub"), "raise_incident", {"title": "I feel like paging", "severity": "P1"}
    )
    assert raised.ok, raised.content
    [incident] = await env.rows(Incident)
    for severity in ("P1", "P0"):
        confirmed = await tools.execute(
            env.ctx("hub"), "confirm_incident", {"incident_id": incident.id, "severity": severity}
        )
        assert not confirmed.ok and "stays P2" in confirmed.content
    [incident] = await env.rows(Incident)
    assert (incident.severity, incident.source) == ("P2", "agent:hub")
    assert await env.rows(Approval) == []
    async with env.db.claim() as session:
        assert not await incident_gates.confirm_p1(session, incident.id, actor="agent:hub")
        page = incident_gates.Page(None, [])
        assert (
            await incident_gates.request_p0(
                session,
                incident.id,
                policy=ApprovalPolicy.from_config(env.config),
                actor="agent:hub",
                page=page,
            )
            is None
        )

    # The one who asked for P1 on someone else's incident cannot confirm it either.
    async with env.db.claim() as session:
        other, _ = await incidents.open_incident(
            session, fingerprint="db", severity="P2", title="db slow", source="check:db"
        )
        await incidents.open_incident(
            session, fingerprint="db", severity="P1", title="db down", source="agent:hub"
        )
        assert not await incident_gates.confirm_p1(session, other.id, actor="agent:hub")


async def test_expired_silences_end_an_incident_silenced_before_its_alert_is_announced(
    env: Env,
) -> None:
    alerting = Alerting(env.config, env.db)
    async with env.db.claim() as session:
        await incidents.open_incident(
            session, fingerprint="check:site", severity="P2", title="site down", source="x"
        )
        # silenced while the alert still waits out group_wait; the silence has since ended
        await incidents.silence(session, "site", utcnow() - timedelta(seconds=1), actor="t")
    await shift(env.db, 31)
    await alerting.flush()
    [incident] = await env.rows(Incident)
    assert incident.status == IncidentStatus.OPEN
    assert (await escalation(env, incident.id))[-1]["silence"] == "ended"
    [alert] = await env.rows(Outbox, Outbox.feed == "alerts")
    assert alert.dedup_key == incident.alert_key and "site down" in alert.text


async def test_expired_silences_a_reminded_p1_can_be_acknowledged(env: Env) -> None:
    alerting = Alerting(env.config, env.db)
    async with env.db.claim() as session:
        incident, _ = await incidents.open_incident(
            session, fingerprint="db", severity="P2", title="db down", source="t"
        )
    await shift(env.db, 31)
    await alerting.flush()
    async with env.db.claim() as session:
        assert await incident_gates.confirm_p1(session, incident.id, actor="agent:hub")
        await incidents.silence(session, "db", utcnow() - timedelta(seconds=1), actor="t")
    await shift(env.db, 4 * 3600 + 1, alerted=True)
    await alerting.flush()
    [reminder] = await env.rows(Outbox, Outbox.dedup_key.like("incident-remind:%"))
    assert f"#{incident.id}" in reminder.text
    async with env.db.claim() as session:
        assert await incidents.acknowledge(session, incident.id, actor=f"person:{OPERATOR}")
    [incident] = await env.rows(Incident)
    assert incident.status == IncidentStatus.ACKNOWLEDGED
    await shift(env.db, 4 * 3600 + 1, alerted=True)
    await alerting.flush()
    assert len(await env.rows(Outbox, Outbox.dedup_key.like("incident-remind:%"))) == 1

    # An acknowledged incident silenced and then unsilenced stays acknowledged.
    async with env.db.claim() as session:
        await incidents.silence(session, "db", utcnow() - timedelta(seconds=1), actor="t")
    await alerting.flush()
    [incident] = await env.rows(Incident)
    assert incident.status == IncidentStatus.ACKNOWLEDGED
    # A silenced one can be acknowledged directly (the silence may end before the next pass).
    async with env.db.claim() as session:
        await incidents.silence(session, "db", utcnow() + timedelta(hours=1), actor="t")
        assert await incidents.acknowledge(session, incident.id, actor=f"person:{OPERATOR}")
