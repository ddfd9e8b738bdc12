"""Tests of the fake Bot API server, driven by a real aiogram Bot (no mocks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from tests.botapi_server import BotAPIServer, parse_entities, utf16_len

USER = 1001


@pytest.fixture
async def botapi() -> AsyncIterator[BotAPIServer]:
    async with BotAPIServer() as server:
        yield server


@pytest.fixture
async def bot(botapi: BotAPIServer) -> AsyncIterator[Bot]:
    bot = botapi.make_bot()
    try:
        yield bot
    finally:
        await bot.session.close()


async def raw_post(
    server: BotAPIServer, method: str, data: dict[str, Any] | None = None, *, json: Any = None
) -> tuple[int, dict[str, Any]]:
    url = f"{server.base_url}/bot{server.token}/{method}"
    async with aiohttp.ClientSession() as session, session.post(url, data=data, json=json) as resp:
        return resp.status, await resp.json()


def keyboard(*buttons: InlineKeyboardButton) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[list(buttons)])


# ---- basics ---------------------------------------------------------------------------------


async def test_get_me(botapi: BotAPIServer, bot: Bot) -> None:
    me = await bot.get_me()
    assert me.id == bot.id == 123456
    assert me.is_bot and me.username == "fleet_test_bot" and me.can_join_groups
    assert [c.method for c in botapi.calls] == ["getMe"]
    assert botapi.calls[0].ok and botapi.calls[0].token == botapi.token


async def test_send_message_round_trip_with_inline_keyboard(
    botapi: BotAPIServer, bot: Bot
) -> None:
    markup = keyboard(
        InlineKeyboardButton(text="Approve", callback_data="approve:7"),
        InlineKeyboardButton(text="Docs", url="https://example.com/docs"),
    )
    sent = await bot.send_message(
        USER,
        "<b>Task</b> #7 &amp; more",
        parse_mode="HTML",
        reply_markup=markup,
        message_thread_id=5,
    )
    assert sent.chat.id == USER and sent.chat.type == "private"
    assert sent.from_user is not None and sent.from_user.id == bot.id
    assert sent.text == "Task #7 & more"
    assert sent.entities is not None and sent.entities[0].type == "bold"
    assert sent.message_thread_id == 5
    assert isinstance(sent.reply_markup, InlineKeyboardMarkup)
    assert sent.reply_markup.model_dump(exclude_none=True) == markup.model_dump(exclude_none=True)

    second = await bot.send_message(USER, "again")
    assert second.message_id == sent.message_id + 1

    call = botapi.calls_of("sendMessage")[0]
    assert call.params["chat_id"] == USER  # decoded to int
    assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "approve:7"
    assert botapi.sent_texts(USER) == ["<b>Task</b> #7 &amp; more", "again"]
    assert botapi.sent_texts(999) == []
    assert [m["text"] for m in botapi.sent_messages(USER)] == ["Task #7 & more", "again"]


# ---- validation -----------------------------------------------------------------------------


async def test_unknown_parameter_is_rejected(botapi: BotAPIServer) -> None:
    status, body = await raw_post(
        botapi, "sendMessage", {"chat_id": "1", "text": "x", "colour": "red"}
    )
    assert status == 400
    assert body == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: unknown parameter 'colour' for method sendMessage",
    }
    assert botapi.calls[-1].status == 400  # rejected calls are recorded too
    assert botapi.calls_of("sendMessage") == []


async def test_missing_required_parameters(botapi: BotAPIServer, bot: Bot) -> None:
    status, body = await raw_post(botapi, "sendMessage", {"text": "x"})
    assert status == 400 and "'chat_id' is required" in body["description"]
    # aiogram drops empty strings from the form, so Telegram sees no text at all:
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(USER, "")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(USER, "  \n ")


async def test_parameter_types_are_checked(botapi: BotAPIServer) -> None:
    status, body = await raw_post(
        botapi, "sendMessage", {"chat_id": "1", "text": "x", "disable_notification": "maybe"}
    )
    assert status == 400
    assert body["description"] == (
        "Bad Request: parameter 'disable_notification' must be Boolean, got 'maybe'"
    )
    status, body = await raw_post(
        botapi, "sendMessage", {"chat_id": "1", "text": "x", "reply_markup": "{not json"}
    )
    assert status == 400 and "can't parse reply_markup" in body["description"]
    status, body = await raw_post(
        botapi,
        "sendMessage",
        json={"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [[{"data": "x"}]]}},
    )
    assert status == 400
    assert body["description"] == (
        "Bad Request: unknown field 'data' in reply_markup.inline_keyboard[0][0] "
        "(InlineKeyboardButton)"
    )
    status, body = await raw_post(
        botapi,
        "sendMessage",
        json={"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [[{"url": "u"}]]}},
    )
    assert status == 400 and 'Can\'t find field "text"' in body["description"]
    assert "reply_markup.inline_keyboard[0][0]" in body["description"]


async def test_text_length_is_counted_in_utf16_after_entity_parsing(bot: Bot) -> None:
    await bot.send_message(USER, "a" * 4096)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER, "a" * 4097)
    # 2049 astral characters are 4098 UTF-16 code units:
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER, "\U0001f600" * 2049)
    # tags and entities do not count
    await bot.send_message(USER, "<b>" + "&lt;" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(USER, BufferedInputFile(b"x", "p.png"), caption="c" * 1025)


async def test_callback_data_must_be_1_to_64_bytes(bot: Bot) -> None:
    await bot.send_message(
        USER, "ok", reply_markup=keyboard(InlineKeyboardButton(text="x", callback_data="d" * 64))
    )
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(
            USER,
            "x",
            reply_markup=keyboard(InlineKeyboardButton(text="x", callback_data="d" * 65)),
        )
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):  # 33 x 2 bytes
        await bot.send_message(
            USER,
            "x",
            reply_markup=keyboard(InlineKeyboardButton(text="x", callback_data="é" * 33)),
        )
    with pytest.raises(TelegramBadRequest, match="Text buttons are unallowed"):
        await bot.send_message(USER, "x", reply_markup=keyboard(InlineKeyboardButton(text="x")))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("line<br>break", 'Unsupported start tag "br" at byte offset 4'),
        ("Q&A", "Character '&' at byte offset 1 does not start an HTML entity"),
        ('<span class="x">s</span>', 'Tag "span" must have class "tg-spoiler"'),
        ("<a href=x", "Unclosed start tag"),
    ],
)
async def test_bad_html_is_rejected(bot: Bot, text: str, error: str) -> None:
    with pytest.raises(TelegramBadRequest) as excinfo:
        await bot.send_message(USER, text, parse_mode="HTML")
    assert "Bad Request: can't parse entities: " + error in excinfo.value.message


async def test_good_html_and_markdown() -> None:
    html = (
        "<b>b</b> <i>i</i> <u>u</u> <s>s</s> <tg-spoiler>sp</tg-spoiler> "
        '<span class="tg-spoiler">sp</span> <a href="https://x.y/?a=1&b=2">link</a> '
        '<code>c</code> <pre><code class="language-python">p</code></pre> '
        "<blockquote expandable>q</blockquote> &lt;&gt;&amp;&quot;&#33;&#x21; \U0001f600<b>e</b>"
    )
    text, entities = parse_entities(html, "HTML")
    assert text == 'b i u s sp sp link c p q <>&"!! \U0001f600e'
    types = [e["type"] for e in entities]
    assert types == [
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "spoiler",
        "text_link",
        "code",
        "pre",
        "expandable_blockquote",
        "bold",
    ]
    assert entities[6]["url"] == "https://x.y/?a=1&b=2"
    assert entities[8]["language"] == "python"
    assert entities[-1]["offset"] == utf16_len(text) - 1  # the emoji counts 2

    assert parse_entities(r"*bold* _it_ [l](http://x\.y) 1\.5\!", "MarkdownV2")[0] == (
        "bold it l 1.5!"
    )
    assert parse_entities("*b* _i_ `c`", "Markdown") == (
        "b i c",
        [
            {"type": "bold", "offset": 0, "length": 1},
            {"type": "italic", "offset": 2, "length": 1},
            {"type": "code", "offset": 4, "length": 1},
        ],
    )


async def test_markdown_v2_and_parse_mode_errors(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match=r"Character '\.' is reserved"):
        await bot.send_message(USER, "Done.", parse_mode="MarkdownV2")
    with pytest.raises(TelegramBadRequest, match="Can't find end of Bold entity at byte offset 0"):
        await bot.send_message(USER, "*x", parse_mode="MarkdownV2")
    with pytest.raises(TelegramBadRequest, match="unsupported parse_mode"):
        await bot.send_message(USER, "x", parse_mode="XML")


async def test_default_bot_properties_fields_are_accepted(botapi: BotAPIServer) -> None:
    # aiogram sends the pre-7.0 disable_web_page_preview next to link_preview_options here
    bot = botapi.make_bot(
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True)
    )
    try:
        sent = await bot.send_message(USER, "<i>hi</i>")
        await bot.edit_message_text("<b>hi</b>", chat_id=USER, message_id=sent.message_id)
    finally:
        await bot.session.close()
    params = botapi.calls_of("sendMessage")[0].params
    assert params["disable_web_page_preview"] is True
    assert params["link_preview_options"] == {"is_disabled": True}


# ---- faults ---------------------------------------------------------------------------------


async def test_fail_next_429_surfaces_as_retry_after(botapi: BotAPIServer, bot: Bot) -> None:
    botapi.fail_next("sendMessage", status=429, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as excinfo:
        await bot.send_message(USER, "x")
    assert excinfo.value.retry_after == 3
    assert botapi.calls[-1].response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    await bot.send_message(USER, "x")  # only the next call failed
    assert len(botapi.calls_of("sendMessage")) == 1


async def test_fail_next_other_statuses(botapi: BotAPIServer, bot: Bot) -> None:
    botapi.fail_next("getme", status=500, times=2)
    for _ in range(2):
        with pytest.raises(TelegramServerError, match="Internal Server Error"):
            await bot.get_me()
    await bot.get_me()
    botapi.fail_next("getUpdates", status=409)
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await bot.get_updates(timeout=0)
    botapi.fail_next("sendMessage", status=502, times=1000)
    botapi.fail_next("sendMessage", status=502, times=0)  # replaces: faults off again
    await bot.send_message(USER, "delivered")
    with pytest.raises(ValueError, match="not a Bot API method"):
        botapi.fail_next("sendMesage", status=500)


async def test_stall_and_client_timeout(botapi: BotAPIServer, bot: Bot) -> None:
    botapi.stall("getMe", 0.15)
    started = time.monotonic()
    await bot.get_me()
    assert time.monotonic() - started >= 0.15
    botapi.stall("getMe", 5)
    with pytest.raises(TelegramNetworkError):
        await bot.get_me(request_timeout=0.1)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert botapi.calls[-1].status == 499  # the client went away; handler was cancelled
    assert botapi.errors == []
    await bot.get_me()


async def test_wrong_token_and_unknown_method(botapi: BotAPIServer) -> None:
    other = botapi.make_bot(token="654321:WRONG")
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await other.get_me()
    finally:
        await other.session.close()
    status, body = await raw_post(botapi, "sendTelepathy", {"x": "1"})
    assert (status, body) == (404, {"ok": False, "error_code": 404, "description": "Not Found"})
    assert [(c.method, c.status) for c in botapi.calls] == [("getMe", 401), ("sendTelepathy", 404)]


async def test_method_names_are_case_insensitive_and_json_bodies_work(
    botapi: BotAPIServer,
) -> None:
    status, body = await raw_post(botapi, "SENDMESSAGE", json={"chat_id": 5, "text": "hi"})
    assert status == 200 and body["result"]["text"] == "hi"
    assert botapi.calls_of("sendmessage")[0].method == "sendMessage"


# ---- long polling ---------------------------------------------------------------------------


async def test_long_polling_returns_pushed_updates_and_respects_offset(
    botapi: BotAPIServer, bot: Bot
) -> None:
    first = botapi.push_message(USER, "/start@fleet_test_bot go", username="alice")
    second = botapi.push_message(USER, "hello", chat_id=-100500, message_thread_id=9)
    assert second == first + 1

    updates = await bot.get_updates(timeout=1)
    assert [u.update_id for u in updates] == [first, second]
    start = updates[0].message
    assert start is not None and start.from_user is not None
    assert start.from_user.username == "alice" and start.chat.type == "private"
    assert start.entities is not None and start.entities[0].type == "bot_command"
    assert start.entities[0].length == len("/start@fleet_test_bot")
    group = updates[1].message
    assert group is not None and group.chat.type == "supergroup" and group.chat.title
    assert group.message_thread_id == 9 and group.is_topic_message

    # not confirmed yet -> delivered again; offset confirms
    assert len(await bot.get_updates(timeout=0)) == 2
    assert [u.update_id for u in await bot.get_updates(offset=second, timeout=0)] == [second]
    assert await bot.get_updates(offset=second + 1, timeout=0) == []
    assert botapi.pending_updates == []
    assert botapi.polls == 4


async def test_long_poll_without_updates_answers_empty_after_timeout(bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == []
    assert 0.9 <= time.monotonic() - started < 4  # waited for the timeout, and not forever


async def test_long_poll_wakes_up_on_push(botapi: BotAPIServer, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await botapi.wait_until_polling(timeout=2)
    started = time.monotonic()
    update_id = botapi.push_message(USER, "ping")
    updates = await poll
    assert [u.update_id for u in updates] == [update_id]
    assert time.monotonic() - started < 4  # answered by the push, not the 5 s timeout


async def test_limit_and_allowed_updates(botapi: BotAPIServer, bot: Bot) -> None:
    ids = [botapi.push_message(USER, str(i)) for i in range(3)]
    assert [u.update_id for u in await bot.get_updates(limit=2, timeout=0)] == ids[:2]
    callback = botapi.push_callback(USER, "data", message_id=1, chat_id=USER)
    updates = await bot.get_updates(offset=ids[2], timeout=0, allowed_updates=["message"])
    assert [u.update_id for u in updates] == [ids[2]]
    assert botapi.dropped_updates[0]["callback_query"]["id"] == callback


async def test_concurrent_get_updates_conflict(botapi: BotAPIServer, bot: Bot) -> None:
    older = asyncio.create_task(bot.get_updates(timeout=5))
    await botapi.wait_until_polling(timeout=2)
    second_bot = botapi.make_bot()
    try:
        assert await second_bot.get_updates(timeout=0) == []
    finally:
        await second_bot.session.close()
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await older
    assert [c.status for c in botapi.calls] == [200, 409]


async def test_client_disconnect_mid_poll(botapi: BotAPIServer) -> None:
    url = f"{botapi.base_url}/bot{botapi.token}/getUpdates"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(url, data={"timeout": "5"}, timeout=aiohttp.ClientTimeout(0.1))
    await asyncio.sleep(0.05)
    assert botapi.calls[-1].status == 499
    assert botapi.update_waiters == 0 and botapi.errors == []


async def test_stop_answers_a_waiting_poll() -> None:
    server = BotAPIServer()
    await server.start()
    bot = server.make_bot()
    try:
        poll = asyncio.create_task(bot.get_updates(timeout=30))
        await server.wait_until_polling(timeout=2)
        started = time.monotonic()
        await server.stop()
        assert await poll == []
        assert time.monotonic() - started < 10  # stop() answered it; the poll asked for 30 s
    finally:
        await bot.session.close()


async def test_webhook_blocks_polling_and_delete_webhook_drops(
    botapi: BotAPIServer, bot: Bot
) -> None:
    botapi.push_message(USER, "old")
    await bot.set_webhook("https://example.com/hook")
    with pytest.raises(TelegramConflictError, match="webhook is active"):
        await bot.get_updates(timeout=0)
    assert (await bot.get_webhook_info()).pending_update_count == 1
    await bot.delete_webhook(drop_pending_updates=True)
    assert await bot.get_updates(timeout=0) == []


# ---- world model ----------------------------------------------------------------------------


async def test_edits_follow_telegram_rules(botapi: BotAPIServer, bot: Bot) -> None:
    sent = await bot.send_message(
        USER, "v1", reply_markup=keyboard(InlineKeyboardButton(text="Go", callback_data="go"))
    )
    edited = await bot.edit_message_text("v2", chat_id=USER, message_id=sent.message_id)
    assert isinstance(edited, Message) and edited.text == "v2" and edited.reply_markup is None
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("v2", chat_id=USER, message_id=sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER, message_id=999)
    botapi.push_message(USER, "mine")
    user_message_id = max(botapi.messages[USER])
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text("x", chat_id=USER, message_id=user_message_id)
    assert botapi.message(USER, sent.message_id)["text"] == "v2"  # type: ignore[index]
    await bot.delete_message(USER, sent.message_id)
    assert botapi.message(USER, sent.message_id) is None


async def test_callbacks(botapi: BotAPIServer, bot: Bot) -> None:
    query_id = botapi.push_callback(
        USER, "approve:1", message_id=77, chat_id=USER, message_text="Approve?"
    )
    [update] = await bot.get_updates(timeout=0)
    query = update.callback_query
    assert query is not None and query.id == query_id and query.data == "approve:1"
    assert query.message is not None and query.message.message_id == 77
    assert await bot.answer_callback_query(query_id, text="Done")
    assert botapi.answered_callbacks[query_id]["text"] == "Done"
    with pytest.raises(TelegramBadRequest, match="query ID is invalid"):
        await bot.answer_callback_query("12345")
    # a message known only through the callback can be edited (its markup is unknown)
    await bot.edit_message_reply_markup(chat_id=USER, message_id=77, reply_markup=None)


async def test_commands(botapi: BotAPIServer, bot: Bot) -> None:
    scope = BotCommandScopeChat(chat_id=USER)
    await bot.set_my_commands(
        [BotCommand(command="status", description="Show status")], scope=scope
    )
    assert [c.command for c in await bot.get_my_commands(scope=scope)] == ["status"]
    assert await bot.get_my_commands() == []
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Status", description="x")])
    with pytest.raises(TelegramBadRequest, match="description must be non-empty"):
        await bot.set_my_commands([BotCommand(command="status", description=" ")])


async def test_upload_and_download(botapi: BotAPIServer, bot: Bot) -> None:
    sent = await bot.send_document(
        USER,
        BufferedInputFile(b"report", "report.txt"),
        caption="<i>weekly</i>",
        parse_mode="HTML",
    )
    assert sent.document is not None and sent.document.file_name == "report.txt"
    assert sent.caption == "weekly"
    call = botapi.calls_of("sendDocument")[0]
    assert call.params["document"].data == b"report"
    file = await bot.get_file(sent.document.file_id)
    assert file.file_path is not None
    downloaded = await bot.download_file(file.file_path)
    assert downloaded is not None and downloaded.read() == b"report"


async def test_wait_for_call_reports_recorded_calls_on_timeout(
    botapi: BotAPIServer, bot: Bot
) -> None:
    await bot.send_message(USER, "not it")
    with pytest.raises(AssertionError) as excinfo:
        await botapi.wait_for_call("sendMessage", lambda c: c.params["chat_id"] == 7, timeout=0.1)
    assert "sendMessage -> ok" in str(excinfo.value) and "not it" in str(excinfo.value)


# ---- a real dispatcher ----------------------------------------------------------------------


async def test_dispatcher_end_to_end(botapi: BotAPIServer, bot: Bot) -> None:
    dp = Dispatcher()

    @dp.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(
            "Pick one",
            reply_markup=keyboard(InlineKeyboardButton(text="A", callback_data="pick:a")),
        )

    @dp.callback_query(F.data.startswith("pick:"))
    async def pick(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        await query.message.edit_text(f"Picked {query.data}")
        await query.answer("ok")

    polling = asyncio.create_task(
        dp.start_polling(bot, polling_timeout=1, handle_signals=False, close_bot_session=False)
    )
    try:
        botapi.push_message(USER, "/start")
        [reply] = await botapi.wait_for_call("sendMessage", timeout=3)
        message_id = reply.result["message_id"]
        botapi.push_callback(USER, "pick:a", message_id=message_id, chat_id=USER)
        await botapi.wait_for_call("answerCallbackQuery", timeout=3)
        assert botapi.message(USER, message_id)["text"] == "Picked pick:a"  # type: ignore[index]
        allowed = botapi.calls_of("getUpdates")[0].params["allowed_updates"]
        assert set(allowed) == {"message", "callback_query"}
    finally:
        await botapi.wait_until_polling(timeout=2)
        await dp.stop_polling()
        await polling
    await asyncio.sleep(0.05)
    assert botapi.calls[-1].method == "getUpdates" and botapi.calls[-1].status == 499
    assert botapi.errors == []
