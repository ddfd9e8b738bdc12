"""The real `fleet run` process against the local Bot API server: people, commands, errors."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    FEED_CHAT,
    OPERATOR,
    OWNER,
    STRANGER,
    VIEWER,
    FleetProcess,
    execute,
    write_config,
)
from tests.inproc import InProcessFleet


def to_chat(chat_id: int) -> Callable[[Call], bool]:
    def match(call: Call) -> bool:
        return bool(call.params.get("chat_id") == chat_id)

    return match


async def reply_to(botapi: BotAPIServer, user: int, text: str, *, count: int = 1) -> str:
    before = len([c for c in botapi.calls_of("sendMessage") if c.params["chat_id"] == user])
    botapi.push_message(user, text)
    calls = await botapi.wait_for_call("sendMessage", to_chat(user), count=before + count)
    return str(calls[-1].params["text"])


async def test_owner_gets_start_help_and_whoami(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    assert "owner" in await reply_to(botapi, OWNER, "/start")
    help_text = await reply_to(botapi, OWNER, "/help")
    assert "/status" in help_text and "/resend" in help_text
    assert str(OWNER) in await reply_to(botapi, OWNER, "/whoami")


async def test_help_lists_only_what_the_role_may_use(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    help_text = await reply_to(botapi, VIEWER, "/help")
    assert "/status" in help_text
    assert "/resend" not in help_text


async def test_viewer_is_refused_an_operator_command(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    text = await reply_to(botapi, VIEWER, "/resend 1")
    assert text == "/resend needs the operator role; you are viewer."
    assert await reply_to(botapi, OPERATOR, "/resend 1") == "There is no outbox message #1."


async def test_unknown_user_is_refused_once_an_hour_and_logged(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    botapi.push_message(STRANGER, "/status")
    botapi.push_message(STRANGER, "/start")
    botapi.push_message(STRANGER, "hello?")
    await botapi.wait_for_call("sendMessage", to_chat(STRANGER))
    # The owner's command afterwards proves the stranger's later updates were processed.
    await reply_to(botapi, OWNER, "/whoami")
    refusals = [c for c in botapi.calls_of("sendMessage") if c.params["chat_id"] == STRANGER]
    assert len(refusals) == 1
    assert refusals[0].params["text"] == (
        f"You are not on this fleet's list. Your Telegram id is {STRANGER}; ask the owner to "
        "add it under [[people]] in the config."
    )
    await fleet.wait_log(f"refused unknown Telegram user id={STRANGER}")


async def test_group_chats_other_than_feeds_are_ignored(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    botapi.push_message(OWNER, "/status", chat_id=-100999, chat_type="supergroup")
    botapi.push_message(OWNER, "/status", chat_id=FEED_CHAT, chat_type="supergroup")
    await botapi.wait_for_call("sendMessage", to_chat(FEED_CHAT))
    await reply_to(botapi, OWNER, "/whoami")
    assert not [c for c in botapi.calls_of("sendMessage") if c.params["chat_id"] == -100999]


async def test_status_reads_the_database_and_shows_the_last_poll(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    text = await reply_to(botapi, VIEWER, "/status")
    assert "Agents: 2" in text
    assert "Open tasks: none" in text
    # Times in the configured zone (Europe/Amsterdam), which the message names.
    assert re.search(r"Last completed poll: \d\d:\d\d:\d\d CES?T", text), text
    # Jobs in one line while all is well, not eight internal names; nothing runs.
    assert re.search(r"\nJobs: all \d+ OK$", text), text
    assert "approvals-expire" not in text
    assert "Running now: nothing" in text


async def test_malformed_and_unknown_commands_get_a_specific_answer(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    assert "Usage: /resend" in await reply_to(botapi, OPERATOR, "/resend abc")
    assert "Unknown command /frobnicate" in await reply_to(botapi, OWNER, "/frobnicate now")
    long = "/resend " + "9" * 3000
    assert "There is no outbox message" in await reply_to(botapi, OPERATOR, long)


async def test_command_menu_is_registered_per_role(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    calls = await botapi.wait_for_call("setMyCommands", count=4)
    by_scope = {str(c.params.get("scope")): c.params["commands"] for c in calls}
    owner = next(v for k, v in by_scope.items() if str(OWNER) in k)
    viewer = next(v for k, v in by_scope.items() if str(VIEWER) in k)
    assert "resend" in {c["command"] for c in owner}
    assert "resend" not in {c["command"] for c in viewer}


async def test_a_second_fleet_run_on_the_same_database_refuses_to_poll(
    fleet_process: FleetProcess, fleet_config: Path, botapi: BotAPIServer
) -> None:
    second = FleetProcess(fleet_config)
    await second.start()
    code = await second.wait()
    assert code == 3
    assert "already polling this bot" in second.log
    assert re.search(r"pid \d+ on ", second.log)
    # The first one still answers.
    assert "owner" in await reply_to(botapi, OWNER, "/start")


async def test_handler_error_gives_a_reference_and_polling_goes_on(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url)
    fleet = InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=20)
    await execute(config, "DROP TABLE job_beats")  # a broken database under a running bot
    text = await reply_to(botapi, OWNER, "/status")
    ref = re.search(r"ref ([0-9a-f]{8})", text)
    assert ref, text
    await fleet.wait_log(f"error ref={ref.group(1)}")
    assert "Traceback" in fleet.log
    assert "owner" in await reply_to(botapi, OWNER, "/start")
    assert await fleet.stop() == 0


async def test_sigterm_while_handling_finishes_cleanly(
    fleet_process: FleetProcess, botapi: BotAPIServer
) -> None:
    for _ in range(5):
        botapi.push_message(OWNER, "/status")
    await botapi.wait_for_call("sendMessage", to_chat(OWNER))
    # The fixture's teardown sends SIGTERM and checks exit 0 with no traceback.
    await asyncio.sleep(0)
