"""What `fleet run` logs when it starts: one line saying what started, what check-config would
still say, and aiogram's polling lines once, not again on every restart of polling."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bot.logs import FirstPollingLines
from tests.botapi_server import BotAPIServer
from tests.fleet import FleetProcess, write_config


async def test_one_start_line_and_polling_lines_once_across_a_restart(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(
        tmp_path,
        botapi.base_url,
        extra='[[checks]]\nid = "site"\ntcp = "127.0.0.1:9"\nevery = "1h"\n',
    )
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('"claude-sonnet-4-6"', '"claude-test"', 1), encoding="utf-8")
    fleet = FleetProcess(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    await fleet.wait_log("Start polling")
    # A stalled poll makes bot.polling restart aiogram's polling loop.
    polls_before = botapi.polls
    botapi.stall("getUpdates", 60)
    await fleet.wait_log("polling stalled", timeout=30)
    while botapi.polls <= polls_before + 1:
        await asyncio.sleep(0.1)
    assert await fleet.stop() == 0
    log = fleet.log
    [started] = [line for line in log.splitlines() if " started: config " in line]
    assert started.endswith(
        f"INFO bot.app: started: config {config.resolve()}, database sqlite+aiosqlite:///"
        f"{(tmp_path / 'fleet.db').resolve()}, 2 agents, 1 check, 0 mailboxes, "
        "feeds: alerts, approvals, activity"
    )
    assert log.count("Start polling") == 1
    assert log.count("Run polling for bot") == 1
    assert log.count("Polling stopped") == 1
    # What check-config would add to a config `fleet run` accepts: a warning, as a warning.
    assert 'WARNING fleet: config: agents.hub.model: no price for "claude-test"' in log


def test_polling_lines_pass_once_each_and_always_with_debug_logging() -> None:
    logger = logging.getLogger("tests.startup.dispatcher")
    logger.propagate = False
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(Keep())
    logger.addFilter(FirstPollingLines())
    logger.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        for _ in range(3):
            logger.info("Start polling")
            logger.info("Run polling for bot @%s id=%d - %r", "fleet_bot", 1, "Fleet")
            logger.info("Polling stopped")
            logger.info("something else")
        assert seen == [
            "Start polling",
            "Run polling for bot @fleet_bot id=1 - 'Fleet'",
            "Polling stopped",
            "something else",
            "something else",
            "something else",
        ]
        root.setLevel(logging.DEBUG)
        logger.info("Start polling")
        assert seen[-1] == "Start polling"
    finally:
        root.setLevel(level)
