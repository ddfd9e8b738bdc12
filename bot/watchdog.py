"""The watchdog: monitoring the monitoring.

`find_problems` reads the database (job beats, run leases, agent heartbeats, nodes that
stopped renewing) and the clock of a configured HTTP endpoint. Inside `fleet run` the
`watchdog` job turns each problem into an incident (fingerprint `watchdog:<key>`, P2, resolved
when the problem clears) and an oversight notice for the hub. Because the watchdog dies with
the process, `fleet watchdog --once` runs the same checks from outside and, when the main
process is down or stuck, posts straight to the Bot API (the outbox sender is dead then); its
exit code is 1 when it found problems.
"""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
from aiogram.exceptions import TelegramAPIError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Config, duration_text
from bot.redact import Redactor
from bot.views import watchdog as views
from storage import inbox, incidents, jobs, nodes, outbox
from storage.db import Database
from storage.models import AgentState, Incident, Run, utcnow
from storage.statuses import RunStatus

log = logging.getLogger(__name__)

# Jobs `fleet run` always has; with no recent beat of these the process is down or stuck.
CORE_JOBS = ("telegram-poll", "watchdog")
# Outside the process, beats older than this belong to jobs that no longer exist.
FORGOTTEN = timedelta(days=7)
EXIT_PROBLEMS = 1
ONCE_PREFIX = "watchdog-once:"


@dataclass(frozen=True)
class Problem:
    key: str
    text: str


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


async def find_problems(
    db: Database,
    config: Config,
    *,
    expected: dict[str, int] | None,
    since: datetime | None,
    skip: frozenset[str] = frozenset(),
) -> list[Problem]:
    """Problems found now. `expected` maps the jobs the process registered to their interval
    (None: outside the process, judge every recent beat); `since` is the process start (a job
    is not late before it had the time to run)."""
    now = utcnow()
    found: list[Problem] = []
    async with db.session() as session:
        beats = {beat.job_id: beat for beat in await jobs.all_beats(session)}
        running = list(
            (await session.execute(select(Run).where(Run.status == RunStatus.RUNNING))).scalars()
        )
        paused = set(
            (await session.execute(select(AgentState.agent_id).where(AgentState.paused))).scalars()
        )
        last_heartbeats = await _last_heartbeats(session)
    if expected is None:
        expected = {
            job_id: beat.interval_s
            for job_id, beat in beats.items()
            if beat.interval_s
            and (seen := _latest(beat.last_start, beat.registered_at)) is not None
            and now - seen < FORGOTTEN
        }
        for job_id in CORE_JOBS:
            if job_id not in expected:
                found.append(Problem(f"job:{job_id}", f"job {job_id} has never run"))
    for job_id, interval in sorted(expected.items()):
        if job_id in skip:
            continue
        beat = beats.get(job_id)
        reference = beat.last_success if beat is not None else None
        # A job gets its first interval after the process (re)started before it is late.
        started = since if since is not None else beat.registered_at if beat else None
        if started is not None and (reference is None or reference < started):
            reference = started
        if reference is None:
            reference = beat.last_start if beat is not None else None
        if reference is None or (now - reference).total_seconds() <= 2 * interval:
            continue
        late = _age((now - reference).total_seconds())
        text = f"job {job_id} (every {_age(interval)}) has not finished successfully for {late}"
        if beat is not None and beat.last_start is not None:
            if beat.last_finish is None or beat.last_finish < beat.last_start:
                text += "; it is still running (hung?)"
            if beat.last_error and beat.last_error_at and beat.last_error_at >= reference:
                text += f"; last error: {beat.last_error[:300]}"
        found.append(Problem(f"job:{job_id}", text))

    lease = timedelta(seconds=config.runtime.lease_seconds)
    for run in running:
        if run.lease_expires_at is not None and run.lease_expires_at < now - lease:
            expired = _age((now - run.lease_expires_at).total_seconds())
            found.append(
                Problem(
                    f"lease:{run.id}",
                    f"run #{run.id} of {run.agent_id} holds a lease that expired {expired} ago",
                )
            )

    for agent in config.agents:
        if not agent.heartbeat or agent.id in paused:
            continue
        quiet = agent.quiet_hours.length if agent.quiet_hours else timedelta(0)
        window = 2 * agent.heartbeat + lease + quiet
        last = last_heartbeats.get(agent.id)
        reference = max((t for t in (last, since) if t is not None), default=None)
        if reference is not None and now - reference > window:
            found.append(
                Problem(
                    f"heartbeat:{agent.id}",
                    f"agent {agent.id} has had no successful heartbeat for "
                    f"{_age((now - reference).total_seconds())} "
                    f"(heartbeat {duration_text(agent.heartbeat)})",
                )
            )

    found += await silent_nodes(db, config)

    skew = await clock_skew(config)
    if skew is not None and abs(skew) > config.watchdog.max_clock_skew.total_seconds():
        found.append(
            Problem(
                "clock",
                f"the clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} "
                f"{config.watchdog.clock_url}",
            )
        )
    return found


