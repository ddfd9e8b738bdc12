"""Fault injection, hostile input: the real `fleet run` against the local Bot API server, once
on SQLite and once on PostgreSQL (one process per backend for the whole module).

Families: forged and foreign presses (garbage data, a button of another message, buttons on a
message the bot cannot see, a stranger pressing again and again), strangers flooding a feed
group, and ids, durations and months out of range or with control characters in commands and
buttons. Each press is answered and changes nothing it should not; no input causes an internal
error; the Bot API server records no rejected call.
"""

from __future__ import annotations

import random
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bot.args import INVALID_BUTTON
from bot.middlewares import NOT_ON_MESSAGE
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    OWNER,
    STRANGER,
    TOKEN,
    ask,
    press,
    run_cli,
    write_config,
)
from tests.inproc import InProcessFleet
from tests.pg import temporary_database

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEPLOY = f"""
[[deploys]]
id = "site"
command = "{sys.executable} -c pass"
"""


@dataclass
class Fleet:
    botapi: BotAPIServer
    process: InProcessFleet
    card: int  # the message id of task #1's card in the operator's chat
    approval: int  # the message id of approval #1 in the feed group


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    """One fleet per backend: agents paused (no model server here), task #1 with its card,
    deploy approval #1 posted to the feed group."""
    folder = tmp_path_factory.mktemp(f"faults-{request.param}")
    async with BotAPIServer(TOKEN) as botapi:
        if request.param == "postgres":
            async with temporary_database("faults_input") as url:
                async for fleet in _run(folder, botapi, url):
                    yield fleet
        else:
            async for fleet in _run(folder, botapi, None):
                yield fleet


async def _run(folder: Path, botapi: BotAPIServer, url: str | None) -> AsyncIterator[Fleet]:
    config = write_config(folder, botapi.base_url, database_url=url, extra=DEPLOY)
    process = InProcessFleet(config)
    await process.start()
    # The module's fleet outlives each test: conftest's per-test sweep must not stop it.
    InProcessFleet.started.remove(process)
    try:
        await botapi.wait_until_polling(timeout=30)
        for agent in ("hub", "coder"):
            assert (await ask(botapi, OPERATOR, f"/pause {agent}")).startswith(f"Paused {agent}")
        assert (await ask(botapi, OPERATOR, "/new Fix the login page")).startswith("Task #1 ")
        card = await _sent(botapi, OPERATOR, "/task 1")
        assert await ask(botapi, OPERATOR, "/deploy site") == (
            "Deploy of <b>site</b> requested: approval #1, posted to the approvals feed."
        )
        [posted] = await botapi.wait_for_call(
            "sendMessage",
            lambda c: c.params["chat_id"] == FEED_CHAT and "ap:y:1" in str(c.params),
            timeout=20,
        )
        yield Fleet(botapi, process, card.result["message_id"], posted.result["message_id"])
    finally:
        code = await process.stop()
        assert code == 0, process.log
        assert "Traceback" not in process.log, process.log
        assert "error ref=" not in process.log, process.log
        assert TOKEN not in process.log and ANTHROPIC_KEY not in process.log
        assert _rejected(botapi) == [], _rejected(botapi)


def _rejected(botapi: BotAPIServer) -> list[str]:
    """Calls the Bot API server refused (a spec violation, or an edit that changed nothing)."""
    return [c.summary() for c in botapi.calls if not c.ok and c.method != "getUpdates"]


async def _sent(botapi: BotAPIServer, user: int, text: str) -> Call:
    after = botapi.mark()
    botapi.push_message(user, text)
    [call] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == user, after=after, timeout=15
    )
    return call


def _edits(botapi: BotAPIServer, after: int) -> list[Call]:
    return [c for c in botapi.calls[after:] if c.method.startswith("editMessage")]


_next_query = 0


async def press_unseen(botapi: BotAPIServer, user: int, data: str) -> str:
    """Press `data` on a message the bot cannot see (Telegram's InaccessibleMessage, date 0):
    nothing about it can be checked against its buttons."""
    global _next_query
    _next_query += 1
    query_id = str(7_000_000 + _next_query)
    after = botapi.mark()
    botapi.push_update(
        {
            "callback_query": {
                "id": query_id,
                "from": {"id": user, "is_bot": False, "first_name": "Test"},
                "message": {"chat": {"id": user, "type": "private"}, "message_id": 1, "date": 0},
                "chat_instance": "1",
                "data": data,
            }
        }
    )
    [answer] = await botapi.wait_for_call(
        "answerCallbackQuery",
        lambda c: c.params["callback_query_id"] == query_id,
        after=after,
        timeout=15,
    )
    return str(answer.params.get("text", ""))


