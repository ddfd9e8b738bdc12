"""Guarded publishing, end to end: the real `fleet run`, the local Bot API server, the local
Messages API server scripting the writer's publish calls, and a small local web server playing
a webhook and its public page."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from storage.publications import Guards, normalise, quality_problems, similarity
from tests.anthropic_server import AnthropicServer, text, tool_use
from tests.botapi_server import BotAPIServer
from tests.fleet import (
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    OWNER,
    VIEWER,
    FleetProcess,
    ask,
    fleet_env,
    press,
    query,
    wait_query,
    write_config,
)
from tests.inproc import Fleet, InProcessFleet
from tests.pg import require_pg_url, temporary_database

WRITER = "claude-opus-4-6"
CHANNEL = -100777
HOOK_TOKEN = "hook-secret-0123456789"

AGENTS = f"""
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"
authority = ["assign", "comment", "subtask"]

[[agents]]
id = "writer"
reports_to = "hub"
workspace = "workspaces/writer"
model = "{WRITER}"
authority = ["comment", "publish"]
"""

DRAFT = (
    "Our new release makes handoffs between agents twice as fast. Read how the research, "
    "draft and review steps pass files forward, and subscribe for the next post."
)


def targets(hook: str) -> str:
    return f"""
[[publish_targets]]
id = "channel"
kind = "telegram"
chat_id = {CHANNEL}
required = ["subscribe"]

[[publish_targets]]
id = "blog"
kind = "folder"
path = "site/blog"
approve = false
max_per_day = 1

[[publish_targets]]
id = "notes"
kind = "folder"
path = "site/notes"
approve = false
min_gap = "4h"

[[publish_targets]]
id = "hook"
kind = "webhook"
url = "{hook}/hook"
verify_url = "{hook}/feed"
headers = {{ Authorization = "Bearer ${{HOOK_TOKEN}}" }}
approve = false
"""


class Webhook:
    """A webhook that answers 200 to every POST, and a public page that shows what was
    posted only once `shows` is set (before: an API that says 200 and does nothing)."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.shows = False  # whether the page shows what was posted
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.posts.append((await request.json(), dict(request.headers)))
        return web.json_response({"ok": True})

    async def _feed(self, request: web.Request) -> web.Response:
        shown = "".join(f"<p>{post['text']}</p>" for post, _ in self.posts) if self.shows else ""
        page = f"<html><body>{shown or 'No posts yet.'}</body></html>"
        return web.Response(text=page, content_type="text/html")

    async def __aenter__(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_get("/feed", self._feed)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}, default=text("Noted.")) as server:
        yield server


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    async with Webhook() as server:
        yield server


async def start(
    tmp_path: Path,
    botapi: BotAPIServer,
    anthropic: AnthropicServer,
    webhook: Webhook,
    *,
    real: bool = False,
) -> Fleet:
    config = write_config(
        tmp_path,
        botapi.base_url,
        anthropic_base=anthropic.base_url,
        agents=AGENTS,
        extra=targets(webhook.url),
    )
    return await restart(config, botapi, real=real)


async def restart(config: Path, botapi: BotAPIServer, *, real: bool = False) -> Fleet:
    """The fleet in the test's process; `real`: a `fleet run` process (to kill -9)."""
    env = fleet_env(HOOK_TOKEN=HOOK_TOKEN)
    fleet = FleetProcess(config, env=env) if real else InProcessFleet(config, env=env)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    return fleet


async def requests_of(anthropic: AnthropicServer, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 40
    while len(anthropic.requests_for(model=WRITER)) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(anthropic.requests_for(model=WRITER))} writer requests")
        await asyncio.sleep(0.05)


async def publish(
    botapi: BotAPIServer, anthropic: AnthropicServer, args: dict[str, str], *, woken: bool
) -> str:
    """One writer run (a new task) that calls publish once; returns what the tool answered.
    `woken`: the outcome is commented on the task, which wakes the writer once more."""
    before = len(anthropic.requests_for(model=WRITER))
    anthropic.script(tool_use("publish", args), text("Done."), model=WRITER)
    botapi.push_message(OPERATOR, f"/assign writer Publish to {args['target']}")
    await requests_of(anthropic, before + 2)
    last = anthropic.requests_for(model=WRITER)[before + 1].body["messages"][-1]
    if woken:
        await requests_of(anthropic, before + 3)
    return str(last["content"][0]["content"])


