"""Alerts from the monitoring people already run: each alert becomes an incident.

`POST /hooks/alertmanager/<source>`: Alertmanager's webhook (version 4). `POST
/hooks/alert/<source>`: a small shape for Grafana, Uptime Kuma and scripts:

    {"alerts": [{"key": "disk-full-db1", "status": "firing", "title": "Disk full on db1",
                 "severity": "critical", "details": "...", "labels": {"host": "db1"}}]}

(or one such alert object alone). `key` names the alert (its fingerprint), `status` is firing
(default) or resolved, `severity` is P3..P0 or a value mapped by the source's `severities`.
Each source has its own bearer token. A firing alert opens (or joins) the live incident with
fingerprint `<source>:<key>`, through storage.incidents like the checks' incidents (the same
gates, grouping and feed with buttons); a resolved one resolves it.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field

from bot.config import WebSource
from storage import incidents
from storage import web as web_store
from storage.db import Database

log = logging.getLogger(__name__)

MAX_ALERTS = 500  # in one request; Alertmanager's max_alerts caps what it sends too


class HookError(Exception):
    """The request is refused: `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Alert:
    key: str
    firing: bool
    title: str
    severity: str
    details: str = ""
    labels: dict[str, str] = field(default_factory=dict)


def authorized(source: WebSource, header: str) -> bool:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    expected = source.token.get_secret_value().encode("utf-8")
    return hmac.compare_digest(expected, token.strip().encode("utf-8"))


def _severity(source: WebSource, value: object) -> str:
    text = str(value or "")
    if text.upper() in incidents.SEVERITIES:
        return text.upper()
    return source.severities.get(text.lower(), source.default_severity)


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k)[:100]: str(v)[:500] for k, v in list(value.items())[:50]}


def alertmanager_alerts(source: WebSource, body: object) -> list[Alert]:
    """The alerts of an Alertmanager webhook (version 4)."""
    if not isinstance(body, dict) or not isinstance(body.get("alerts"), list):
        raise HookError(400, "expected Alertmanager's webhook JSON (version 4) with alerts")
    if str(body.get("version", "4")) != "4":
        raise HookError(400, f"webhook version {body.get('version')!r}; version 4 is supported")
    out = []
    for item in body["alerts"][:MAX_ALERTS]:
        if not isinstance(item, dict):
            raise HookError(400, "each alert must be an object")
        labels = _strings(item.get("labels"))
        annotations = _strings(item.get("annotations"))
        key = str(item.get("fingerprint") or "") or ",".join(
            f"{k}={v}" for k, v in sorted(labels.items())
        )
        if not key:
            raise HookError(400, "an alert has neither a fingerprint nor labels")
        name = labels.get("alertname", "alert")
        summary = annotations.get("summary") or annotations.get("description") or ""
        title = f"{name}: {summary}" if summary else name
        where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
        details = "\n".join(part for part in (where, annotations.get("description", "")) if part)
        out.append(
            Alert(
                key=key[:90],
                firing=item.get("status") != "resolved",
                title=title,
                severity=_severity(source, labels.get(source.severity_label)),
                details=details,
                labels=labels,
            )
        )
    return out


def simple_alerts(source: WebSource, body: object) -> list[Alert]:
    """The alerts of the documented small shape (see the module docstring)."""
    items = body.get("alerts") if isinstance(body, dict) and "alerts" in body else [body]
    if not isinstance(items, list):
        raise HookError(400, "alerts must be a list")
    out = []
    for item in items[:MAX_ALERTS]:
        if not isinstance(item, dict):
            raise HookError(400, "each alert must be an object")
        key, status = item.get("key"), item.get("status", "firing")
        if not isinstance(key, str) or not key.strip():
            raise HookError(400, 'each alert needs a "key" (a string naming it)')
        if status not in ("firing", "resolved"):
            raise HookError(400, f'"status" is {status!r}: use "firing" or "resolved"')
        title = item.get("title")
        if status == "firing" and (not isinstance(title, str) or not title.strip()):
            raise HookError(400, f'alert "{key[:60]}" is firing without a "title"')
        out.append(
            Alert(
                key=key.strip()[:90],
                firing=status == "firing",
                title=str(title or key),
                severity=_severity(source, item.get("severity")),
                details=str(item.get("details") or "")[:4000],
                labels=_strings(item.get("labels")),
            )
        )
    return out


async def apply(db: Database, source: WebSource, alerts: list[Alert]) -> dict[str, int]:
    """Open or resolve the incidents of `alerts`; counts of what happened."""
    actor = f"alert:{source.id}"
    counts = {"opened": 0, "updated": 0, "resolved": 0, "unchanged": 0}
    async with db.claim() as session:
        for alert in alerts:
            fingerprint = f"{source.id}:{alert.key}"
            if alert.firing:
                incident, new = await incidents.open_incident(
                    session,
                    fingerprint=fingerprint,
                    severity=alert.severity,
                    title=alert.title,
                    source=actor,
                    details=alert.details,
                )
                await web_store.record_alert(
                    session,
                    incident_id=incident.id,
                    source=source.id,
                    fingerprint=alert.key,
                    labels=alert.labels,
                )
                counts["opened" if new else "updated"] += 1
                continue
            live = await incidents.live(session, fingerprint)
            # The feed's resolved notice names the source: "✅ Resolved: … (prom says resolved)".
            if live is not None and await incidents.resolve_id(
                session, live.id, actor=actor, by=f"{source.id} says resolved"
            ):
                counts["resolved"] += 1
            else:
                counts["unchanged"] += 1
    log.info("alerts from %s: %s", source.id, counts)
    return counts
