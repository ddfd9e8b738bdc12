"""Who may decide an approval, and when it times out: one plain object, built from the config.

`ApprovalPolicy` holds everything the rows cannot say (the people and their roles, the kinds
only an owner decides, each deploy target's approvers, the default deadline and what happens
at it, the approvals feed, the time zone names are shown in). The process builds it once at
start (`from_config`) and passes it: to handlers through the dispatcher's workflow data, to
storage functions and the expiry sweep as an argument. Its rules read no database, so they are
tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from bot.config import Config
from bot.views.text import actor_name
from storage import outbox
from storage.models import Approval, ApprovalVote

# The kinds an approval may have (design.md's vocabulary); what each does is registered by its
# owner (storage.approvals.Kinds), not known here.
KINDS = ("deploy", "action", "publish", "incident_p0", "budget", "exec")
ROLES = ("viewer", "operator", "owner")
TOP: Mapping[str, Any] = {"role": "owner"}  # where escalation goes: the owners
APPROVE = "approve"
REJECT = "reject"
ON_TIMEOUT = ("escalate", "expire")
# Kinds that only an owner may decide, whatever the approval's approvers say.
OWNER_ONLY: Mapping[str, str] = {
    "deploy": "deploys need an owner",
    "incident_p0": "P0 incidents need an owner",
}
# Kinds whose requests get no default deadline: a budget stop waits for its owner.
NO_DEADLINE = frozenset({"budget"})


@dataclass(frozen=True)
class ApprovalPolicy:
    """Who decides each approval and how long it waits (see the module docstring)."""

    people: Mapping[int, tuple[str, str]] = field(default_factory=dict)  # id -> (name, role)
    feed: outbox.Destination | None = None
    tz: tzinfo = UTC
    deadline: timedelta | None = None  # default for requests that give none
    on_timeout: str = "expire"
    notify_private: bool = False
    owner_only: Mapping[str, str] = field(default_factory=lambda: dict(OWNER_ONLY))
    # deploy target -> (approvers, required) of its deploy approvals
    deploy_targets: Mapping[str, tuple[Mapping[str, Any], int]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> ApprovalPolicy:
        feed = config.feed("approvals")
        return cls(
            people={p.telegram_id: (p.name, p.role.value) for p in config.people},
            feed=outbox.Destination(feed.chat_id, feed.topic, "approvals") if feed else None,
            tz=config.tz,
            deadline=config.approvals.deadline,
            on_timeout=config.approvals.on_timeout,
            notify_private=config.approvals.notify_private,
            deploy_targets={d.id: (d.approval_approvers(), d.required) for d in config.deploys},
        )

    def name(self, actor: str | None) -> str:
        """A person's name for "person:<id>", the agent id for "agent:<id>" (`actor_name`)."""
        return actor_name(actor, {pid: person[0] for pid, person in self.people.items()})

    # -- requests ---------------------------------------------------------------------------

    def approvers_for(self, kind: str) -> dict[str, Any]:
        """Who decides a new approval of `kind` that names nobody: owners for the owner-only
        kinds, else operators and owners."""
        return {"role": "owner" if kind in self.owner_only else "operator"}

    def deploy_approvers(self, target: str) -> tuple[dict[str, Any], int]:
        """The approvers and the number of approvals a deploy of `target` needs."""
        approvers, required = self.deploy_targets.get(target, (TOP, 1))
        return dict(approvers), required

    def deadline_from(self, kind: str, now: datetime) -> datetime | None:
        """The default deadline of a request made at `now` that gives none."""
        if self.deadline is None or kind in NO_DEADLINE:
            return None
        return now + self.deadline

    # -- deciding ---------------------------------------------------------------------------

    def refusal(
        self,
        approval: Approval,
        person_id: int,
        approvers: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Why this person may not decide this approval, or None if they may. `approvers`: who
        decides now, when that differs from the row (see `approvers_now`)."""
        approvers = approval.approvers if approvers is None else approvers
        person = self.people.get(person_id)
        if person is None:
            return "you are not one of the fleet's people"
        name, role = person
        if role not in ROLES or role == "viewer":
            return "viewers cannot decide approvals"
        if approval.kind in self.owner_only and role != "owner":
            return self.owner_only[approval.kind]
        named = approvers.get("people")
        if named:
            allowed = {str(p).lower() for p in named}
            if name.lower() not in allowed and str(person_id) not in allowed:
                return f"this approval is for {', '.join(str(p) for p in named)}"
            return None
        needed = str(approvers.get("role", "operator"))
        if needed == "owner" and role != "owner":
            return f"{approval.kind} approval #{approval.id} needs an owner"
        return None

    def may_decide(self, approval: Approval, person_id: int) -> bool:
        """Whether this person may decide the approval as it stands (a press is checked
        again)."""
        return self.refusal(approval, person_id) is None

    def deciders(self, approval: Approval) -> list[int]:
        """The people who may decide the approval as it stands."""
        return [pid for pid in self.people if self.refusal(approval, pid) is None]

    def counted(
        self,
        approval: Approval,
        votes: Sequence[ApprovalVote],
        approvers: Mapping[str, Any] | None = None,
    ) -> list[ApprovalVote]:
        """The approve votes toward the quorum: only of people who may decide now. After an
        escalation to the owners, the operators' earlier votes stay recorded but count no
        more."""
        return [
            v
            for v in votes
            if v.vote == APPROVE and self.refusal(approval, v.person_id, approvers) is None
        ]

    # -- time -------------------------------------------------------------------------------

    @staticmethod
    def expired(approval: Approval, now: datetime) -> bool:
        return approval.deadline is not None and now >= approval.deadline

    def escalates(self, approval: Approval) -> bool:
        """Whether its deadline hands it to the owners (once; owners have no next group)."""
        return (
            approval.on_timeout == "escalate"
            and approval.escalated_at is None
            and dict(approval.approvers) != dict(TOP)
        )

    def escalating(self, approval: Approval, now: datetime) -> bool:
        """Past its deadline with an escalation due that the sweep has not made yet."""
        return self.expired(approval, now) and self.escalates(approval)

    def final(self, approval: Approval, now: datetime) -> bool:
        """The deadline closed the approval: it expires, rather than escalating, at the
        sweep."""
        return self.expired(approval, now) and not self.escalating(approval, now)

    def approvers_now(self, approval: Approval, now: datetime) -> Mapping[str, Any]:
        """Who decides at `now`. Between a deadline that escalates and the sweep that records
        it, the owners already do: a press then is judged as it would be a minute later."""
        return TOP if self.escalating(approval, now) else approval.approvers
