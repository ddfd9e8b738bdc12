"""`fleet run` on PostgreSQL: the same process, the advisory lock instead of the file lock;
a second process is a standby that leads when the first is gone."""

from __future__ import annotations

from pathlib import Path

from tests.botapi_server import BotAPIServer
from tests.fleet import OWNER, FleetProcess, ask, run_cli, write_config
from tests.pg import require_pg_url, temporary_database


async def test_fleet_run_on_postgres_answers_and_a_second_instance_stands_by(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    require_pg_url()
    async with temporary_database("e2e") as url:
        config = write_config(
            tmp_path,
            botapi.base_url,
            database_url=url,
            extra='[node]\nname = "first"\nleader_takeover = "3s"',
        )
        # Each node has its own name: a live node's name refuses a second process.
        second_config = write_config(
            tmp_path / "second",
            botapi.base_url,
            database_url=url,
            extra='[node]\nname = "second"\nleader_takeover = "3s"',
        )
        first = FleetProcess(config)
        await first.start()
        await botapi.wait_until_polling(timeout=30)
        await first.wait_log("role: leader")

        botapi.push_message(OWNER, "/status")
        [reply] = await botapi.wait_for_call("sendMessage", lambda c: c.params["chat_id"] == OWNER)
        assert "Fleet status" in reply.params["text"]

        code, out = await run_cli("send", "--config", str(config), "--feed", "alerts", "on pg")
        assert code == 0, out
        await botapi.wait_for_call("sendMessage", lambda c: c.params["text"] == "on pg")

        # A second node starts as a standby: it names the leader and does not poll.
        second = FleetProcess(second_config)
        await second.start()
        await second.wait_log("role: standby", timeout=30)
        assert "fleet run (pid" in second.log
        assert "role: leader" not in second.log
        assert await ask(botapi, OWNER, "/whoami")
        assert not [c for c in botapi.calls_of("getUpdates") if c.status == 409]

        # The leader stops: the standby takes the lock and polls from Telegram's offset.
        assert await first.stop() == 0
        await second.wait_log("role: leader", timeout=30)
        assert "Fleet status" in await ask(botapi, OWNER, "/status")
        assert await second.stop() == 0
        for process in (first, second):
            assert "Traceback" not in process.log, process.log
