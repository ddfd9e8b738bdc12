"""The outbox and the poll loop, end to end: pacing, retries, splitting, crash recovery."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    ALERTS_TOPIC,
    FEED_CHAT,
    TOKEN,
    FleetProcess,
    fleet_env,
    query,
    run_cli,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet


def in_feed(call: Call) -> bool:
    return bool(call.params.get("chat_id") == FEED_CHAT)


async def send_alert(config: Path, text: str, *extra: str) -> None:
    code, out = await run_cli("send", "--config", str(config), "--feed", "alerts", *extra, text)
    assert code == 0, out


async def test_alert_reaches_the_feed_topic(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    await send_alert(fleet_config, "disk <90%> & rising")
    [call] = await botapi.wait_for_call("sendMessage", in_feed)
    assert call.params["text"] == "disk &lt;90%&gt; &amp; rising"
    assert call.params["message_thread_id"] == ALERTS_TOPIC
    await wait_query(fleet_config, "SELECT status, attempts FROM outbox", [("sent", 0)])


async def test_429_retry_after_is_waited_out_and_the_message_arrives_once(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    botapi.fail_next("sendMessage", status=429, retry_after=2)
    started = time.monotonic()
    await send_alert(fleet_config, "rate limited alert")
    await botapi.wait_for_call("sendMessage", in_feed, timeout=15)
    delivered = [c for c in botapi.calls_of("sendMessage") if in_feed(c)]
    attempts = [c for c in botapi.calls if c.method == "sendMessage" and in_feed(c)]
    assert [c.params["text"] for c in delivered] == ["rate limited alert"]
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.9
    assert time.monotonic() - started >= 2
    await asyncio.sleep(1.5)  # nothing else turns up later
    assert len([c for c in botapi.calls_of("sendMessage") if in_feed(c)]) == 1


async def test_a_5000_character_alert_arrives_as_two_valid_messages(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    lines = [f"<b>check {i}</b> failed: <code>HTTP 503</code>" for i in range(120)]
    text = "\n".join(lines)
    assert 4096 < len(text) < 8192
    await send_alert(fleet_config, text, "--html")
    calls = await botapi.wait_for_call("sendMessage", in_feed, count=2, timeout=15)
    assert [c.status for c in botapi.calls if c.method == "sendMessage"] == [200, 200]
    assert "\n".join(c.params["text"] for c in calls) == text
    await wait_query(fleet_config, "SELECT status, parts_sent FROM outbox", [("sent", 2)])


async def test_server_errors_are_retried_then_given_up_with_a_log_line(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url)
    botapi.fail_next("sendMessage", status=500, times=3)
    fleet = InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=20)
    await send_alert(config, "flaky network")
    await botapi.wait_for_call("sendMessage", in_feed, timeout=20)
    await wait_query(config, "SELECT status, attempts FROM outbox", [("sent", 3)])
    assert await fleet.stop() == 0


async def test_a_refused_message_is_marked_failed_never_dropped(
    fleet: InProcessFleet, fleet_config: Path, botapi: BotAPIServer
) -> None:
    botapi.fail_next("sendMessage", status=400, description="Bad Request: chat not found")
    await send_alert(fleet_config, "to nowhere")
    await fleet.wait_log("failed for good")
    await wait_query(fleet_config, "SELECT status FROM outbox", [("failed",)])
    [(error,)] = query(fleet_config, "SELECT last_error FROM outbox")
    assert "chat not found" in error


async def test_outbox_rows_survive_kill_9_and_are_delivered_after_restart(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url)
    botapi.fail_next("sendMessage", status=502, times=1000)
    fleet = FleetProcess(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=20)
    for i in range(3):
        await send_alert(config, f"alert {i}")
    while not [c for c in botapi.calls if c.method == "sendMessage"]:
        await asyncio.sleep(0.05)
    await fleet.kill()
    await wait_query(config, "SELECT count(*) FROM outbox WHERE status = 'pending'", [(3,)])

    botapi.fail_next("sendMessage", status=502, times=0)
    restarted = FleetProcess(config)
    await restarted.start()
    calls = await botapi.wait_for_call("sendMessage", in_feed, count=3, timeout=60)
    assert [c.params["text"] for c in calls] == ["alert 0", "alert 1", "alert 2"]
    assert await restarted.stop() == 0
    await wait_query(config, "SELECT DISTINCT status FROM outbox", [("sent",)])


async def test_a_send_cut_short_by_kill_9_is_sent_again_and_the_log_says_so(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url)
    fleet = FleetProcess(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=20)
    botapi.stall("sendMessage", 60)  # the process dies while Telegram has not answered
    await send_alert(config, "disk full on web-1")
    deadline = time.monotonic() + 30
    while botapi.stalls_left("sendMessage"):  # until the send has reached Telegram
        assert time.monotonic() < deadline, fleet.log
        await asyncio.sleep(0.02)
    assert query(config, "SELECT in_flight_at IS NOT NULL FROM outbox") == [(1,)]
    await fleet.kill()

    restarted = FleetProcess(config)
    await restarted.start()
    [call] = await botapi.wait_for_call("sendMessage", in_feed, timeout=30)
    assert call.params["text"] == "disk full on web-1"
    await wait_query(config, "SELECT status, in_flight_at FROM outbox", [("sent", None)])
    assert await restarted.stop() == 0
    assert "the process stopped while part 1 was being sent" in restarted.log
    assert "may show twice" in restarted.log


async def test_a_stalled_poll_is_restarted_and_alerted(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    polls_before = botapi.polls
    botapi.stall("getUpdates", 60)
    [alert] = await botapi.wait_for_call("sendMessage", in_feed, timeout=30)
    assert "polling stalled" in alert.params["text"]
    await fleet.wait_log("polling stalled")
    while botapi.polls <= polls_before + 1:
        await asyncio.sleep(0.1)


async def test_409_conflict_is_logged_once_a_minute(
    fleet: InProcessFleet, botapi: BotAPIServer
) -> None:
    botapi.fail_next("getUpdates", status=409, times=4)
    while len([c for c in botapi.calls if c.method == "getUpdates" and c.status == 409]) < 4:
        await asyncio.sleep(0.1)
    await fleet.wait_log("409 Conflict")
    assert fleet.log.count("409 Conflict") == 1
    assert "Failed to fetch updates" not in fleet.log


async def test_a_rejected_token_stops_with_a_clear_message(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url)
    fleet = InProcessFleet(config, env=fleet_env(TELEGRAM_BOT_TOKEN="999:WRONG-token-value"))
    await fleet.start()
    assert await fleet.wait() == 4
    assert "Telegram rejected the bot token" in fleet.log
    assert "WRONG-token-value" not in fleet.log


async def test_run_without_the_token_names_the_variable(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url)
    env = fleet_env()
    del env["TELEGRAM_BOT_TOKEN"]
    code, out = await run_cli("run", "--config", str(config), env=env)
    assert code == 2
    assert "telegram.token: references ${TELEGRAM_BOT_TOKEN}, which is not set" in out
    assert TOKEN not in out
