"""Replies and plain text end to end (the real `fleet run` and the local Bot API server): a reply
to a task card is a comment on the task, a reply to an approval card a note on the approval,
and plain text in the private chat gets a hint (for an operator, with a button that makes it a
task for the hub)."""

from __future__ import annotations

from pathlib import Path

from storage import approvals, outbox
from storage.approval_policy import ApprovalPolicy
from storage.db import Database
from tests.botapi_server import BotAPIServer
from tests.fleet import FEED_CHAT, OPERATOR, OWNER, VIEWER, query, wait_query
from tests.inproc import InProcessFleet
from tests.test_e2e_tasks import buttons, events_of, pause_all, press, reply, send


async def answer_to_reply(botapi: BotAPIServer, user: int, text: str, to: int, chat: int) -> str:
    """Send `text` as `user` in reply to message `to` of `chat`; the bot's next message there."""
    after = botapi.mark()
    botapi.push_message(user, text, chat_id=None if chat == user else chat, reply_to=to)
    [sent] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == chat, after=after, timeout=15
    )
    return str(sent.params["text"])


async def test_a_reply_to_a_task_card_is_a_comment_and_plain_text_gets_a_hint(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    config = fleet_config
    await pause_all(botapi)
    await reply(botapi, OPERATOR, "/assign coder Write the release notes")
    shown = await send(botapi, OPERATOR, "/task 1")
    card = shown.result["message_id"]
    # The card is recorded once Telegram has answered with its message id.
    await wait_query(config, "SELECT kind, entity_id FROM message_links", [("task", 1)])
    answer = await answer_to_reply(
        botapi, OPERATOR, "Also mention the new keyboard shortcuts", card, OPERATOR
    )
    assert answer == "Comment added to task #1 (todo, coder)."
    assert events_of(config, 1)[-1] == (
        "comment",
        f"person:{OPERATOR}",
        None,
        None,
        "Also mention the new keyboard shortcuts",
    )
    # A viewer's reply is refused by role; a command in reply is a command.
    viewer_card = (await send(botapi, VIEWER, "/task 1")).result["message_id"]
    await wait_query(config, "SELECT count(*) FROM message_links", [(2,)])
    refused = await answer_to_reply(botapi, VIEWER, "looks fine", viewer_card, VIEWER)
    assert refused == "This action needs the operator role; you are viewer."
    listing = await answer_to_reply(botapi, OPERATOR, "/tasks", card, OPERATOR)
    assert listing.startswith("<b>Open tasks</b>: 1")
    assert len([e for e in events_of(config, 1) if e[0] == "comment"]) == 1

    # Plain text: a hint; for an operator with a button that makes it a task for the hub.
    after = botapi.mark()
    botapi.push_message(OPERATOR, "Draft the Q3 newsletter\nKeep it short.")
    [hint] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OPERATOR, after=after
    )
    assert hint.params["text"].startswith("I take commands, not chat: /help lists yours.")
    make = buttons(hint)["Make this a task for the hub"]
    said, edits = await press(botapi, OPERATOR, hint.result["message_id"], make)
    assert said == "Task #2 for hub"
    assert edits[-1].params["text"] == "Task #2 for hub: Draft the Q3 newsletter"
    await wait_query(
        config,
        "SELECT assignee, title, body, creator FROM tasks WHERE id = 2",
        [("hub", "Draft the Q3 newsletter", "Keep it short.", f"person:{OPERATOR}")],
    )
    # A second press (the button is gone, but an old client may still send it) adds nothing.
    again, _ = await press(botapi, OPERATOR, hint.result["message_id"], make)
    assert again == "This button is not on this message; nothing was changed."
    assert query(config, "SELECT count(*) FROM tasks") == [(2,)]
    viewer_hint = await send(botapi, VIEWER, "hello?")
    assert viewer_hint.params["text"].startswith("I take commands, not chat")
    assert "reply_markup" not in viewer_hint.params


async def test_replies_to_an_approval_card_and_a_task_status_message(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    config = fleet_config
    await pause_all(botapi)
    database = Database(f"sqlite+aiosqlite:///{config.parent / 'fleet.db'}")
    policy = ApprovalPolicy(feed=outbox.Destination(FEED_CHAT, None, "approvals"))
    async with database.claim() as session:
        await approvals.request(
            session,
            policy=policy,
            kind="action",
            payload={"summary": "Email the vendor"},
            requested_by="agent:hub",
        )
    await database.dispose()
    # The fleet's sender delivers the queued card on its next pass.
    [posted] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == FEED_CHAT and "Approval #1</b>" in c.params["text"],
        timeout=20,
    )
    # The sender records the message id once Telegram has answered.
    await wait_query(
        config, "SELECT parts_sent FROM outbox WHERE dedup_key = 'approval:1'", [(1,)]
    )
    answer = await answer_to_reply(
        botapi, OWNER, "Ask for the invoice too", posted.result["message_id"], FEED_CHAT
    )
    assert answer == "Note added to approval #1."
    assert query(config, "SELECT kind, actor, body FROM approval_events WHERE kind = 'note'") == [
        ("note", f"person:{OWNER}", "Ask for the invoice too")
    ]
    assert query(config, "SELECT status FROM approvals") == [("pending",)]
    # Plain chatter in the feed group that replies to nothing is ignored.
    after = botapi.mark()
    botapi.push_message(OWNER, "lunch?", chat_id=FEED_CHAT)
    await reply(botapi, OPERATOR, "/whoami")
    assert not [
        c
        for c in botapi.calls[after:]
        if c.method == "sendMessage" and c.params["chat_id"] == FEED_CHAT
    ]
