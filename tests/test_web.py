"""Mission Control over HTTP: sign-in, sessions, headers, pages, /metrics, /healthz and the
alert hooks, with aiohttp's test client against a real (migrated SQLite) database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.config import Config, ConfigError, load_config
from bot.web.auth import LINK, SESSION, Signer
from bot.web.server import make_app
from bot.web.sessions import COOKIE, signer_for
from storage import incidents, outbox, tasks
from storage import web as web_store
from storage.db import Database
from storage.models import Incident
from tests import pg
from tests.fleet import ANTHROPIC_KEY, OWNER, STRANGER, TOKEN, VIEWER, write_config
from tests.webtools import ALERT_TOKEN, web_extra

pg_database = pg.pg_database  # for the PostgreSQL test at the end

Client = TestClient[web.Request, web.Application]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:aiohttp.*")


def make_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> Config:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ALERT_TOKEN", ALERT_TOKEN)
    path = write_config(tmp_path, "http://127.0.0.1:9", extra=extra or web_extra(8088))
    return load_config(path)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    return make_config(tmp_path, monkeypatch)


@pytest.fixture
async def client(config: Config, db: Database) -> AsyncIterator[Client]:
    app = make_app(config, db, await signer_for(config, db))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def sign_in(client: Client, db: Database, config: Config) -> None:
    signer = await signer_for(config, db)
    link = signer.issue(LINK, OWNER, 300)
    form = await client.get(f"/signin?t={link}")
    assert form.status == 200
    assert "Sign in" in await form.text()
    done = await client.post("/signin", data={"t": link}, allow_redirects=False)
    assert done.status == 303, await done.text()
    cookie = done.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Max-Age=43200" in cookie


async def test_no_page_and_no_data_without_a_session(
    client: Client,
) -> None:
    for path in ("/", "/activity", "/tasks", "/tasks/1", "/approvals", "/costs", "/events"):
        response = await client.get(path)
        assert response.status == 401, path
        assert "/web" in await response.text()
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_a_link_signs_in_once_and_the_session_shows_the_fleet(
    client: Client, db: Database, config: Config
) -> None:
    await sign_in(client, db, config)
    page = await client.get("/")
    assert page.status == 200
    text = await page.text()
    assert "hub" in text
    assert "coder" in text
    assert "Ana (owner)" in text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in text
    assert TOKEN not in text
    assert ANTHROPIC_KEY not in text


async def test_a_used_or_expired_or_forged_link_is_refused(
    client: Client, db: Database, config: Config
) -> None:
    signer = await signer_for(config, db)
    link = signer.issue(LINK, OWNER, 300)
    first = await client.post("/signin", data={"t": link}, allow_redirects=False)
    assert first.status == 303
    client.session.cookie_jar.clear()
    again = await client.post("/signin", data={"t": link}, allow_redirects=False)
    assert again.status == 403
    assert "used already" in await again.text()
    expired = signer.issue(LINK, OWNER, 300, now=time.time() - 301)
    late = await client.post("/signin", data={"t": expired}, allow_redirects=False)
    assert late.status == 403
    assert "expired" in await late.text()
    assert (await client.get(f"/signin?t={expired}")).status == 200  # says so, signs no one in
    forged = Signer("another key").issue(LINK, OWNER, 300)
    assert (await client.post("/signin", data={"t": forged})).status == 403
    stranger = signer.issue(LINK, STRANGER, 300)
    assert (await client.post("/signin", data={"t": stranger})).status == 403
    # A session token is no sign-in link, and a link is no session.
    session = signer.issue(SESSION, OWNER, 300)
    assert (await client.post("/signin", data={"t": session})).status == 403
    client.session.cookie_jar.update_cookies({COOKIE: link})
    assert (await client.get("/")).status == 401


async def test_a_person_removed_or_given_another_role_loses_access_at_the_next_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    config = make_config(tmp_path, monkeypatch)
    signer = await signer_for(config, db)
    cookie = signer.issue(SESSION, VIEWER, 3600, role="viewer")
    source = config.path.read_text()
    config.path.write_text(source.replace("telegram_id = 1003", "telegram_id = 1009"))
    without = load_config(config.path)
    config.path.write_text(
        source.replace('name = "Cy"\nrole = "viewer"', 'name = "Cy"\nrole = "operator"')
    )
    promoted = load_config(config.path)
    assert promoted.person(VIEWER) is not None
    assert promoted.person(VIEWER).role == "operator"  # type: ignore[union-attr]
    for cfg, status in ((config, 200), (without, 401), (promoted, 401)):
        async with TestClient(TestServer(make_app(cfg, db, signer))) as client:
            client.session.cookie_jar.update_cookies({COOKIE: cookie})
            assert (await client.get("/")).status == status


async def test_every_page_renders_with_data(client: Client, db: Database, config: Config) -> None:
    async with db.session() as session:
        task = await tasks.create(
            session,
            title="Fix the <login> page",
            assignee="coder",
            creator="person:1001",
            max_retries=3,
        )
        await tasks.comment(session, task.id, actor="person:1001", body="see the logs")
        for n in range(60):
            await tasks.create(
                session, title=f"filler {n}", assignee="hub", creator="agent:hub", max_retries=3
            )
        await incidents.open_incident(
            session,
            fingerprint="check:site",
            severity="P2",
            title="site down",
            source="check:site",
        )
        activity = outbox.Destination(-100500, 5, "activity")
        await outbox.enqueue(
            session, activity, "▶️ coder: <b>started</b> #1", dedup_key="activity:1"
        )
        await outbox.enqueue(
            session,
            activity,
            "⏳ coder: reading files",
            dedup_key="activity:1:at:12.000",
            edit_of="activity:1",
        )
    await sign_in(client, db, config)
    for path, needle in (
        ("/", "coder"),
        ("/activity", "coder: started #1"),
        ("/tasks", "filler 59"),
        (f"/tasks/{task.id}", "see the logs"),
        (f"/tasks/{task.id}", "Fix the &lt;login&gt; page"),
        ("/approvals", "None pending"),
        ("/incidents", "site down"),
        ("/costs", "<svg"),
        ("/jobs", "No job has run yet"),
    ):
        response = await client.get(path)
        assert response.status == 200, path
        assert needle in await response.text(), path
    # A run's progress edits are not lines of their own.
    assert "reading files" not in await (await client.get("/activity")).text()
    first = await (await client.get("/tasks?status=todo")).text()
    assert "filler 59" in first
    assert "filler 9<" not in first
    more = first.split("/tasks?status=todo&amp;before=")[1].split('"')[0]
    second = await (await client.get(f"/tasks?status=todo&before={more}")).text()
    assert "filler 9<" in second
    assert (await client.get("/tasks?status=nope")).status == 400
    assert (await client.get("/tasks/999999")).status == 404
    assert (await client.get("/tasks/99999999999")).status == 404
    assert (await client.get("/static/live.js")).status == 200


async def test_live_activity_arrives_over_server_sent_events(
    client: Client, db: Database, config: Config
) -> None:
    await sign_in(client, db, config)
    stream = await client.get("/events?after=0")
    assert stream.headers["Content-Type"] == "text/event-stream"
    async with db.session() as session:
        await outbox.enqueue(
            session, outbox.Destination(-100500, 5, "activity"), "✅ coder finished #7"
        )
    line = b""
    while not line.startswith(b"data:"):
        line = await asyncio.wait_for(stream.content.readline(), 10)
    data = json.loads(line[5:])
    assert data["text"] == "✅ coder finished #7"
    assert data["feed"] == "activity"
    stream.close()


async def test_metrics_and_health_from_the_metrics_network_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    config = make_config(tmp_path, monkeypatch)
    async with db.session() as session:
        await incidents.open_incident(
            session, fingerprint="x", severity="P3", title="t", source="check:x"
        )
    app = make_app(config, db, await signer_for(config, db))
    async with TestClient(TestServer(app)) as client:
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        body = await metrics.text()
        assert "# TYPE fleet_runs_total counter" in body
        assert 'fleet_incidents_open{severity="P3"} 1.0' in body
        assert "fleet_outbox_pending 0.0" in body
        health = await client.get("/healthz")
        assert health.status == 200
        assert (await health.json())["status"] == "ok"
    far = make_config(
        tmp_path, monkeypatch, extra=web_extra(8088).replace('"127.0.0.1/32"', '"10.0.0.0/8"')
    )
    assert far.web.metrics_from == ["10.0.0.0/8"]
    async with TestClient(TestServer(make_app(far, db, await signer_for(far, db)))) as client:
        assert (await client.get("/metrics")).status == 403
        assert (await client.get("/healthz")).status == 403


def am_payload(status: str, **labels: str) -> dict[str, object]:
    alert = {
        "status": status,
        "labels": {"alertname": "DiskFull", "severity": "warning", **labels},
        "annotations": {"summary": "disk is 95% full"},
        "startsAt": "2026-12-04T20:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "abc123",
    }
    return {"version": "4", "status": status, "receiver": "fleet", "alerts": [alert]}


async def test_alertmanager_alerts_open_and_resolve_incidents(
    client: Client, db: Database
) -> None:
    url = "/hooks/alertmanager/prom"
    payload = am_payload("firing", instance="db1")
    assert (await client.post(url, json=payload)).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post(url, json=payload, headers=wrong)).status == 401
    auth = {"Authorization": f"Bearer {ALERT_TOKEN}"}
    assert (
        await client.post("/hooks/alertmanager/other", json=payload, headers=auth)
    ).status == 404
    assert (await client.post(url, data="{", headers=auth)).status == 400
    opened = await client.post(url, json=payload, headers=auth)
    assert await opened.json() == {"opened": 1, "updated": 0, "resolved": 0, "unchanged": 0}
    again = await client.post(url, json=payload, headers=auth)
    assert (await again.json())["updated"] == 1
    async with db.session() as session:
        incident = await incidents.live(session, "prom:abc123")
        assert incident is not None
        assert incident.severity == "P2"
        assert incident.title == "DiskFull: disk is 95% full"
        assert incident.source == "alert:prom"
    resolved = await client.post(url, json=am_payload("resolved"), headers=auth)
    assert (await resolved.json())["resolved"] == 1
    async with db.session() as session:
        found = await session.get(Incident, incident.id)
        assert found is not None
        assert found.status == "resolved"


async def test_the_small_alert_shape(client: Client, db: Database) -> None:
    auth = {"Authorization": f"Bearer {ALERT_TOKEN}"}
    url = "/hooks/alert/scripts"
    bad = await client.post(url, json={"status": "firing"}, headers=auth)
    assert bad.status == 400
    assert '"key"' in await bad.text()
    odd = await client.post(url, json={"key": "k", "status": "maybe"}, headers=auth)
    assert odd.status == 400
    one = {"key": "backup", "title": "Backup failed", "severity": "P3"}
    assert (await (await client.post(url, json=one, headers=auth)).json())["opened"] == 1
    async with db.session() as session:
        incident = await incidents.live(session, "scripts:backup")
        assert incident is not None
        assert incident.severity == "P3"
    done = {"alerts": [{"key": "backup", "status": "resolved"}]}
    assert (await (await client.post(url, json=done, headers=auth)).json())["resolved"] == 1


def test_web_config_problems_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOK_TOKEN", raising=False)
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[telegram]\ntoken = "123456:test-token"\n'
        '[web]\nlisten = "8088"\npublic_url = "fleet.example.com"\nmetrics_from = ["nope"]\n'
        '[[web.sources]]\nid = "prom"\ntoken = "${HOOK_TOKEN}"\nurl = "am:9093"\n'
        '[[web.sources]]\nid = "prom"\nkind = "alert"\ntoken = "x"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = "\n".join(info.value.problems)
    assert 'web.listen: "8088" is not an address like "127.0.0.1:8088"' in problems
    assert "web.public_url: must be empty or the http(s):// URL" in problems
    assert 'web.metrics_from: "nope" is not an address or network' in problems
    assert "references ${HOOK_TOKEN}, which is not set" in problems
    assert "must be empty or the http(s):// URL of the Alertmanager" in problems
    assert 'duplicate id "prom"' in problems


async def test_sign_in_and_alerts_on_postgresql(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, monkeypatch)
    db = Database(pg_database)
    try:
        await db.migrate()
        signer = await signer_for(config, db)
        async with db.session() as session:
            assert Signer(await web_store.signing_key(session)).issue(SESSION, 1, 9)
        async with TestClient(TestServer(make_app(config, db, signer))) as client:
            link = signer.issue(LINK, OWNER, 300)
            assert (await client.post("/signin", data={"t": link})).status == 200
            client.session.cookie_jar.clear()
            assert (await client.post("/signin", data={"t": link})).status == 403
            auth = {"Authorization": f"Bearer {ALERT_TOKEN}"}
            url = "/hooks/alertmanager/prom"
            for _ in range(2):
                assert (await client.post(url, json=am_payload("firing"), headers=auth)).ok
            resolved = await client.post(url, json=am_payload("resolved"), headers=auth)
            assert (await resolved.json())["resolved"] == 1
            assert (await client.get("/metrics")).status == 200
    finally:
        await db.dispose()
