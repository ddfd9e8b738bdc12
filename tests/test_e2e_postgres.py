"""`fleet run` on PostgreSQL: the same process, the advisory lock instead of the file lock."""

from __future__ import annotations

from pathlib import Path

from tests.botapi_server import BotAPIServer
from tests.fleet import OWNER, FleetProcess, run_cli, write_config
from tests.inproc import InProcessFleet
from tests.pg import require_pg_url, temporary_database


async def test_fleet_run_on_postgres_answers_and_a_second_instance_refuses(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    require_pg_url()
    async with temporary_database("e2e") as url:
        config = write_config(tmp_path, botapi.base_url, database_url=url)
        first = InProcessFleet(config)
        await first.start()
        await botapi.wait_until_polling(timeout=30)

        botapi.push_message(OWNER, "/status")
        [reply] = await botapi.wait_for_call("sendMessage", lambda c: c.params["chat_id"] == OWNER)
        assert "Fleet status" in reply.params["text"]

        code, out = await run_cli("send", "--config", str(config), "--feed", "alerts", "on pg")
        assert code == 0, out
        await botapi.wait_for_call("sendMessage", lambda c: c.params["text"] == "on pg")

        second = FleetProcess(config)
        await second.start()
        assert await second.wait() == 3
        assert "already polling this bot" in second.log
        assert "PostgreSQL advisory lock" in second.log
        assert "fleet run (pid" in second.log

        assert await first.stop() == 0
        assert "Traceback" not in first.log, first.log
