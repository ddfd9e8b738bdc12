"""Publications: what agents publish to publish targets, each a row that goes out once.

`create` runs the guards in order (limits, near-duplicates, quality gate) against the rows
already in the database, so every process shares them, and records the publication
`pending` its `publish` approval (or `approved` when the target needs none; `refused`, with
the reason, when a guard said no). The approval's effect (`PUBLISH`, registered at start,
see bot/app.py) approves or rejects it. The publish worker
(integrations/publish.py) then `claim`s it (`sending`, committed before the outside call:
the publication id is the call's idempotency key) and `finish`es it `published` only once the
result was verified, else `unverified` or `failed`. A row found `sending` after a crash
cannot say whether the call happened: it is reported `unknown`, never re-sent blindly.

Just over 400 lines: the guards, the lifecycle and the `publish` approval kind of one
feature; the outside calls are integrations.publish.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from difflib import SequenceMatcher
from html import escape

from sqlalchemy import func, select, update
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncSession

from storage import approvals, outbox
from storage.agent_notes import tell_agent
from storage.approval_kinds import Outcome, tell_task
from storage.approval_policy import ApprovalPolicy
from storage.db import touch
from storage.models import MAX_ID, Approval, Publication, utcnow
from storage.statuses import ApprovalStatus
from storage.statuses import PublicationStatus as Status
from storage.transition import change, claim_oldest

# Rows that count for the limits and the near-duplicate check: all that were, or may yet be,
# published.
LIVE = (
    Status.AWAITING,
    Status.APPROVED,
    Status.PUBLISHING,
    Status.PUBLISHED,
    Status.UNVERIFIED,
    Status.UNKNOWN,
)
ENDED = (Status.PUBLISHED, Status.UNVERIFIED, Status.UNKNOWN, Status.FAILED)
RECENT = 30  # publications of a target the near-duplicate check compares with
ACTOR = "system:publish"
PREVIEW = 3000  # characters of the text shown on the approval


@dataclass(frozen=True)
class Guards:
    """A publish target's guards (from its `[[publish_targets]]` table)."""

    min_gap: timedelta | None = None
    max_per_day: int | None = None
    dedup_threshold: float = 0.85
    min_chars: int = 1
    max_chars: int = 4000
    banned: Sequence[str] = field(default_factory=tuple)
    required: Sequence[str] = field(default_factory=tuple)
    approve: bool = True


_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> list[str]:
    """The words of `text`, case-folded and without accents or punctuation: two drafts that
    differ only in those are the same draft."""
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return _WORD.findall(plain.casefold())


def similarity(a: str, b: str, at_least: float = 0.0) -> float:
    """How alike two texts are, 0..1, word by word (one word changed in a post of twenty is
    0.95). Below `at_least` the answer is only an upper bound: the cheap bounds skip the full
    comparison of texts that cannot be that alike."""
    left, right = normalise(a), normalise(b)
    if not left and not right:
        return 1.0
    matcher = SequenceMatcher(None, left, right, autojunk=False)
    bound = matcher.real_quick_ratio()
    if bound < at_least:
        return bound
    bound = matcher.quick_ratio()
    if bound < at_least:
        return bound
    return matcher.ratio()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def quality_problems(text: str, guards: Guards) -> list[str]:
    """What the quality gate refuses, each said precisely."""
    problems: list[str] = []
    size = len(text.strip())
    if size < guards.min_chars:
        problems.append(f"{size} characters, under the minimum of {guards.min_chars}")
    if size > guards.max_chars:
        problems.append(f"{size} characters, over the maximum of {guards.max_chars}")
    folded = text.casefold()
    for word in guards.banned:
        if word.casefold() in folded:
            problems.append(f'contains the banned "{word}"')
    for word in guards.required:
        if word.casefold() not in folded:
            problems.append(f'lacks the required "{word}"')
    return problems