async def test_six_identical_drafts_give_one_publication_after_an_owners_approve(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, webhook: Webhook
) -> None:
    fleet = await start(tmp_path, botapi, anthropic, webhook)
    first = await publish(botapi, anthropic, {"target": "channel", "text": DRAFT}, woken=False)
    assert "publication #1 waits for approval #1" in first
    # The spam incident replayed: the same draft five more times, each in a run of its own.
    for _ in range(5):
        again = await publish(botapi, anthropic, {"target": "channel", "text": DRAFT}, woken=False)
        assert "near-duplicate (100% alike) of publication #1" in again, again
    one_word = DRAFT.replace("twice", "three times")
    near = await publish(botapi, anthropic, {"target": "channel", "text": one_word}, woken=False)
    assert "near-duplicate" in near and "of publication #1 (pending, by writer)" in near
    gate = await publish(
        botapi, anthropic, {"target": "channel", "text": "A short post."}, woken=False
    )
    assert 'the quality gate: lacks the required "subscribe"' in gate
    assert query(fleet.config, "SELECT status, count(*) FROM publications GROUP BY status") == [
        ("pending", 1),
        ("refused", 7),
    ]
    assert botapi.sent_texts(CHANNEL) == []  # nothing leaves before a person decides

    [card] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == FEED_CHAT and "Approval #1</b>" in c.params["text"],
        timeout=30,
    )
    assert "publish #1 to channel by writer" in card.params["text"]
    assert "twice as fast" in card.params["text"]  # the text itself is what is decided
    refused = await press(botapi, VIEWER, "ap:y:1", card.result["message_id"])
    assert "needs the operator role" in refused or "operator" in refused
    assert await press(botapi, OWNER, "ap:y:1", card.result["message_id"]) == "Approved #1."
    [posted] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == CHANNEL, timeout=30
    )
    assert posted.params["text"] == DRAFT
    message_id = posted.result["message_id"]
    await wait_query(
        fleet.config,
        "SELECT status, message_id FROM publications WHERE id = 1",
        [("published", message_id)],
    )
    shown = await ask(botapi, VIEWER, "/published channel")
    assert "#1 channel · published · writer" in shown and f"message {message_id}" in shown
    assert "#7 channel · refused" in shown
    assert await fleet.stop() == 0
    assert botapi.sent_texts(CHANNEL) == [DRAFT]
    assert "Traceback" not in fleet.log


async def test_max_per_day_and_min_gap_hold_across_a_restart(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, webhook: Webhook
) -> None:
    fleet = await start(tmp_path, botapi, anthropic, webhook)
    blog = await publish(botapi, anthropic, {"target": "blog", "text": "First post."}, woken=True)
    assert "publication #1 is queued" in blog
    notes = await publish(botapi, anthropic, {"target": "notes", "text": "A note."}, woken=True)
    assert "publication #2 is queued" in notes
    await wait_query(
        fleet.config, "SELECT status FROM publications", [("published",), ("published",)]
    )
    written = tmp_path / "site" / "blog" / "1.md"
    assert written.read_text() == "First post."
    [(sha,)] = query(fleet.config, "SELECT sha256 FROM publications WHERE id = 1")
    assert sha == hashlib.sha256(b"First post.").hexdigest()
    assert await fleet.stop() == 0

    again = await restart(fleet.config, botapi)
    second = await publish(
        botapi, anthropic, {"target": "blog", "text": "Another, different post."}, woken=False
    )
    assert "blog already has 1 publications in the last 24 hours (max_per_day = 1)" in second
    gap = await publish(
        botapi, anthropic, {"target": "notes", "text": "Another, different note."}, woken=False
    )
    assert "publication #2 to notes was less than min_gap ago" in gap
    assert not (tmp_path / "site" / "blog" / "3.md").exists()
    assert await again.stop() == 0
    assert "Traceback" not in again.log


async def test_a_webhook_that_answers_200_but_does_not_show_the_text_is_unverified(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, webhook: Webhook
) -> None:
    fleet = await start(tmp_path, botapi, anthropic, webhook)
    answer = await publish(
        botapi, anthropic, {"target": "hook", "text": "Launch day: read the notes."}, woken=True
    )
    assert "publication #1 is queued" in answer
    await wait_query(fleet.config, "SELECT status FROM publications", [("unverified",)])
    [(body, headers)] = webhook.posts
    assert body["text"] == "Launch day: read the notes." and body["id"] == 1
    assert headers["Authorization"] == f"Bearer {HOOK_TOKEN}"
    assert headers["Idempotency-Key"] == "publication:1"
    [alert] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ALERTS_TOPIC
            and "Publication #1" in c.params["text"]
        ),
        timeout=30,
    )
    assert (
        "unverified" in alert.params["text"] and "does not show the text" in alert.params["text"]
    )
    woken = str(anthropic.requests_for(model=WRITER)[-1].body["messages"])
    assert "Publication #1 to hook is unverified" in woken

    webhook.shows = True  # now the page shows what is posted
    await publish(botapi, anthropic, {"target": "hook", "text": "Second: a new page."}, woken=True)
    await wait_query(
        fleet.config,
        "SELECT id, status, location FROM publications",
        [(1, "unverified", None), (2, "published", f"{webhook.url}/feed")],
    )
    assert await fleet.stop() == 0
    assert HOOK_TOKEN not in fleet.log