async def test_forged_and_foreign_presses_are_answered_and_change_nothing(fleet: Fleet) -> None:
    botapi = fleet.botapi
    approval_before = botapi.message(FEED_CHAT, fleet.approval)
    card_before = botapi.message(OPERATOR, fleet.card)
    rng = random.Random(18)
    noise = ["".join(chr(rng.randint(33, 0x2FF)) for _ in range(rng.randint(1, 30)))]
    after = botapi.mark()

    # Garbage, and buttons of other messages, on a task card and on the approval message.
    for data in ("garbage", "xyz:1", *noise, "tp::1", "ta:card:1:", "ta:cancel:2:", "ap:y:1"):
        answer = await press(botapi, OPERATOR, data, fleet.card, chat_id=OPERATOR)
        assert answer == NOT_ON_MESSAGE, data
    for data in ("tp::1", "ta:card:1:", "ta:reassign:1:", "ta:cancel:1:", "inc:ack:1", "zz"):
        answer = await press(botapi, OWNER, data, fleet.approval)
        assert answer == NOT_ON_MESSAGE, data
    assert _edits(botapi, after) == []
    assert botapi.message(FEED_CHAT, fleet.approval) == approval_before
    assert botapi.message(OPERATOR, fleet.card) == card_before
    assert "Task #1</b> · todo" in await ask(botapi, OPERATOR, "/task 1")
    assert "#1 deploy" in await ask(botapi, OPERATOR, "/approvals")

    # On a message the bot cannot see: data nobody knows, or ids out of range, is answered.
    for data in ("xyz:1", "tr:read:9223372036854775808", "ta:cancel:3000000000:", "ap:y:0"):
        assert await press_unseen(botapi, OPERATOR, data) == INVALID_BUTTON, data
    # A real button there acts on its data (checked against the database) but edits nothing.
    assert await press_unseen(botapi, OPERATOR, "ta:card:1:") == "Task #1 is todo"

    # A stranger is answered on every press, not only the first of the hour.
    refusal = (
        f"You are not on this fleet's list. Your Telegram id is {STRANGER}; ask the owner to "
        "add it under [[people]] in the config."
    )
    for _ in range(3):
        assert await press(botapi, STRANGER, "ap:y:1", fleet.approval) == refusal
    assert _edits(botapi, after) == []
    # Each press above was answered (press() waits for it), and once.
    answered = [c.params["callback_query_id"] for c in botapi.calls_of("answerCallbackQuery")]
    assert len(answered) == len(set(answered))


