"""The real sender delivering outbox rows: edits and replies to earlier messages, and a
send that a killed process left unfinished."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode

from bot.sender import Sender
from storage import outbox
from storage.db import Database
from storage.models import Outbox
from storage.statuses import OutboxStatus
from tests.botapi_server import BotAPIServer

FEED = outbox.Destination(chat_id=-100777, topic=None, feed="approvals")
BUTTONS = [[{"text": "Approve", "callback_data": "x:1"}]]


@pytest.fixture
async def sender(db: Database, botapi: BotAPIServer) -> AsyncIterator[Sender]:
    bot = Bot(
        botapi.token,
        session=botapi.make_session(),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )
    yield Sender(bot, db)
    await bot.session.close()


async def deliver_all(sender: Sender, db: Database) -> None:
    for _ in range(10):
        sender.pacer = type(sender.pacer)()  # pacing is tested elsewhere; here it only waits
        await sender.deliver_due()
        async with db.session() as session:
            if not [r for r in await outbox.unsent(session) if r.status == OutboxStatus.PENDING]:
                return
    raise AssertionError("outbox did not drain")


async def enqueue(db: Database, text: str, **kwargs: object) -> None:
    async with db.session() as session:
        await outbox.enqueue(session, FEED, text, **kwargs)  # type: ignore[arg-type]


async def test_an_edit_replaces_text_and_removes_the_buttons(
    db: Database, sender: Sender, botapi: BotAPIServer
) -> None:
    await enqueue(db, "Deploy <b>site</b>?", buttons=BUTTONS, dedup_key="approval:1")
    await deliver_all(sender, db)
    await enqueue(
        db, "Deploy site: approved by Ana", dedup_key="approval:1:d", edit_of="approval:1"
    )
    await deliver_all(sender, db)
    [sent] = botapi.calls_of("sendMessage")
    [edit] = botapi.calls_of("editMessageText")
    message_id = sent.result["message_id"]
    assert edit.params["message_id"] == message_id
    stored = botapi.message(FEED.chat_id, message_id)
    assert stored is not None
    assert stored["text"] == "Deploy site: approved by Ana"
    assert "reply_markup" not in stored
    async with db.session() as session:
        row = await session.get(Outbox, 2)
        assert row is not None and row.status == "sent" and row.sent_message_ids == [message_id]


async def test_an_edit_that_changes_nothing_counts_as_delivered(
    db: Database, sender: Sender, botapi: BotAPIServer
) -> None:
    await enqueue(db, "same", dedup_key="a")
    await deliver_all(sender, db)
    await enqueue(db, "same", dedup_key="a:again", edit_of="a")
    await deliver_all(sender, db)
    assert len(botapi.calls_of("sendMessage")) == 1
    async with db.session() as session:
        assert [r.status for r in await outbox.unsent(session)] == []


async def test_an_edit_of_a_message_that_never_went_out_is_sent_new(
    db: Database, sender: Sender, botapi: BotAPIServer
) -> None:
    await enqueue(db, "resolved: disk", dedup_key="inc:1:resolved", edit_of="inc:1")
    await deliver_all(sender, db)
    [sent] = botapi.calls_of("sendMessage")
    assert sent.params["text"] == "resolved: disk"
    assert botapi.calls_of("editMessageText") == []


async def test_an_edit_of_a_deleted_message_is_sent_new(
    db: Database, sender: Sender, botapi: BotAPIServer
) -> None:
    await enqueue(db, "original", dedup_key="o")
    await deliver_all(sender, db)
    [first] = botapi.calls_of("sendMessage")
    bot = botapi.make_bot()
    await bot.delete_message(FEED.chat_id, first.result["message_id"])
    await bot.session.close()
    await enqueue(db, "edited", dedup_key="o:e", edit_of="o")
    await deliver_all(sender, db)
    assert [c.params["text"] for c in botapi.calls_of("sendMessage")] == ["original", "edited"]


async def test_a_reply_answers_the_original_message(
    db: Database, sender: Sender, botapi: BotAPIServer
) -> None:
    await enqueue(db, "site is down", dedup_key="inc:7")
    await enqueue(db, "site is back", dedup_key="inc:7:resolved", reply_to="inc:7")
    await deliver_all(sender, db)
    first, second = botapi.calls_of("sendMessage")
    assert "reply_parameters" not in first.params
    assert second.params["reply_parameters"]["message_id"] == first.result["message_id"]


async def test_a_reply_to_an_unknown_message_is_sent_plain(
    db: Database, sender: Sender, botapi: BotAPIServer
) -> None:
    await enqueue(db, "follow-up", dedup_key="f", reply_to="never-queued")
    await deliver_all(sender, db)
    [sent] = botapi.calls_of("sendMessage")
    assert "reply_parameters" not in sent.params


async def test_a_send_cut_short_by_a_kill_is_sent_again_and_says_it_may_show_twice(
    db: Database, sender: Sender, botapi: BotAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    await enqueue(db, "disk full on web-1", dedup_key="inc:9")
    async with db.session() as session:
        # What a process killed after Telegram answered, before it recorded the answer, leaves.
        assert await outbox.begin_send(session, 1, 0)
    with caplog.at_level(logging.WARNING, logger="bot.sender"):
        await deliver_all(sender, db)
    [sent] = botapi.calls_of("sendMessage")
    assert sent.params["text"] == "disk full on web-1"
    [warning] = [r.getMessage() for r in caplog.records if "process stopped" in r.getMessage()]
    assert warning.startswith("outbox 1 to chat -100777: the process stopped while part 1")
    assert "may show twice" in warning
    async with db.session() as session:
        row = await session.get(Outbox, 1)
        assert row is not None and row.status == "sent" and row.in_flight_at is None


async def test_a_delivered_row_is_not_left_in_flight(
    db: Database, sender: Sender, botapi: BotAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    await enqueue(db, "x" * 5000, dedup_key="long")
    with caplog.at_level(logging.WARNING, logger="bot.sender"):
        await deliver_all(sender, db)
    assert len(botapi.calls_of("sendMessage")) == 2
    assert not [r for r in caplog.records if "process stopped" in r.getMessage()]
    async with db.session() as session:
        row = await session.get(Outbox, 1)
        assert row is not None and row.parts_sent == 2 and row.in_flight_at is None
