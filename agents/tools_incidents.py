"""The tools on incidents: raise one (up to P2, P1 as a request), and the hub's confirmation
of P1 or request for P0."""

from __future__ import annotations

from typing import Any

from agents.tools_base import ROW_ID, Tool, ToolContext, ToolResult, _schema, _text, refused
from bot.config import Config, Role
from storage import inbox, incident_gates, incidents, outbox
from storage.statuses import ApprovalStatus

# Fingerprints our own sources use (alerting, watchdog, triage); no agent may report under them.
RESERVED_FINGERPRINTS = ("check:", "watchdog:", "mailbox:")


async def _raise_incident(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    severity = args["severity"]
    if severity == "P0":
        return ToolResult(
            False,
            "refused: no agent may raise P0. Raise P1 (the hub confirms it) or lower; P0 "
            "needs the hub's confirmation and a person's approval",
            authority=True,
        )
    asked = args.get("fingerprint") or args["title"][:60]
    if asked.startswith(RESERVED_FINGERPRINTS):
        return refused(
            f'fingerprint "{asked}" is reserved for checks, the watchdog and mailboxes; '
            "use your own name for the problem"
        )
    # An agent's fingerprints live in its own namespace: an agent opening "check:site" at P3
    # first would otherwise own the check's incident, and the check's failures would reuse it.
    fingerprint = f"agent:{ctx.agent.id}:{asked}"
    async with ctx.db.claim() as session:
        incident, opened = await incidents.open_incident(
            session,
            fingerprint=fingerprint,
            severity=severity,
            title=args["title"],
            source=ctx.actor,
            details=args.get("details", ""),
        )
        hub = ctx.org.hub
        # Also for a later report asking P1 of an open incident; the dedup key sends it once.
        if incident.requested_severity == "P1" and hub is not None:
            await inbox.send(
                session,
                hub.id,
                kind="message",
                source=ctx.actor,
                body=(
                    f"{ctx.agent.id} asks for P1 on incident #{incident.id}: {incident.title}\n"
                    f"{incident.details}\nIf warranted, call confirm_incident with "
                    f"incident_id {incident.id} and severity P1 (P0 also needs a person)."
                ),
                dedup_key=f"incident-p1-request:{incident.id}",
            )
    if not opened:
        return ToolResult(
            True,
            f"incident #{incident.id} is already open (now {incident.severity}); not again",
        )
    note = " at P2; P1 waits for the hub's confirmation" if incident.requested_severity else ""
    return ToolResult(True, f"incident #{incident.id} opened{note}", changed=True)


async def _confirm_incident(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    hub = ctx.org.hub
    if hub is None or hub.id != ctx.agent.id:
        return ToolResult(False, "refused: only the hub confirms incidents", authority=True)
    incident_id, severity = args["incident_id"], args["severity"]
    async with ctx.db.claim() as session:
        incident = await incidents.get(session, incident_id)
        if incident is None or incident.status not in incidents.LIVE:
            return refused(f"incident #{incident_id} is not open")
        if await incidents.requested_by(session, incident, ctx.actor):
            # Otherwise the hub could raise P1 and confirm it itself: one agent paging alone.
            return refused(
                f"incident #{incident_id} was raised or escalated by you; you cannot also "
                f"confirm it. It stays {incident.severity} (posted to alerts, where people see "
                "it); another agent's report or a person escalates it"
            )
        if severity == "P1":
            if not await incident_gates.confirm_p1(session, incident_id, actor=ctx.actor):
                return refused(f"incident #{incident_id} is {incident.severity} already")
            return ToolResult(True, f"incident #{incident_id} is now P1", changed=True)
        approval = await incident_gates.request_p0(
            session,
            incident_id,
            policy=ctx.approval_policy,
            actor=ctx.actor,
            page=_page(ctx.config),
        )
        if approval is None:
            return refused(f"incident #{incident_id} is P0 already")
        if approval.status != ApprovalStatus.PENDING:
            return refused(
                f"P0 for incident #{incident_id} was {approval.status} already "
                f"(approval #{approval.id}); a person decided, do not ask again"
            )
        # approvals.request (in incident_gates.request_p0) posted it, with its buttons.
    return ToolResult(
        True,
        f"P0 for incident #{incident_id} needs a person: approval #{approval.id} requested; "
        "nobody is paged until it is approved",
        changed=True,
    )


def _page(config: Config) -> incident_gates.Page:
    feed = config.feed("alerts")
    alerts = None if feed is None else outbox.Destination(feed.chat_id, feed.topic, "alerts")
    people = [(p.telegram_id, p.name) for p in config.people if p.role.allows(Role.operator)]
    return incident_gates.Page(alerts, people)


TOOLS: tuple[Tool, ...] = (
    Tool(
        "raise_incident",
        "Open an incident. P3 is logged, P2 is posted to the alerts feed; P1 is a request the "
        "hub confirms; no agent may raise P0. Same fingerprint: the open incident is reused "
        "(raised if you ask a higher severity); check:, watchdog:, mailbox: are reserved.",
        _schema(
            ["title", "severity"],
            title=_text("what is wrong, in one line", 200),
            severity={"enum": ["P3", "P2", "P1", "P0"]},
            details=_text("the evidence: what you saw, where, when"),
            fingerprint={"type": "string", "minLength": 1, "maxLength": 100},
        ),
        None,  # any agent, up to P2; the gates above are in the handler
        _raise_incident,
    ),
    Tool(
        "confirm_incident",
        "Hub only: confirm an incident as P1, or ask for P0 (a person must approve before "
        "anyone is paged).",
        _schema(
            ["incident_id", "severity"],
            incident_id=ROW_ID,
            severity={"enum": ["P1", "P0"]},
        ),
        "confirm_incident",
        _confirm_incident,
    ),
)