async def test_a_crowd_of_strangers_in_a_feed_group_gets_one_refusal(fleet: Fleet) -> None:
    botapi = fleet.botapi
    after = botapi.mark()
    strangers = range(8000, 8050)
    for user in strangers:
        botapi.push_message(user, "/status", chat_id=FEED_CHAT, first_name=f"S{user}")
    # Every one of them is logged; only one refusal is posted in the group.
    for user in strangers:
        await fleet.process.wait_log(f"refused unknown Telegram user id={user} ", timeout=30)
    # The first stranger in a private chat is still told, with their id (and this reply comes
    # after every refusal the crowd caused).
    assert "Your Telegram id is 8000;" in await ask(botapi, 8000, "/status")
    to_group = [
        c
        for c in botapi.calls[after:]
        if c.method == "sendMessage"
        and c.params["chat_id"] == FEED_CHAT
        and "Telegram id" in c.params["text"]
    ]
    assert len(to_group) == 1, [c.summary() for c in to_group]
    text = to_group[0].params["text"]
    assert "this notice comes at most once an hour" in text and "your Telegram id is 80" in text

    # /whoami by a person in a group that is not a feed yet tells its chat and topic ids; a
    # stranger there is ignored.
    botapi.push_message(8001, "/whoami", chat_id=-100777)
    botapi.push_message(OWNER, "/whoami", chat_id=-100777, message_thread_id=12)
    [reply] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == -100777, after=after, timeout=15
    )
    text = reply.params["text"]
    assert "This chat: id <code>-100777</code>" in text
    assert "This topic: id <code>12</code>" in text
    assert "<code>alerts = { chat_id = -100777, topic = 12 }</code>" in text
    assert reply.params.get("message_thread_id") == 12


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("/task 3000000000", "There is no task #3000000000."),
        ("/task 2147483648", "There is no task #2147483648."),
        ("/task 0", "There is no task #0."),
        ("/comment 3000000000 hello", "There is no task #3000000000."),
        ("/cancel 9223372036854775808", "There is no task #9223372036854775808."),
        ("/resend 3000000000", "There is no outbox message #3000000000."),
        ("/approve 3000000000", "There is no approval #3000000000."),
        ("/reject 2147483648 no", "There is no approval #2147483648."),
        ("/ack 999", "There is no incident #999."),
        ("/resolve 3000000000", "There is no incident #3000000000."),
        ("/accept 3000000000", "There is no task #3000000000."),
        ("/sendback 3000000000 why", "There is no task #3000000000."),
        ("/files 3000000000", "There is no task #3000000000."),
        ("/exec 3000000000", "There is no command #3000000000."),
        ("/pipeline 3000000000", "There is no pipeline run #3000000000."),
        ("/pipeline 99999999999999999999", "There is no pipeline run #99999999999999999999."),
        ("/pipeline ²", "There is no pipeline ²."),
        ("/task ²", "Usage: /task &lt;id&gt;\n² is not a task number."),
        ("/audit ²", "² is not a number from 1 to 50.\nUsage: /audit [n]"),
        ("/audit 99999999999999999999", "99999999999999999999 is not a number from 1 to 50."),
        (
            "/silence site 9999999999d",
            "9999999999d is longer than the maximum, 30d.\n"
            "Usage: /silence &lt;check|fingerprint&gt; &lt;duration&gt;",
        ),
        ("/silence api 5 minutes", '"5 minutes" is not a duration; write 5m.'),
        ("/costs 9999-12", "9999-12 is outside the months this fleet knows (2000-01 to 2999-12)."),
    ],
)
async def test_ids_durations_and_months_out_of_range_get_a_precise_answer(
    fleet: Fleet, command: str, answer: str
) -> None:
    assert (await ask(fleet.botapi, OWNER, command)).startswith(answer)


async def test_fleet_costs_refuses_a_month_out_of_range(fleet: Fleet) -> None:
    config = str(fleet.process.config)
    code, out = await run_cli("costs", "--config", config, "--month", "9999-12")
    assert code == 2 and '"9999-12" is outside the months a fleet has' in out, out
    assert "Traceback" not in out


async def test_control_characters_in_text_reach_no_database(fleet: Fleet) -> None:
    botapi = fleet.botapi
    reply = await ask(botapi, OPERATOR, "/new Ship\x00 it\x07\nwith\ttabs")
    assert reply.startswith("Task #2 for hub: Ship it\n")
    assert (await ask(botapi, OPERATOR, "/comment 1 nul\x00 inside")).startswith(
        "Comment added to task #1"
    )
    assert "inside" in await ask(botapi, OPERATOR, "/task 1")
    assert (await ask(botapi, OPERATOR, "/resume coder")).startswith("Resumed coder.")
    assert (await ask(botapi, OPERATOR, "/pause coder on\x00 hold")).startswith("Paused coder.")
    assert "on hold" in await ask(botapi, OPERATOR, "/agent coder")
    assert (await ask(botapi, OPERATOR, "/silence si\x00te 2h")).startswith("Silenced site until")


async def test_a_page_button_pressed_twice_at_once_edits_once(fleet: Fleet) -> None:
    botapi = fleet.botapi
    for n in range(8):
        assert (await ask(botapi, OPERATOR, f"/new Page filler {n}")).startswith("Task #")
    listing = await _sent(botapi, OPERATOR, "/tasks")
    assert "page 1/2" in listing.params["text"]
    [[next_page]] = listing.params["reply_markup"]["inline_keyboard"]
    message_id = listing.result["message_id"]
    # Both presses carry the message as it was (page 1): the second must not edit it again.
    after = botapi.mark()
    ids = [
        botapi.push_callback(
            OPERATOR, next_page["callback_data"], message_id=message_id, chat_id=OPERATOR
        )
        for _ in range(2)
    ]
    answers = await botapi.wait_for_call(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] in ids, after=after, count=2
    )
    assert [a.params["text"] for a in answers] == ["Page 2/2", "Page 2/2"]
    edits = _edits(botapi, after)
    assert len(edits) == 1 and edits[0].ok and "page 2/2" in edits[0].params["text"]
    assert _rejected(botapi) == []
