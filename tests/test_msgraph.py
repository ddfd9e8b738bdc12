"""The graph backend: msal against a local HTTPS token server (a throwaway trustme CA) and
the Graph REST calls against a local Graph server: paging, $select, Retry-After, mark read,
the token cache file (0600, reused, renewed before expiry) and clear errors."""

from __future__ import annotations

import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from sqlalchemy import select

from agents.gateway import Gateway
from agents.triage import Triage
from bot.config import load_config
from integrations.mailbox import AccountUnknown, AuthFailed, MailboxError
from integrations.msgraph import SELECT, GraphMailbox
from storage.db import Database
from storage.models import TriageItem
from tests.fleet import ANTHROPIC_KEY, TOKEN, write_config
from tests.graph_servers import (
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    GraphServer,
    TokenServer,
    graph_message,
    write_ca,
)

USER = "ops@contoso.example"
# Seconds. The server asks for Retry-After: 1; at least most of it must have passed.
WAITED = 0.9


@dataclass
class Env:
    tokens: TokenServer
    graph: GraphServer
    ca_file: Path
    cache: Path

    def mailbox(self, **kw: object) -> GraphMailbox:
        options: dict[str, object] = {
            "user": USER,
            "folder": "INBOX",
            "tenant": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "authority": self.tokens.authority,
            "base_url": self.graph.base_url,
            "token_cache": self.cache,
            "ca_bundle": self.ca_file,
            "timeout": 10.0,
            "page_size": 2,
        }
        options.update(kw)
        return GraphMailbox(**options)  # type: ignore[arg-type]


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    ca = trustme.CA()
    # A set REQUESTS_CA_BUNDLE naming another CA must not replace the configured ca_bundle.
    other = write_ca(trustme.CA(), tmp_path / "other-ca.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    async with TokenServer(ca) as tokens, GraphServer(tokens) as graph:
        graph.messages[USER] = [graph_message(n) for n in range(1, 6)]
        graph.messages[USER].insert(2, graph_message(9, read=True))
        yield Env(tokens, graph, write_ca(ca, tmp_path / "ca.pem"), tmp_path / "msal.json")


async def test_lists_unread_pages_with_select_reads_and_marks_read(env: Env) -> None:
    box = env.mailbox()
    try:
        envelopes, cursor = await box.list_new(None)
        assert [e.backend_id for e in envelopes] == [f"AAMkAD{n}==" for n in range(1, 6)]
        first = envelopes[0]
        assert (first.message_id, first.sender, first.subject) == (
            "g1@contoso.example",
            "Sender 1 <s1@contoso.example>",
            "Graph message 1",
        )
        assert cursor == "2026-11-25T08:00:05Z"
        lists = [r for r in env.graph.requests if r.path.endswith("/messages")]
        assert len(lists) == 3  # pages of two, through @odata.nextLink
        assert lists[0].query["$select"] == SELECT
        assert lists[0].query["$filter"] == "isRead eq false"
        assert "internalSecret" not in SELECT

        assert await box.read("AAMkAD3==") == "Body of 3"
        await box.mark_read("AAMkAD3==")
        patch = env.graph.requests[-1]
        assert (patch.method, patch.body) == ("PATCH", {"isRead": True})
        again, _ = await box.list_new(cursor)
        assert "AAMkAD3==" not in [e.backend_id for e in again]
        # A day before the newest seen: late deliveries with older times are not missed.
        assert env.graph.requests[-1].query["$filter"] == (
            "isRead eq false and receivedDateTime ge 2026-11-24T08:00:05Z"
        )
        late = graph_message(7) | {"receivedDateTime": "2026-11-25T07:59:00Z"}
        env.graph.messages[USER].append(late)
        again, _ = await box.list_new(cursor)
        assert "AAMkAD7==" in [e.backend_id for e in again]
    finally:
        await box.close()
    # One token for all of it, kept in a cache file only the owner can read.
    assert len(env.tokens.token_requests) == 1
    assert stat.S_IMODE(env.cache.stat().st_mode) == 0o600
    restarted = env.mailbox()
    try:
        await restarted.list_new(None)
    finally:
        await restarted.close()
    assert len(env.tokens.token_requests) == 1, "a restart reuses the cached token"


async def test_a_token_is_renewed_before_it_expires(env: Env) -> None:
    env.tokens.expires_in = 200  # inside the five-minute renewal margin
    box = env.mailbox(page_size=10)  # one request per pass
    try:
        await box.list_new(None)
        await box.list_new(None)
    finally:
        await box.close()
    assert len(env.tokens.token_requests) == 2
    used = {r.token for r in env.graph.requests}
    assert used == set(env.tokens.issued)


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(env: Env, status: int) -> None:
    env.graph.busy.append((status, "1"))
    box = env.mailbox(page_size=10)
    started = time.monotonic()
    try:
        envelopes, _ = await box.list_new(None)
    finally:
        await box.close()
    assert len(envelopes) == 5
    assert time.monotonic() - started >= WAITED
    assert len(env.graph.requests) == 2


async def test_a_retry_after_longer_than_the_timeout_waits_for_the_next_pass(env: Env) -> None:
    env.graph.busy.append((429, "3600"))
    box = env.mailbox()
    try:
        with pytest.raises(MailboxError, match="asks to wait 3600 s"):
            await box.list_new(None)
    finally:
        await box.close()


async def test_a_wrong_secret_is_an_authentication_failure(env: Env) -> None:
    box = env.mailbox(client_secret="wrong")
    with pytest.raises(AuthFailed, match=r"invalid_client.*graph\.client_secret") as caught:
        await box.list_new(None)
    assert "wrong" not in str(caught.value)
    assert env.graph.requests == []


async def test_an_unknown_tenant_and_an_unknown_user(env: Env) -> None:
    with pytest.raises(AccountUnknown, match="tenant"):
        await env.mailbox(tenant="nobody").list_new(None)
    box = env.mailbox(user="ghost@contoso.example")
    try:
        with pytest.raises(AccountUnknown, match=r"ghost@contoso\.example"):
            await box.list_new(None)
    finally:
        await box.close()


async def test_an_untrusted_authority_certificate_is_refused(env: Env, tmp_path: Path) -> None:
    stranger = write_ca(trustme.CA(), tmp_path / "stranger.pem")
    with pytest.raises(MailboxError, match=r"cannot reach the authority.*SSLError"):
        await env.mailbox(ca_bundle=stranger).list_new(None)
    assert env.tokens.token_requests == []


async def test_a_graph_mailbox_from_the_config_is_triaged(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("GRAPH_SECRET", CLIENT_SECRET)
    env.graph.messages[USER][0]["importance"] = "high"
    for mail in env.graph.messages[USER][1:]:
        mail["from"]["emailAddress"]["address"] = "news@shop.example"
    path = write_config(
        tmp_path,
        "http://127.0.0.1:9",
        extra=f"""
[[mailboxes]]
id = "m365"
backend = "graph"
user = "{USER}"
ignore = ["shop.example"]
[mailboxes.graph]
tenant = "{TENANT}"
client_id = "{CLIENT_ID}"
client_secret = "${{GRAPH_SECRET}}"
authority = "{env.tokens.authority}"
base_url = "{env.graph.base_url}"
ca_bundle = "{env.ca_file.name}"
""",
    )
    config = load_config(path)
    db = Database(config.database.url)
    await db.migrate()
    gateway = Gateway(config, db)
    triage = Triage(config, db, gateway)
    try:
        result = await triage.run_pass("m365")
        async with db.session() as session:
            items = list((await session.execute(select(TriageItem))).scalars())
    finally:
        await triage.close()
        await gateway.close()
        await db.dispose()
    assert (result.new, result.by_rule, result.by_model) == (5, 5, 0)
    assert [(i.message_id, i.verdict) for i in items][:2] == [
        ("g1@contoso.example", "urgent"),
        ("g2@contoso.example", "ignore"),
    ]
    cache = tmp_path / ".msal-m365.json"  # relative to the config file
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
