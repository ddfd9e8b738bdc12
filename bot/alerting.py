"""Health check jobs and the alerts feed.

Each check is its own job (`check:<id>`): probe, count, open or resolve its incident, and run
its `recover` command when the failure threshold is reached (at most `recover_max_per_hour`
times an hour, the wait doubling after each attempt). The `alerts` job posts open incidents
like Alertmanager groups them: the first waits `group_wait` so that a burst becomes one
message, later ones wait `group_interval` after the previous message, and an unacknowledged
P1/P0 is reminded of every `repeat_interval`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from bot.config import CheckConfig, Config
from bot.redact import Redactor
from bot.views.incidents import alert_buttons
from bot.views.text import esc, when
from integrations import checks
from storage import checks as check_state
from storage import incidents, outbox
from storage.db import Database
from storage.models import Incident, utcnow

log = logging.getLogger(__name__)

ICONS = {"P0": "🔴", "P1": "🟠", "P2": "🟡", "P3": "⚪"}
MAX_LISTED = 40


def fingerprint(check: CheckConfig) -> str:
    return f"check:{check.id}"


class Alerting:
    def __init__(self, config: Config, db: Database) -> None:
        """On a shared database a check without `on` is probed by one node per interval:
        the scheduler runs its job only on the node that claims the slot (storage.slots)."""
        self.config = config
        self.db = db
        self.redactor = Redactor(config.secret_values())

    @property
    def alerts(self) -> outbox.Destination | None:
        feed = self.config.feed("alerts")
        return None if feed is None else outbox.Destination(feed.chat_id, feed.topic, "alerts")

    def flush_every(self) -> int:
        """How often the alerts job looks: a few times per group_wait, 1..10 s."""
        return int(min(10, max(1, self.config.alerting.group_wait.total_seconds() // 3)))

    # --- checks ------------------------------------------------------------------------------

    async def run_check(self, check: CheckConfig) -> None:
        result = await checks.probe(check, self.config.own_secrets(), self.redactor)
        now = utcnow()
        threshold = False
        async with self.db.claim() as session:
            state = await check_state.record_probe(
                session, check.id, ok=result.ok, detail=result.detail, at=now
            )
            if not result.ok and state.consecutive_failures >= check.failures_before_alert:
                threshold = True
                await incidents.open_incident(
                    session,
                    fingerprint=fingerprint(check),
                    severity=check.severity,
                    title=f"{check.id}: {result.detail}",
                    source=f"check:{check.id}",
                    details=f"{state.consecutive_failures} failures in a row",
                )
            elif result.ok and state.consecutive_successes >= check.successes_before_resolve:
                await incidents.resolve(
                    session, fingerprint=fingerprint(check), actor=f"check:{check.id}"
                )
            attempt = None
            if threshold and check.recover:
                attempt = await check_state.claim_recovery(
                    session,
                    check.id,
                    now=now,
                    per_hour=check.recover_max_per_hour,
                    backoff=check.every,
                )
        if not result.ok:
            log.info("check %s failed: %s", check.id, result.detail)
        if attempt is not None and check.recover:
            await self._recover(check, attempt, now)

    async def _recover(self, check: CheckConfig, attempt: int, at: datetime) -> None:
        assert check.recover is not None
        log.warning("check %s: running its recover command (attempt %d)", check.id, attempt)
        done = await checks.run_command(
            check.recover,
            check.recover_timeout.total_seconds(),
            self.config.own_secrets(),
            self.redactor,
        )
        outcome = done.describe()
        limit = check.recover_max_per_hour
        text = (
            f"🔧 Recovery of <b>{esc(check.id)}</b> (attempt {attempt} of at most {limit} "
            f"this hour): {'succeeded' if done.ok else 'failed'}\n<code>{esc(outcome)}</code>"
        )
        if attempt >= limit:
            text += (
                f"\nNo more attempts until {esc(when(at + timedelta(hours=1), self.config.tz))}."
            )
        async with self.db.session() as session:
            await check_state.record_recovery(session, check.id, outcome)
            if self.alerts is not None:
                await outbox.enqueue(
                    session,
                    self.alerts,
                    text,
                    dedup_key=f"check-recover:{check.id}:{int(at.timestamp())}",
                )

    # --- the alerts feed ---------------------------------------------------------------------

    async def flush(self) -> None:
        now = utcnow()
        settings = self.config.alerting
        async with self.db.claim() as session:
            await incidents.end_silences(session, now)
            pending = await incidents.pending_alerts(session, now)
            to = self.alerts
            if pending and to is not None:
                oldest = min(i.opened_at for i in pending)
                last = await incidents.last_alert_at(session)
                waited = now - oldest >= settings.group_wait
                spaced = last is None or now - last >= settings.group_interval
                if waited and spaced:
                    await incidents.announce(
                        session,
                        [i.id for i in pending],
                        to=to,
                        text=self.render(pending),
                        buttons=alert_buttons(min(i.id for i in pending)),
                    )
            repeat = settings.repeat_interval.total_seconds()
            for incident in await incidents.due_reminders(session, now, repeat):
                await incidents.remind(session, incident, now)

    def render(self, found: list[Incident]) -> str:
        tz = self.config.tz
        if len(found) == 1:
            i = found[0]
            return (
                f"{ICONS.get(i.severity, '')} <b>{i.severity}</b> #{i.id} {esc(i.title)}\n"
                f"since {esc(when(i.opened_at, tz))} · {esc(i.source)}"
                + (f"\n{esc(i.details[:500])}" if i.details else "")
            )
        lines = [f"🚨 <b>{len(found)} incidents</b>"]
        for i in found[:MAX_LISTED]:
            lines.append(f"{ICONS.get(i.severity, '')} {i.severity} #{i.id} {esc(i.title)}")
        if len(found) > MAX_LISTED:
            lines.append(f"… and {len(found) - MAX_LISTED} more (/incidents)")
        return "\n".join(lines)