async def _limit_problem(
    session: AsyncSession, target: str, guards: Guards, now: datetime
) -> str | None:
    live = (Publication.target == target, Publication.status.in_(LIVE))
    if guards.max_per_day is not None:
        found = await session.execute(
            select(func.count(Publication.id)).where(
                *live, Publication.created_at > now - timedelta(days=1)
            )
        )
        count = int(found.scalar_one())
        if count >= guards.max_per_day:
            return (
                f"{target} already has {count} publications in the last 24 hours "
                f"(max_per_day = {guards.max_per_day})"
            )
    if guards.min_gap is not None:
        found = await session.execute(
            select(Publication.id, Publication.created_at)
            .where(*live, Publication.created_at > now - guards.min_gap)
            .order_by(Publication.id.desc())
            .limit(1)
        )
        row = found.first()
        if row is not None:
            wait = guards.min_gap - (now - row.created_at)
            minutes = max(1, int(wait.total_seconds() // 60))
            return (
                f"publication #{row.id} to {target} was less than min_gap ago; "
                f"try again in {minutes} min"
            )
    return None


async def _duplicate_problem(
    session: AsyncSession, target: str, body: str, guards: Guards
) -> str | None:
    found = await session.execute(
        select(Publication)
        .where(Publication.target == target, Publication.status.in_(LIVE))
        .order_by(Publication.id.desc())
        .limit(RECENT)
    )
    for earlier in found.scalars():
        score = similarity(body, earlier.text, guards.dedup_threshold)
        if score >= guards.dedup_threshold:
            start = " ".join(earlier.text.split())[:80]
            return (
                f"a near-duplicate ({score:.0%} alike) of publication #{earlier.id} "
                f'({earlier.status}, by {earlier.agent_id}): "{start}"'
            )
    return None


@dataclass(frozen=True)
class Created:
    publication: Publication
    refusal: str = ""  # set when a guard refused it (the row is then `refused`)


async def create(
    session: AsyncSession,
    *,
    policy: ApprovalPolicy,
    target: str,
    kind: str,
    guards: Guards,
    text: str,
    agent_id: str,
    task_id: int | None,
    source: str | None = None,
    step: str | None = None,
    now: datetime | None = None,
) -> Created:
    """Record a publication after its guards, and ask for its approval. Run in
    `Database.claim()`, so that two agents cannot both pass the limits at once."""
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        # SQLite's claim() holds the write lock already; on PostgreSQL two processes could
        # both count the same rows and pass the limits: one target, one checker at a time.
        await session.execute(
            sql("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(target.encode())}
        )
    refusal = await _limit_problem(session, target, guards, now)
    if refusal is None:
        refusal = await _duplicate_problem(session, target, text, guards)
    if refusal is None:
        problems = quality_problems(text, guards)
        if problems:
            refusal = "the quality gate: " + "; ".join(problems)
    status = (
        Status.REFUSED if refusal else (Status.AWAITING if guards.approve else Status.APPROVED)
    )
    publication = Publication(
        target=target,
        kind=kind,
        agent_id=agent_id,
        task_id=task_id,
        source=source,
        text=text,
        sha256=sha256_text(text),
        status=status,
        reason=refusal or "",
        created_at=now,
    )
    session.add(publication)
    await session.flush()
    if status == Status.AWAITING:
        approval = await approvals.request(
            session,
            policy=policy,
            kind="publish",
            payload=approval_payload(publication, step),
            requested_by=f"agent:{agent_id}",
            task_id=task_id,
            idempotency_key=f"publish:{publication.id}",
        )
        publication.approval_id = approval.id
    elif status == Status.APPROVED:
        touch(session, "publish")
    return Created(publication, refusal or "")


def approval_payload(publication: Publication, step: str | None) -> dict[str, object]:
    """What the approval shows: the text (its first PREVIEW characters; Details has the
    rest), who asked, which step, where it goes."""
    who = publication.agent_id + (f" (step {step})" if step else "")
    source = f" from {publication.source}" if publication.source else ""
    return {
        "publication": publication.id,
        "target": publication.target,
        "summary": f"publish #{publication.id} to {publication.target}{source} by {who}",
        "text": publication.text[:PREVIEW],
        "details": publication.text,
    }


class PublishKind:
    """The `publish` approval's effect: approved, the publish worker publishes it once;
    otherwise it is `rejected` and the agent hears why."""

    name = "publish"

    async def settled(
        self, session: AsyncSession, approval: Approval, policy: ApprovalPolicy
    ) -> Outcome | None:
        publication_id = int(approval.payload.get("publication", 0) or 0)
        approved = approval.status == ApprovalStatus.APPROVED
        decided = await change(
            session,
            Publication,
            publication_id,
            {
                "status": Status.APPROVED if approved else Status.REJECTED,
                "reason": "" if approved else (approval.reason or approval.status),
            },
            only_from=(Status.AWAITING,),
        )
        if decided.won and approved:
            touch(session, "publish")
        # Approved: the agent is woken by the publication's outcome, not by the approval.
        await tell_task(session, approval, policy, wake=not approved)
        return None


PUBLISH = PublishKind()


async def claim_next(
    session: AsyncSession, now: datetime | None = None, *, node: str | None = None
) -> Publication | None:
    """Mark the oldest approved publication `sending`, for `node`. Run in
    `Database.claim()`; the caller commits before making the outside call."""
    return await claim_oldest(
        session,
        Publication,
        {"status": Status.PUBLISHING, "started_at": now or utcnow(), "node": node},
        only_from=Status.APPROVED,
    )


async def set_chat(session: AsyncSession, publication_id: int, chat_id: int) -> None:
    """Where a telegram publication goes (its outbox row is queued in the same transaction)."""
    await session.execute(
        update(Publication)
        .where(Publication.id == publication_id, Publication.status == Status.PUBLISHING)
        .values(chat_id=chat_id)
    )


async def finish(
    session: AsyncSession,
    publication_id: int,
    status: str,
    *,
    reason: str = "",
    message_id: int | None = None,
    location: str | None = None,
    alert_to: outbox.Destination | None = None,
    now: datetime | None = None,
) -> bool:
    """Record how a sending publication ended; the agent's task hears it (which wakes the
    agent), and anything but `published` is an alert."""
    if status not in ENDED:
        raise ValueError(f"{status!r} is not an ended publication status")
    now = now or utcnow()
    finished = await change(
        session,
        Publication,
        publication_id,
        {
            "status": status,
            "reason": reason,
            "message_id": message_id,
            "location": location,
            "published_at": now if status != Status.FAILED else None,
        },
        only_from=(Status.PUBLISHING,),
    )
    publication = finished.row
    if not finished.won or publication is None:
        return False
    note = outcome_note(publication)
    if publication.approval_id is not None:
        await approvals.record(session, publication.approval_id, "publish", ACTOR, note)
    if status != Status.PUBLISHED and alert_to is not None:
        await outbox.enqueue(
            session, alert_to, f"⚠️ {escape(note)}", dedup_key=f"publication:{publication.id}:alert"
        )
    await tell_agent(
        session,
        publication.agent_id,
        publication.task_id,
        actor=ACTOR,
        body=note,
        dedup_key=f"publication:{publication.id}:{status}",
    )
    return True


def outcome_note(publication: Publication) -> str:
    """One line on how a publication ended, for the agent and the alerts feed."""
    head = f"Publication #{publication.id} to {publication.target}"
    if publication.status == Status.PUBLISHED:
        where = (
            f" (message {publication.message_id})"
            if publication.message_id is not None
            else (f" ({publication.location})" if publication.location else "")
        )
        return f"{head} is published and verified{where}."
    if publication.status == Status.UNKNOWN:
        return (
            f"{head} is unknown: {publication.reason} It is not re-published; check the "
            "target and publish again only if it is not there."
        )
    return f"{head} is {publication.status}: {publication.reason}"


async def publishing(
    session: AsyncSession, kind: str | None = None, *, node: str | None = None
) -> list[Publication]:
    """Publications being sent (with `node`: the ones that node claimed)."""
    stmt = select(Publication).where(Publication.status == Status.PUBLISHING)
    if node is not None:
        stmt = stmt.where(Publication.node == node)
    if kind is not None:
        stmt = stmt.where(Publication.kind == kind)
    found = await session.execute(stmt.order_by(Publication.id))
    return list(found.scalars())


async def get(session: AsyncSession, publication_id: int) -> Publication | None:
    if not 0 < publication_id <= MAX_ID:
        return None
    return await session.get(Publication, publication_id, populate_existing=True)


async def recent(
    session: AsyncSession, target: str | None = None, limit: int = 15
) -> list[Publication]:
    """The newest publications (of one target), newest first; refused ones too."""
    stmt = select(Publication)
    if target is not None:
        stmt = stmt.where(Publication.target == target)
    found = await session.execute(stmt.order_by(Publication.id.desc()).limit(limit))
    return list(found.scalars())