async def silent_nodes(db: Database, config: Config) -> list[Problem]:
    """A problem per node that stopped renewing without a clean stop (one incident each,
    resolved when it renews again): its runs' leases expire and are retried on a node that
    may run their agent; the agents only it may run wait for it."""
    renew_every = config.node.renew_every
    async with db.session() as session:
        every = await nodes.all_nodes(session, stopped=False)
        gone = await nodes.silent(session, alive_within=nodes.alive_within(renew_every))
    alive = {node.name for node in every} - {node.name for node in gone}
    now = utcnow()
    found: list[Problem] = []
    for node in gone:
        waiting = sorted(
            agent.id
            for agent in config.agents
            if node.name in agent.runs_on and not alive & set(agent.runs_on)
        )
        text = (
            f"node {node.name} (pid {node.pid} on {node.host}) has not renewed for "
            f"{_age((now - node.last_seen).total_seconds())}; its runs are retried on the "
            "other nodes"
        )
        if waiting:
            text += f", except those of {', '.join(waiting)}, which wait for it"
        found.append(Problem(f"node:{node.name}", text))
    return found


def _latest(*times: datetime | None) -> datetime | None:
    return max((t for t in times if t is not None), default=None)


async def _last_heartbeats(session: AsyncSession) -> dict[str, datetime]:
    """Each agent's last successful (or idle-skipped) run, in one query."""
    stmt = (
        select(Run.agent_id, func.max(Run.finished_at))
        .where(Run.status.in_((RunStatus.SUCCEEDED, RunStatus.SKIPPED)))
        .group_by(Run.agent_id)
    )
    return {agent_id: at for agent_id, at in (await session.execute(stmt)).all() if at}


async def clock_skew(config: Config) -> float | None:
    """Our clock minus the `Date` header of `watchdog.clock_url`, in seconds; None if not
    configured or not reachable (logged: a dead endpoint is not a clock problem)."""
    url = config.watchdog.clock_url
    if not url:
        return None
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.head(url, allow_redirects=False) as response,
        ):
            before = time.time()
            header = response.headers.get("Date")
    except (aiohttp.ClientError, TimeoutError) as err:
        log.warning("clock check: cannot reach %s: %s", url, err)
        return None
    if not header:
        log.warning("clock check: %s sent no Date header", url)
        return None
    try:
        theirs = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        log.warning("clock check: %s sent an unreadable Date header %r", url, header)
        return None
    return before - theirs


class Watchdog:
    """The in-process `watchdog` job."""

    def __init__(self, config: Config, db: Database, expected: dict[str, int]) -> None:
        self.config = config
        self.db = db
        self.expected = expected  # filled by the scheduler as jobs are registered
        self.started = utcnow()

    async def run(self) -> None:
        problems = await find_problems(
            self.db,
            self.config,
            expected=self.expected,
            since=self.started,
            skip=frozenset({"watchdog"}),
        )
        keys = {f"watchdog:{p.key}" for p in problems}
        hub = self.config.hub
        async with self.db.claim() as session:
            for problem in problems:
                incident, opened = await incidents.open_incident(
                    session,
                    fingerprint=f"watchdog:{problem.key}",
                    severity="P2",
                    title=problem.text,
                    source="watchdog",
                )
                if opened:
                    log.warning("watchdog: %s", problem.text)
                    if hub is not None:
                        await inbox.oversight(
                            session,
                            hub.id,
                            f"Watchdog: {problem.text} (incident #{incident.id})",
                            dedup_key=f"oversight:incident:{incident.id}",
                        )
            stmt = select(Incident).where(
                Incident.status.in_(incidents.LIVE), Incident.fingerprint.like("watchdog:%")
            )
            for incident in (await session.execute(stmt)).scalars():
                if incident.fingerprint not in keys:
                    await incidents.resolve_id(session, incident.id, actor="watchdog")


async def once(config: Config) -> int:
    """`fleet watchdog --once`: 0 when all is well, 1 with problems (printed, and posted
    straight to the alerts feed when the main process looks down or stuck)."""
    from bot.telegram import make_bot

    db = Database(config.database.url)

    db.redact_with(Redactor(config.secret_values()))
    try:
        await db.migrate()
        problems = await find_problems(db, config, expected=None, since=None)
        for problem in problems:
            print(problem.text)
        if not problems:
            print("ok")
            return 0
        core = {f"job:{job_id}" for job_id in CORE_JOBS}
        if not core & {p.key for p in problems}:
            # The main process is alive; its own watchdog posts these.
            return EXIT_PROBLEMS
        feed = config.feed("alerts")
        if feed is None:
            log.warning("no alerts feed configured; watchdog problems not posted")
            return EXIT_PROBLEMS
        text = views.down([p.text for p in problems])
        # One post per repeat_interval while the process is down, however often this runs.
        to = outbox.Destination(feed.chat_id, feed.topic, "alerts")
        repeat = config.alerting.repeat_interval
        key = f"{ONCE_PREFIX}{int(time.time())}"
        async with db.claim() as session:
            last = await outbox.latest(session, ONCE_PREFIX)
            row = None
            if last is None or utcnow() - last.created_at >= repeat:
                row = await outbox.enqueue(session, to, text, dedup_key=key)
            if row is not None:
                # Claimed as sent now, so a sender that comes back does not post it again.
                await outbox.mark_sent(session, row)
        if row is None:
            print("already posted within repeat_interval; not posted again")
            return EXIT_PROBLEMS
        bot = make_bot(config)
        try:
            await bot.send_message(feed.chat_id, text, message_thread_id=feed.topic)
        except (TelegramAPIError, aiohttp.ClientError) as err:
            # Not lost: a pending copy goes out when the main process's sender is back.
            print(f"could not post to Telegram ({err}); queued for the main process")
            async with db.session() as session:
                await outbox.enqueue(session, to, text, dedup_key=f"{key}:queued")
        finally:
            await bot.session.close()
        return EXIT_PROBLEMS
    finally:
        await db.dispose()
