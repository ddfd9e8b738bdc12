"""The approval policy alone, without a database: who may decide each kind, committees after an
escalation, deadlines and what happens at them, and the policy a config builds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_config
from storage.approval_policy import TOP, ApprovalPolicy
from storage.models import Approval, ApprovalVote
from tests.fleet import OPERATOR, OWNER, TOKEN, VIEWER, write_config

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PEOPLE = {
    OWNER: ("Ana", "owner"),
    OPERATOR: ("Ben", "operator"),
    VIEWER: ("Cy", "viewer"),
}
POLICY = ApprovalPolicy(people=PEOPLE, deadline=timedelta(hours=1), on_timeout="escalate")


def approval(kind: str = "action", **values: Any) -> Approval:
    fields: dict[str, Any] = {
        "id": 7,
        "kind": kind,
        "payload": {"summary": "Pay the invoice"},
        "requested_by": "agent:coder",
        "approvers": POLICY.approvers_for(kind),
        "required": 1,
        "on_timeout": "escalate",
        "status": "pending",
        "created_at": NOW,
        "deadline": NOW + timedelta(hours=1),
        "escalated_at": None,
        **values,
    }
    return Approval(**fields)


def test_viewers_and_strangers_never_decide() -> None:
    action = approval()
    assert POLICY.refusal(action, VIEWER) == "viewers cannot decide approvals"
    assert POLICY.refusal(action, 424242) == "you are not one of the fleet's people"
    assert POLICY.refusal(action, OPERATOR) is None
    assert POLICY.refusal(action, OWNER) is None


@pytest.mark.parametrize(
    ("kind", "why"),
    [("deploy", "deploys need an owner"), ("incident_p0", "P0 incidents need an owner")],
)
def test_owner_only_kinds_refuse_operators_whatever_the_approvers_say(kind: str, why: str) -> None:
    named = approval(kind, approvers={"people": ["Ben"]})
    assert POLICY.refusal(named, OPERATOR) == why
    assert POLICY.approvers_for(kind) == {"role": "owner"}


def test_named_approvers_by_name_or_id_case_insensitively() -> None:
    named = approval(approvers={"people": ["ben"]})
    assert POLICY.refusal(named, OPERATOR) is None
    assert POLICY.refusal(named, OWNER) == "this approval is for ben"
    by_id = approval(approvers={"people": [str(OWNER)]})
    assert POLICY.refusal(by_id, OWNER) is None
    assert POLICY.deciders(named) == [OPERATOR]


def test_an_owner_role_refuses_operators() -> None:
    owners = approval(approvers={"role": "owner"})
    assert POLICY.refusal(owners, OPERATOR) == "action approval #7 needs an owner"
    assert POLICY.may_decide(owners, OWNER)


def test_the_deadline_escalates_once_to_the_owners_then_expires() -> None:
    action = approval()
    before, after = NOW + timedelta(minutes=59), NOW + timedelta(hours=1)
    assert not POLICY.escalating(action, before) and not POLICY.final(action, before)
    assert POLICY.escalating(action, after) and not POLICY.final(action, after)
    # Between the deadline and the sweep that records the escalation, the owners decide.
    assert POLICY.approvers_now(action, after) == TOP
    assert POLICY.refusal(action, OPERATOR, POLICY.approvers_now(action, after)) is not None
    escalated = approval(escalated_at=after, approvers=dict(TOP))
    assert not POLICY.escalates(escalated) and POLICY.final(escalated, after)
    # Asked of the owners from the start: there is no next group, it expires.
    owners = approval(approvers={"role": "owner"})
    assert not POLICY.escalates(owners) and POLICY.final(owners, after)
    expire = approval(on_timeout="expire")
    assert POLICY.final(expire, after)


def test_only_votes_of_people_who_decide_now_count() -> None:
    action = approval(required=2)
    votes = [
        ApprovalVote(approval_id=7, person_id=OPERATOR, vote="approve"),
        ApprovalVote(approval_id=7, person_id=OWNER, vote="reject"),
        ApprovalVote(approval_id=7, person_id=VIEWER, vote="approve"),
    ]
    assert [v.person_id for v in POLICY.counted(action, votes)] == [OPERATOR]
    assert POLICY.counted(action, votes, TOP) == []


def test_default_deadlines_spare_budget_requests() -> None:
    assert POLICY.deadline_from("action", NOW) == NOW + timedelta(hours=1)
    assert POLICY.deadline_from("budget", NOW) is None
    assert ApprovalPolicy().deadline_from("action", NOW) is None


def test_a_config_builds_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-unused")
    extra = (
        '[[people]]\ntelegram_id = 1004\nname = "Dee"\nrole = "owner"\n'
        '[approvals]\ndeadline = "2h"\non_timeout = "escalate"\n'
        '[[deploys]]\nid = "site"\ncommand = "true"\napprovers = ["Ana", "Dee"]\nrequired = 2\n'
    )
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", extra=extra))
    policy = ApprovalPolicy.from_config(config)
    assert policy.people[OWNER][1] == "owner" and policy.name(f"person:{OWNER}") == "Ana"
    assert policy.deadline == timedelta(hours=2) and policy.on_timeout == "escalate"
    assert policy.deploy_approvers("site") == ({"people": ["Ana", "Dee"]}, 2)
    assert policy.deploy_approvers("unknown") == ({"role": "owner"}, 1)
    assert policy.feed is None or policy.feed.feed == "approvals"
