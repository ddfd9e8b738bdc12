"""/status's view of jobs and runs in flight: readable names, one line while all is well."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.views.status import job_name, jobs_line, running_lines
from storage.models import JobBeat, Run

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)


def beat(job_id: str, *, failed: bool = False) -> JobBeat:
    ok = NOW - timedelta(minutes=5)
    return JobBeat(
        job_id=job_id,
        last_success=ok,
        last_error="database is locked" if failed else None,
        last_error_at=ok + timedelta(minutes=1) if failed else None,
    )


def test_job_names_are_readable() -> None:
    assert job_name("approvals-expire") == "approval reminders and expiry"
    assert job_name("triage-digest") == "daily email digest"
    assert job_name("check:site") == "check site"
    assert job_name("triage:work") == "mailbox work"
    assert job_name("heartbeat:hub") == "hub's heartbeat"
    assert job_name("something-new") == "something-new"


def test_all_jobs_ok_is_one_line_and_failing_ones_are_named() -> None:
    ids = ["telegram-poll", "runs-prune", "approvals-expire", "alerts", "watchdog"]
    assert jobs_line([beat(i) for i in ids], BERLIN) == "Jobs: all 5 OK"
    assert jobs_line([], BERLIN) == "Jobs: none scheduled"
    # Jobs of this process that have not run yet count as OK; beats of removed ones do not.
    scheduled = [*ids, "config-watch"]
    assert jobs_line([beat(i) for i in [*ids, "check:gone"]], BERLIN, scheduled) == (
        "Jobs: all 6 OK"
    )
    text = jobs_line([*(beat(i) for i in ids[:4]), beat("check:site", failed=True)], BERLIN)
    lines = text.splitlines()
    assert lines[0] == "Jobs: 4 of 5 OK; failing:"
    assert lines[1].startswith("⚠ check site (last success ")
    assert lines[1].endswith(" CET): database is locked")
    # A success after the error clears it.
    healed = beat("alerts", failed=True)
    healed.last_success = NOW
    assert jobs_line([healed], BERLIN) == "Jobs: all 1 OK"


def test_running_now_names_agent_task_and_since() -> None:
    assert running_lines([], BERLIN) == ["Running now: nothing"]
    run = Run(agent_id="coder", task_id=3, trigger="assignment", started_at=NOW)
    lines = running_lines([run, Run(agent_id="hub", trigger="schedule", started_at=NOW)], BERLIN)
    assert lines[0] == "Running now:"
    assert lines[1].startswith("• coder on task #3 since ")
    assert lines[1].endswith("17:00 CET (assignment)")
    assert lines[2].startswith("• hub since ") and lines[2].endswith("(schedule)")