async def test_kill_9_while_the_channel_post_is_in_flight_is_unknown_never_posted_twice(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, webhook: Webhook
) -> None:
    fleet = await start(tmp_path, botapi, anthropic, webhook, real=True)
    await publish(botapi, anthropic, {"target": "channel", "text": DRAFT}, woken=False)
    [card] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == FEED_CHAT and "Approval #1</b>" in c.params["text"],
        timeout=30,
    )
    botapi.stall("sendMessage", 60)  # Telegram takes the post and never answers in time
    assert await press(botapi, OWNER, "ap:y:1", card.result["message_id"]) == "Approved #1."
    deadline = asyncio.get_running_loop().time() + 30
    while botapi.stalls_left("sendMessage"):
        assert asyncio.get_running_loop().time() < deadline, fleet.log
        await asyncio.sleep(0.02)
    assert query(
        fleet.config,
        "SELECT in_flight_at IS NOT NULL FROM outbox WHERE dedup_key = 'publication:1'",
    ) == [(1,)]
    await fleet.kill()

    again = await restart(fleet.config, botapi)
    await wait_query(again.config, "SELECT status FROM publications", [("unknown",)])
    [alert] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ALERTS_TOPIC
            and "Publication #1" in c.params["text"]
        ),
        timeout=30,
    )
    assert "is unknown" in alert.params["text"] and "not re-published" in alert.params["text"]
    assert await again.stop() == 0
    channel_sends = [c for c in botapi.calls_of("sendMessage") if c.params["chat_id"] == CHANNEL]
    assert len(channel_sends) <= 1  # at most the one cut off: never sent again


async def test_a_long_text_shows_its_first_3000_characters_and_details_posts_the_rest(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, webhook: Webhook
) -> None:
    fleet = await start(tmp_path, botapi, anthropic, webhook)
    words = " ".join(f"word{i}" for i in range(600))  # about 4,000 characters
    long = f"{words[:3490]} END subscribe"
    await publish(botapi, anthropic, {"target": "channel", "text": long}, woken=False)
    [card] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == FEED_CHAT and "Approval #1</b>" in c.params["text"],
        timeout=30,
    )
    assert long[:3000] in card.params["text"] and "END" not in card.params["text"]
    assert f"… {len(long) - 3000} more characters: press Details" in card.params["text"]
    after = botapi.mark()
    await press(botapi, VIEWER, "ap:d:1", card.result["message_id"])
    [rest] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == FEED_CHAT, after=after, timeout=30
    )
    assert rest.params["text"] == long[3000:]
    assert rest.params["reply_parameters"]["message_id"] == card.result["message_id"]
    assert await ask(botapi, VIEWER, "/published nowhere") == (
        "There is no publish target nowhere. Known: channel, blog, notes, hook."
    )
    assert await fleet.stop() == 0


def test_normalised_text_ignores_case_accents_and_punctuation() -> None:
    assert normalise("Café, déjà VU!  Read:  now.") == ["cafe", "deja", "vu", "read", "now"]
    assert similarity("Hello, World!", "hello world") == 1.0


def test_one_word_changed_is_a_near_duplicate_and_another_post_is_not() -> None:
    rng = random.Random(15)
    words = [rng.choice(["agents", "files", "steps", "post", "brief", "hub"]) for _ in range(30)]
    for _ in range(50):
        changed = list(words)
        changed[rng.randrange(len(words))] = "zebra"
        assert similarity(" ".join(words), " ".join(changed)) >= 0.85
    other = "A different announcement about pricing, nothing like the draft at all."
    assert similarity(DRAFT, other, 0.85) < 0.85


def test_the_quality_gate_says_each_thing_that_failed() -> None:
    guards = Guards(min_chars=20, max_chars=100, banned=["lorem"], required=["Subscribe"])
    assert quality_problems("Lorem ipsum.", guards) == [
        "12 characters, under the minimum of 20",
        'contains the banned "lorem"',
        'lacks the required "Subscribe"',
    ]
    assert quality_problems("A fine post; please subscribe.", guards) == []


async def test_limits_and_publishing_work_on_postgres(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, webhook: Webhook
) -> None:
    require_pg_url()
    async with temporary_database("publish") as url:
        config = write_config(
            tmp_path,
            botapi.base_url,
            anthropic_base=anthropic.base_url,
            agents=AGENTS,
            extra=targets(webhook.url),
            database_url=url,
        )
        fleet = await restart(config, botapi)
        first = await publish(
            botapi, anthropic, {"target": "blog", "text": "On PostgreSQL."}, woken=True
        )
        assert "publication #1 is queued" in first
        assert (tmp_path / "site" / "blog" / "1.md").read_text() == "On PostgreSQL."
        second = await publish(
            botapi, anthropic, {"target": "blog", "text": "Something else."}, woken=False
        )
        assert "(max_per_day = 1)" in second
        assert "#1 blog · published" in await ask(botapi, VIEWER, "/published blog")
        assert await fleet.stop() == 0
        assert "Traceback" not in fleet.log
