"""Config safety with the real `fleet run`: last-known-good on start, a broken edit while
running keeps the old config and alerts with the precise errors, `fleet config rollback`
restores the file, and a valid edit says what changed and that it needs a restart."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.config import load_config
from bot.config_watch import ConfigWatch, last_good_path, rollback, save_last_good
from storage.db import Database
from storage.models import Outbox
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    TOKEN,
    VIEWER,
    ask,
    query,
    run_cli,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet


def to_alerts(call: Call) -> bool:
    return bool(
        call.params.get("chat_id") == FEED_CHAT
        and call.params.get("message_thread_id") == ALERTS_TOPIC
    )


async def test_a_broken_edit_keeps_the_old_config_and_alerts_and_rollback_restores_it(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    config = write_config(tmp_path, botapi.base_url, extra='[watchdog]\nconfig_poll = "250ms"\n')
    original = config.read_text()
    fleet = InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    good = config.with_name("fleet.toml.last-good")
    await wait_query(
        config, "SELECT count(*) FROM job_beats WHERE job_id = 'config-watch'", [(1,)]
    )
    assert good.read_text() == original
    assert len(config.with_name("fleet.toml.last-good.sha256").read_text().strip()) == 64

    broken = original.replace('timezone = "Europe/Amsterdam"', 'timezone = "Mars/Olympus"')
    broken = broken.replace("polling_timeout = 2", "polling_timeout = 2\npoling = 3")
    config.write_text(broken)
    [alert] = await botapi.wait_for_call(
        "sendMessage", lambda c: to_alerts(c) and "invalid" in str(c.params["text"]), timeout=30
    )
    text = str(alert.params["text"])
    assert "the running config stays in force" in text
    assert "timezone: unknown time zone &quot;Mars/Olympus&quot;" in text
    assert (
        "telegram.poling: unknown key "
        "(known: token, api_base, polling_timeout, messages_per_second)" in text
    )
    # Still running on the old config: commands answer, in the old time zone.
    assert "Fleet status" in await ask(botapi, VIEWER, "/status")
    notices = query(config, "SELECT agent_id, kind FROM inbox")
    assert notices == [("hub", "oversight")]

    code, out = await run_cli("config", "rollback", "--config", str(config))
    assert code == 0 and "restored" in out, out
    assert config.read_text() == original
    assert config.with_name("fleet.toml.rejected").read_text() == broken

    valid = original.replace('timezone = "Europe/Amsterdam"', 'timezone = "Europe/Lisbon"')
    config.write_text(valid)
    [changed] = await botapi.wait_for_call(
        "sendMessage", lambda c: to_alerts(c) and "is valid" in str(c.params["text"]), timeout=30
    )
    assert "Changed: timezone." in changed.params["text"]
    assert "restart" in changed.params["text"]
    # (The hub, woken by the oversight notice, fails its run with no model here: not counted.)
    posted = [str(c.params["text"]) for c in botapi.calls_of("sendMessage") if to_alerts(c)]
    assert len([t for t in posted if "Config file" in t]) == 2, posted
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


async def test_rollback_without_a_last_known_good_copy_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    code, out = await run_cli("config", "rollback", "--config", str(config))
    assert code == 1
    assert "no last-known-good copy" in out


async def test_config_safety_last_good_is_the_validated_bytes_with_the_configs_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    path = write_config(tmp_path, "http://127.0.0.1:9")
    path.chmod(0o600)
    original = path.read_bytes()
    loaded = load_config(path)  # validated at startup
    db = Database(loaded.database.url)
    try:
        await db.migrate()
        # An edit lands between validation and the last-known-good copy (startup's window).
        broken = original.replace(b'timezone = "Europe/Amsterdam"', b'timezone = "Mars/Olympus"')
        path.write_bytes(broken)
        good = last_good_path(path)
        good.with_name(good.name + ".tmp").write_bytes(b"left by a crash")  # 0644 leftover
        value = save_last_good(loaded)
        assert good.read_bytes() == original and value == hashlib.sha256(original).hexdigest()
        for saved in (good, good.with_name(good.name + ".sha256")):
            assert stat.S_IMODE(saved.stat().st_mode) == 0o600, saved
        # The running digest is the validated file's, so the watch judges the edit.
        watch = ConfigWatch(loaded, db, value)
        await watch.run()
        await watch.run()
        async with db.session() as session:
            [alert] = (await session.execute(select(Outbox))).scalars()
        assert "invalid" in alert.text and "Mars/Olympus" in alert.text

        ok, _ = rollback(path)
        assert ok and path.read_bytes() == original
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        await db.dispose()
