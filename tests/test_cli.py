"""The `fleet` command line, run as the real console script in a subprocess."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from bot.scaffold import TEMPLATE_FILES, init
from storage.db import head_revision

# Distinctive, so any leak into the output is unmistakable; shaped like a token from
# @BotFather (35 characters after the colon), so that check-config has nothing to say of it.
SECRET = "123456789:AAH-cli-s3cr3t-9d2e41-QQQQQQQQQQQQQ"

_FLEET = Path(sys.executable).parent / "fleet"
FLEET = [str(_FLEET)] if _FLEET.exists() else [sys.executable, "-m", "bot.cli"]

AGENTS = ("hub", "coder", "writer", "researcher", "social", "marketer")
HEAD = head_revision()


def fleet(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `fleet ARGS` with a clean copy of the environment plus `env`; the secret must never
    show up in what it prints."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "ANTHROPIC_"))
    }
    environ.update(env)
    done = subprocess.run(
        [*FLEET, *map(str, args)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert SECRET not in done.stdout
    assert SECRET not in done.stderr
    return done


def db_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[telegram]\ntoken = "${FLEET_CLI_TOKEN}"\n'
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/fleet.db"\n'
        "[feeds]\nalerts = { chat_id = -1001234, topic = 3 }\n"
        '[[people]]\ntelegram_id = 4242\nname = "Ana"\nrole = "owner"\n' + extra,
        encoding="utf-8",
    )
    return path


def snapshot(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {
        path: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- check-config --------------------------------------------------------------------------


def test_check_config_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text(
        '[telegram]\ntoken = "${FLEET_CLI_TOKEN}"\ntokn = "x"\n'
        "[feeds]\nalarms = { chat_id = 1 }\n"
        '[[agents]]\nid = "hub"\nhub = true\nworkspace = "w"\nmodel = "m"\nheartbeat = "30x"\n',
        encoding="utf-8",
    )
    done = fleet("check-config", "--config", config, cwd=tmp_path, FLEET_CLI_TOKEN=SECRET)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f'{config}: telegram.tokn: unknown key (did you mean "token"?)',
        f'{config}: feeds.alarms: unknown key (did you mean "alerts"?)',
        f'{config}: agents.hub.heartbeat: "30x" is not a duration like "45s", "10m", "2h" or "1d"',
        f"{config}: agents.hub.workspace: folder {tmp_path / 'w'} does not exist "
        "(`fleet init` writes example workspaces)",
        f'{config}: people: nobody is listed: add yourself as [[people]] with role = "owner" '
        "(the bot refuses everyone who is not listed)",
        f"{config}: anthropic: no API key for the agents: set ANTHROPIC_API_KEY, or give "
        '[anthropic.profiles.primary] an api_key = "${VAR}" or api_key_file',
        f"{config}: warning: feeds.alerts: not set: incidents and failures are recorded but "
        "posted nowhere",
        f'{config}: warning: agents.hub.model: no price for "m": its calls count as $0, so '
        'budgets never stop them; add [pricing."m"] with input and output (USD per million '
        "tokens)",
    ]


def test_check_config_ok(tmp_path: Path) -> None:
    config = db_config(tmp_path)
    done = fleet("check-config", "--config", config, cwd=tmp_path, FLEET_CLI_TOKEN=SECRET)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_check_config_without_a_file(tmp_path: Path) -> None:
    done = fleet("check-config", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "fleet.toml: file not found (create one with `fleet init`)\n"


# --- init ----------------------------------------------------------------------------------


def test_init_writes_a_config_and_workspaces_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "myfleet"
    done = fleet("init", target, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = {target / "fleet.toml"} | {
        target / "workspaces" / agent / name for agent in AGENTS for name in TEMPLATE_FILES
    }
    assert set(snapshot(target)) == expected
    assert len(expected) == 37
    config = target / "fleet.toml"
    assert done.stdout == (
        f"wrote 37 files under {target}. Next:\n"
        f"  1. Edit {config}: your Telegram id under [[people]] (@userinfobot tells you\n"
        "     yours) and your group's chat id under [feeds] (or remove [feeds] for now).\n"
        "  2. Put the bot's token from @BotFather in TELEGRAM_BOT_TOKEN and your Anthropic\n"
        "     key in ANTHROPIC_API_KEY (export them; under systemd, in its EnvironmentFile).\n"
        f"  3. Check, then start: fleet check-config --config {config}\n"
        f"                        fleet run --config {config}\n"
    )
    assert config.read_text(encoding="utf-8").startswith(
        "# fleetbridge configuration, written by `fleet init`."
    )
    assert (
        (target / "workspaces" / "coder" / "SOUL.md").read_text().startswith("# Developer (coder)")
    )

    # What check-config says of a fresh one is the EDIT list (tests/test_config_check.py).
    checked = fleet(
        "check-config", "--config", config, cwd=tmp_path,
        TELEGRAM_BOT_TOKEN=SECRET, ANTHROPIC_API_KEY="sk-ant-cli",
    )  # fmt: skip
    assert checked.returncode == 2
    assert "people.Ana.telegram_id: 123456789 is the example id" in checked.stderr

    # a person has started editing; a second init must not touch anything
    (target / "workspaces" / "hub" / "USER.md").write_text("edited by hand\n", encoding="utf-8")
    before = snapshot(target)
    again = fleet("init", target, cwd=tmp_path)
    assert again.returncode != 0
    assert again.stderr.splitlines()[0] == (
        "refusing to overwrite 37 of the 37 files `fleet init` writes; nothing was written. "
        "Choose an empty folder, or move these away:"
    )
    assert sorted(again.stderr.splitlines()[1:]) == sorted(f"  {p}" for p in expected)
    assert snapshot(target) == before


def test_init_writes_nothing_when_any_file_exists(tmp_path: Path) -> None:
    existing = tmp_path / "workspaces" / "writer" / "MEMORY.md"
    existing.parent.mkdir(parents=True)
    existing.write_text("mine\n", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"MEMORY\.md"):
        init(tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [existing]
    assert existing.read_text(encoding="utf-8") == "mine\n"


# --- migrate and send ------------------------------------------------------------------------


def _tables(database: Path) -> set[str]:
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    config = db_config(tmp_path)
    done = fleet("migrate", "--config", config, cwd=tmp_path, FLEET_CLI_TOKEN=SECRET)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "database is at the newest schema\n"
    database = tmp_path / "fleet.db"
    assert {
        "outbox",
        "tasks",
        "task_events",
        "runs",
        "approvals",
        "incidents",
        "usage",
        "job_beats",
        "triage_items",
        "alembic_version",
    } <= _tables(database)
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_send_queues_an_escaped_row_once_per_key(tmp_path: Path) -> None:
    config = db_config(tmp_path)
    database = tmp_path / "fleet.db"
    first = fleet(
        "send", "--config", config, "--feed", "alerts", "--key", "k1", "a <b> & c",
        cwd=tmp_path, FLEET_CLI_TOKEN=SECRET,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stdout == "queued as outbox 1\n"

    second = fleet(
        "send", "--config", config, "--feed", "alerts", "--key", "k1", "something else",
        cwd=tmp_path, FLEET_CLI_TOKEN=SECRET,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert second.stdout == "already queued earlier (same --key); not again\n"

    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(
            "SELECT feed, chat_id, topic, text, dedup_key, status FROM outbox"
        ).fetchall()
    assert rows == [("alerts", -1001234, 3, "a &lt;b&gt; &amp; c", "k1", "pending")]

    unknown = fleet(
        "send", "--config", config, "--feed", "nosuch", "hello", cwd=tmp_path,
        FLEET_CLI_TOKEN=SECRET,
    )  # fmt: skip
    assert unknown.returncode != 0
    assert unknown.stderr == f"no feed named 'nosuch' in {config} [feeds]\n"
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (1,)


def test_send_html_is_checked_before_it_is_queued(tmp_path: Path) -> None:
    config = db_config(tmp_path)
    refused = fleet(
        "send", "--config", config, "--feed", "alerts", "--html", "<b>unclosed bold",
        cwd=tmp_path, FLEET_CLI_TOKEN=SECRET,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr == (
        "not sent: Telegram would refuse this HTML: <b> at character 1 is never closed (</b>)\n"
    )
    valid = fleet(
        "send", "--config", config, "--feed", "alerts", "--html", "<b>deploy</b> done &amp; ok",
        cwd=tmp_path, FLEET_CLI_TOKEN=SECRET,
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr
    with closing(sqlite3.connect(tmp_path / "fleet.db")) as conn:
        assert conn.execute("SELECT text FROM outbox").fetchall() == [
            ("<b>deploy</b> done &amp; ok",)
        ]
