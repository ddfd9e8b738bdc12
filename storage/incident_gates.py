"""The escalation gates above P2: the hub confirms P1 (`confirm_p1`); P0 needs the hub's
confirmation (`request_p0`) and then a person's approval of kind `incident_p0`, whose effect
(`INCIDENT_P0`, registered at start) pages everyone once it is approved (`on_p0_decided`).
No single agent can page the whole fleet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.views import incidents as view
from storage import approvals, incidents, outbox
from storage.approval_kinds import Outcome
from storage.approval_policy import ApprovalPolicy
from storage.models import Approval, Incident, utcnow
from storage.statuses import ApprovalStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Page:
    """Where a P0 page goes, captured when the approval is requested (see `request_p0`)."""

    alerts: outbox.Destination | None
    people: list[tuple[int, str]]  # (telegram id, name) of owners and operators

    def to_payload(self) -> dict[str, Any]:
        alerts = None
        if self.alerts is not None:
            alerts = {"chat_id": self.alerts.chat_id, "topic": self.alerts.topic}
        return {"alerts": alerts, "people": [list(p) for p in self.people]}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Page:
        raw = data.get("alerts")
        alerts = None
        if isinstance(raw, dict):
            alerts = outbox.Destination(int(raw["chat_id"]), raw.get("topic"), "alerts")
        people = [(int(p[0]), str(p[1])) for p in data.get("people", [])]
        return cls(alerts, people)


async def confirm_p1(session: AsyncSession, incident_id: int, *, actor: str) -> bool:
    """The hub confirms P1: the incident becomes P1 (announced as such, or the announcement
    gets a reply saying so). False also when `actor` raised it or asked for P1 itself."""
    incident = await incidents.get(session, incident_id)
    if incident is None or await incidents.requested_by(session, incident, actor):
        return False
    won = await incidents.set_if(
        session,
        incident_id,
        incidents.LIVE,
        extra=Incident.severity.in_(incidents.UNGATED),
        severity="P1",
        requested_severity=None,
    )
    if won:
        incident = await incidents.fresh(session, incident_id)
        await incidents.record(
            session, incident_id, {"by": actor, "severity": "P1", "at": utcnow().isoformat()}
        )
        if incident.alert_key is not None:
            await incidents.reply_to_alert(
                session,
                incident.alert_key,
                view.now_p1(incident, actor),
                dedup_key=f"incident-p1:{incident.id}",
            )
    return won


async def request_p0(
    session: AsyncSession, incident_id: int, *, policy: ApprovalPolicy, actor: str, page: Page
) -> Approval | None:
    """The hub confirms P0: that asks a person (an approval of kind incident_p0). Nothing is
    paged until the approval is decided (`on_p0_decided`). None if the incident is not live,
    or if `actor` raised it or asked for its escalation itself."""
    incident = await incidents.get(session, incident_id)
    if incident is None or incident.status not in incidents.LIVE or incident.severity == "P0":
        return None
    if await incidents.requested_by(session, incident, actor):
        return None
    approval = await approvals.request(
        session,
        policy=policy,
        kind="incident_p0",
        payload={
            "incident_id": incident.id,
            "title": incident.title,
            "summary": f"Page everyone for P0 incident #{incident.id}: {incident.title}",
            "confirmed_by": actor,
            "page": page.to_payload(),
        },
        requested_by=actor,
        idempotency_key=f"incident-p0:{incident.id}",
    )
    await incidents.set_if(
        session,
        incident.id,
        incidents.LIVE,
        extra=Incident.severity != "P0",
        requested_severity="P0",
    )
    # Once per incident (the unique once_key), however many times the hub confirms it.
    await incidents.record(
        session,
        incident.id,
        {"by": actor, "severity": "P0", "at": utcnow().isoformat(), "approval": approval.id},
        once_key="P0",
    )
    return approval


async def on_p0_decided(session: AsyncSession, approval: Approval) -> None:
    """Called in the decision's transaction once an incident_p0 approval is approved,
    rejected or expired. Approved: the incident becomes P0 and the page goes out (alerts feed
    with every owner and operator mentioned, and each of them privately). Otherwise the
    decision is recorded on the incident and the severity stays."""
    incident_id = approval.payload.get("incident_id")
    incident = await incidents.get(session, int(incident_id)) if incident_id is not None else None
    if incident is None:
        log.warning("approval #%d: no incident %r to page for", approval.id, incident_id)
        return
    decision = {
        "p0": approval.status,
        "by": approval.decided_by,
        "approval": approval.id,
        "at": utcnow().isoformat(),
    }
    await incidents.record(session, incident.id, decision)
    if approval.status != ApprovalStatus.APPROVED:
        await incidents.set_if(
            session,
            incident.id,
            incidents.LIVE,
            extra=Incident.requested_severity == "P0",
            requested_severity=None,
        )
        log.info("incident #%d: P0 %s (approval #%d)", incident.id, approval.status, approval.id)
        return
    won = await incidents.set_if(
        session,
        incident.id,
        incidents.LIVE,
        extra=Incident.severity != "P0",
        severity="P0",
        requested_severity=None,
    )
    if not won:
        return
    page = Page.from_payload(approval.payload.get("page") or {})
    text = view.p0_page(
        incident,
        str(approval.payload.get("confirmed_by", "the hub")),
        approval.decided_by or "a person",
        page.people,
    )
    if page.alerts is not None:
        await outbox.enqueue(session, page.alerts, text, dedup_key=f"incident-page:{incident.id}")
    for person_id, _name in page.people:
        await outbox.enqueue(
            session,
            outbox.Destination(person_id),
            text,
            dedup_key=f"incident-page:{incident.id}:{person_id}",
        )
    log.warning("incident #%d paged as P0 (approval #%d)", incident.id, approval.id)


class IncidentP0Kind:
    """The `incident_p0` approval's effect (`on_p0_decided`)."""

    name = "incident_p0"

    async def settled(
        self, session: AsyncSession, approval: Approval, policy: ApprovalPolicy
    ) -> Outcome | None:
        await on_p0_decided(session, approval)
        return None


INCIDENT_P0 = IncidentP0Kind()
