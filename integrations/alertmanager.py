"""Alertmanager's v2 API: a silence made there when a person silences an incident that came
from it, so the alert stops at the source too (and its other receivers hear it)."""

from __future__ import annotations

import logging
from datetime import datetime

import aiohttp

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=10)


class AlertmanagerError(Exception):
    """Alertmanager could not be reached or refused the request; the message says which."""


async def create_silence(
    url: str,
    labels: dict[str, str],
    *,
    starts: datetime,
    ends: datetime,
    created_by: str,
    comment: str,
) -> str:
    """Create a silence matching exactly `labels`; returns its id."""
    if not labels:
        raise AlertmanagerError("the alert has no labels to match")
    body = {
        "matchers": [
            {"name": name, "value": value, "isRegex": False, "isEqual": True}
            for name, value in sorted(labels.items())
        ],
        "startsAt": starts.isoformat(),
        "endsAt": ends.isoformat(),
        "createdBy": created_by,
        "comment": comment,
    }
    try:
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.post(f"{url}/api/v2/silences", json=body) as response,
        ):
            if response.status != 200:
                detail = (await response.text())[:200]
                raise AlertmanagerError(f"Alertmanager answered {response.status}: {detail}")
            data = await response.json()
    except (aiohttp.ClientError, TimeoutError) as err:
        raise AlertmanagerError(f"cannot reach Alertmanager at {url}: {err}") from err
    silence_id = data.get("silenceID") if isinstance(data, dict) else None
    if not isinstance(silence_id, str):
        raise AlertmanagerError("Alertmanager's answer has no silenceID")
    return silence_id
