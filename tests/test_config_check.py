"""`fleet check-config`: every problem of a file in one pass (syntax first, then secrets, keys,
cross-checks and what the fleet needs from its surroundings), named by id, in sentences; the
example config and the `fleet init` template; bounded durations and bot tokens, also for
`fleet run` and a live edit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from agents.catalog import TOOL_AUTHORITY
from agents.tools import TOOLS
from bot.config import ConfigError, load_config, parse_duration
from bot.config_check import (
    PLACEHOLDER_CHAT_IDS,
    PLACEHOLDER_PERSON_IDS,
    check_config,
)
from bot.config_watch import ConfigWatch, save_last_good
from bot.scaffold import TEMPLATE_FILES
from storage.db import Database
from storage.models import Outbox
from tests.fleet import ANTHROPIC_KEY, TOKEN, write_config

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config.example.toml"
TEMPLATE = ROOT / "bot" / "templates" / "fleet.toml"

_FLEET = Path(sys.executable).parent / "fleet"
FLEET = [str(_FLEET)] if _FLEET.exists() else [sys.executable, "-m", "bot.cli"]

# 35 characters after the colon, as @BotFather's tokens have.
REAL_LOOKING_TOKEN = "123456789:AAHcheck-config-test-token-QQQQQQQQQQ"

PEOPLE = '[[people]]\ntelegram_id = 4242\nname = "Ana"\nrole = "owner"\n'
FEEDS = "[feeds]\nalerts = { chat_id = -100777, topic = 3 }\n"
HUB_TABLE = '[[agents]]\nid = "hub"\nhub = true\nworkspace = "ws"\nmodel = "m"\n'


def fleet(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`fleet ARGS` with the environment minus every TELEGRAM_ and ANTHROPIC_ variable, plus
    `env`."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "ANTHROPIC_"))
    }
    environ.update(env)
    return subprocess.run(
        [*FLEET, *map(str, args)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write(folder: Path, text: str, *workspaces: str) -> Path:
    for workspace in workspaces:
        (folder / workspace).mkdir(parents=True, exist_ok=True)
    path = folder / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def said(path: Path, offline: bool = False) -> tuple[list[str], list[str]]:
    """check_config's errors and warnings without the leading "<file>: "."""
    report = check_config(path, offline=offline)
    return (
        [line.removeprefix(f"{path}: ") for line in report.errors],
        [line.removeprefix(f"{path}: warning: ") for line in report.warnings],
    )


# --- the six problems -----------------------------------------------------------------------


def test_check_config_lists_six_different_problems_by_id_in_sentences(tmp_path: Path) -> None:
    """A schema error, a bounded duration, an unknown authority, a duplicate name, a
    placeholder id and a missing API key: all six in one pass, by id, exit 2."""
    config = write(
        tmp_path,
        '[telegram]\ntoken = "${TELEGRAM_BOT_TOKEN}"\n'
        + FEEDS
        + '[[people]]\ntelegram_id = 123456789\nname = "Ana"\nrole = "owner"\n'
        + '[[people]]\ntelegram_id = 5\nname = "Bo"\nrole = "operator"\n'
        + '[[people]]\ntelegram_id = 6\nname = "bo"\nrole = "viewer"\n'
        + '[[agents]]\nid = "hub"\nhub = true\nworkspace = "ws"\nmodel = "claude-sonnet-4-6"\n'
        + 'heartbeat = "99999999999d"\n'
        + '[[agents]]\nid = "coder"\nreports_to = "hub"\nworkspace = "ws"\n'
        + 'model = "claude-sonnet-4-6"\nbudget_usd_month = -5\n'
        + 'authority = ["comment", "deploy"]\n',
        "ws",
    )
    done = fleet(
        "check-config", "--config", config, cwd=tmp_path, TELEGRAM_BOT_TOKEN=REAL_LOOKING_TOKEN
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        f"{config}: {line}"
        for line in (
            'agents.hub.heartbeat: "99999999999d" is too long: must be at most 30d',
            "agents.coder.budget_usd_month: must be at least 0",
            'people.bo.name: duplicate name "bo" (names say who decided, and deploy approvers '
            "are named)",
            'agents.coder.authority[1]: unknown authority "deploy" (known: assign, comment, '
            "confirm_incident, publish, request_approval, request_deploy, subtask)",
            "people.Ana.telegram_id: 123456789 is the example id; put this person's own "
            "Telegram id (@userinfobot tells a person theirs)",
            "anthropic: no API key for the agents: set ANTHROPIC_API_KEY, or give "
            '[anthropic.profiles.primary] an api_key = "${VAR}" or api_key_file',
        )
    ]


def test_toml_syntax_is_checked_first_and_alone(tmp_path: Path) -> None:
    config = write(tmp_path, 'tokn = 1\n[telegram]\ntoken = "x"\n[[people]\nname = "Ana"\n')
    done = fleet("check-config", "--config", config, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        f"{config}: not valid TOML at line 4, column 9: "
        "expected ']]' at the end of an array declaration\n"
    )


def test_warnings_alone_exit_0(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        f'[telegram]\ntoken = "{REAL_LOOKING_TOKEN}"\n'
        + PEOPLE
        + '[[agents]]\nid = "hub"\nhub = true\nworkspace = "ws"\nmodel = "claude-test"\n'
        + 'fallbacks = ["claude-haiku-4-5", "claude-test"]\n'
        + 'tools = ["comment", "message_hub"]\n',
        "ws",
    )
    done = fleet("check-config", "--config", config, cwd=tmp_path, ANTHROPIC_API_KEY="sk-x")
    assert (done.returncode, done.stdout) == (0, "ok\n")
    assert done.stderr.splitlines() == [
        f"{config}: warning: {line}"
        for line in (
            "feeds.alerts: not set: incidents and failures are recorded but posted nowhere",
            'agents.hub.model: no price for "claude-test": its calls count as $0, so budgets '
            'never stop them; add [pricing."claude-test"] with input and output (USD per '
            "million tokens)",
            "agents.hub.tools: without set_status the agent can never finish a task",
            "agents.hub.tools[0]: comment needs the comment authority, which this agent lacks, "
            "so it is not offered",
        )
    ]


def test_people_owner_and_placeholders(tmp_path: Path) -> None:
    base = f'[telegram]\ntoken = "{REAL_LOOKING_TOKEN}"\n'
    assert said(write(tmp_path, base + FEEDS)) == (
        [
            'people: nobody is listed: add yourself as [[people]] with role = "owner" (the bot '
            "refuses everyone who is not listed)"
        ],
        [],
    )
    viewer = '[[people]]\ntelegram_id = 7\nname = "Cy"\nrole = "viewer"\n'
    assert said(write(tmp_path, base + FEEDS + viewer))[0] == [
        "people: no person has role owner (deploys and P0 need one)"
    ]
    placeholder = base.replace(REAL_LOOKING_TOKEN, "123456:your-token") + PEOPLE
    placeholder += "[feeds]\napprovals = { chat_id = -1001234567890 }\n"
    assert said(write(tmp_path, placeholder))[0] == [
        "telegram.token: is a placeholder, not a token: ask @BotFather for the bot's token",
        "feeds.approvals.chat_id: -1001234567890 is the example chat id; put your group's id "
        "(it starts with -100) or remove the approvals feed",
    ]


def test_unique_names_and_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")  # for triage
    text = (
        f'[telegram]\ntoken = "{REAL_LOOKING_TOKEN}"\n'
        + FEEDS
        + PEOPLE
        + '[[people]]\ntelegram_id = 4242\nname = "ana"\nrole = "viewer"\n'
        + "".join(
            f'[[{kind}]]\nid = "x"\n{body}'
            for kind, body in [
                ("checks", 'tcp = "db:5432"\n'),
                ("checks", 'tcp = "db:5433"\n'),
                ("mailboxes", 'backend = "himalaya"\naccount = "a"\n'),
                ("mailboxes", 'backend = "himalaya"\naccount = "b"\n'),
            ]
        )
    )
    assert said(write(tmp_path, text))[0] == [
        "people.ana.telegram_id: duplicate person 4242",
        'people.ana.name: duplicate name "ana" (names say who decided, and deploy approvers '
        "are named)",
        'mailboxes[1].id: duplicate id "x"',
        'checks[1].id: duplicate id "x"',
    ]


# --- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("${}", 'holds "${...}" without a variable name: write "${TELEGRAM_BOT_TOKEN}"'),
        ("", 'is empty: write token = "${TELEGRAM_BOT_TOKEN}" and set that variable'),
        (
            "not-a-token",
            "is not a bot token: @BotFather gives one like 123456789:AAH... (the bot's id, "
            "a colon, then about 35 letters, digits, - and _)",
        ),
        (
            "123456:short",
            "does not look like a token from @BotFather (about 35 characters after the "
            "colon); was it cut short or joined to something when copied?",
        ),
    ],
)
def test_bad_bot_tokens_are_named_precisely(tmp_path: Path, token: str, why: str) -> None:
    path = write(tmp_path, f'[telegram]\ntoken = "{token}"\n' + PEOPLE + FEEDS)
    assert said(path) == ([f"telegram.token: {why}"], [])


def test_a_short_token_is_fine_for_another_bot_api_server(tmp_path: Path) -> None:
    text = '[telegram]\ntoken = "123456:short"\napi_base = "http://127.0.0.1:9"\n'
    assert said(write(tmp_path, text + PEOPLE + FEEDS)) == ([], [])


def test_empty_api_key_and_graph_secret(tmp_path: Path) -> None:
    text = (
        f'[telegram]\ntoken = "{REAL_LOOKING_TOKEN}"\n'
        + PEOPLE
        + FEEDS
        + '[anthropic.profiles.primary]\napi_key = ""\n'
        + '[[mailboxes]]\nid = "m365"\nbackend = "graph"\nuser = "ops@example.com"\n'
        + '[mailboxes.graph]\ntenant = "t"\nclient_id = "c"\nclient_secret = " "\n'
    )
    why = 'is empty: write "${VARIABLE}" or use <key>_file to give the secret'
    assert said(write(tmp_path, text))[0] == [
        f"anthropic.profiles.primary.api_key: {why}",
        f"mailboxes.m365.graph.client_secret: {why}",
    ]


def test_every_referenced_secret_is_resolved_unless_offline(tmp_path: Path) -> None:
    text = (
        '[telegram]\ntoken = "${FLEET_CHECK_UNSET}"\n'
        + PEOPLE
        + FEEDS
        + '[anthropic.profiles.primary]\napi_key_file = "missing.key"\n'
        + '[[agents]]\nid = "hub"\nhub = true\nworkspace = "ws"\nmodel = "claude-haiku-4-5"\n'
    )
    path = write(tmp_path, text, "ws")
    assert said(path) == (
        [
            "telegram.token: references ${FLEET_CHECK_UNSET}, which is not set",
            f"anthropic.profiles.primary.api_key_file: cannot read {tmp_path / 'missing.key'}: "
            "No such file or directory",
        ],
        [],
    )
    assert said(path, offline=True) == ([], [])
    done = fleet("check-config", "--offline", "--config", path, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_an_anthropic_key_from_the_environment_counts(tmp_path: Path) -> None:
    text = (
        f'[telegram]\ntoken = "{REAL_LOOKING_TOKEN}"\n'
        + PEOPLE
        + FEEDS
        + '[[agents]]\nid = "hub"\nhub = true\nworkspace = "ws"\nmodel = "claude-haiku-4-5"\n'
    )
    path = write(tmp_path, text, "ws")
    done = fleet("check-config", "--config", path, cwd=tmp_path, ANTHROPIC_API_KEY="sk-ant-x")
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
    done = fleet("check-config", "--config", path, cwd=tmp_path, ANTHROPIC_API_KEY=" ")
    assert done.returncode == 2 and "anthropic: no API key for the agents: " in done.stderr


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "key", "bound"),
    [
        (HUB_TABLE, "heartbeat", "30d"),
        ("[watchdog]\n", "config_poll", "1h"),
        ("[alerting]\n", "repeat_interval", "30d"),
        ("[approvals]\n", "deadline", "30d"),
        ('[[checks]]\nid = "site"\ntcp = "db:5432"\n', "timeout", "1h"),
        ('[[deploys]]\nid = "site"\ncommand = "true"\n', "timeout", "1d"),
    ],
)
def test_every_duration_key_has_a_bound(tmp_path: Path, table: str, key: str, bound: str) -> None:
    path = write(tmp_path, f'[telegram]\ntoken = "{TOKEN}"\n{table}{key} = "99999999999d"\n', "ws")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert problem.endswith(f'.{key}: "99999999999d" is too long: must be at most {bound}')


@pytest.mark.parametrize("text", ["366d", "99999999999d", "9" * 5000 + "s"])
def test_parse_duration_never_overflows(text: str) -> None:
    with pytest.raises(ValueError, match="is too long: must be at most 365d"):
        parse_duration(text)
    assert parse_duration("365d").days == 365


def test_fleet_run_exits_2_with_the_reason_for_a_bad_token_or_duration(tmp_path: Path) -> None:
    for line, reason in [
        ('token = "${}"', 'telegram.token: holds "${...}" without a variable name'),
        (f'token = "{TOKEN}"\n[watchdog]\nevery = "99999999999d"', "watchdog.every: "),
    ]:
        path = write(tmp_path, f"[telegram]\n{line}\n")
        done = fleet("run", "--config", path, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"{path}: {reason}")
        assert "Traceback" not in done.stderr


async def test_a_live_edit_with_an_overlong_duration_is_rejected_with_an_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    path = write_config(tmp_path, "http://127.0.0.1:9")
    loaded = load_config(path)
    db = Database(loaded.database.url)
    try:
        await db.migrate()
        watch = ConfigWatch(loaded, db, save_last_good(loaded))
        path.write_text(path.read_text() + '[alerting]\ngroup_wait = "99999999999d"\n')
        await watch.run()
        await watch.run()  # the file held still for one poll: judged now
        async with db.session() as session:
            [alert] = (await session.execute(select(Outbox))).scalars()
        assert "changed but is invalid; the running config stays in force" in alert.text
        assert "alerting.group_wait: &quot;99999999999d&quot; is too long: must be at most 1h" in (
            alert.text
        )
    finally:
        await db.dispose()


# --- the example config, the template and the workspaces -------------------------------------


def _body(text: str) -> str:
    return text[text.index("# Secrets never sit in this file") :]


def _without_placeholders(text: str) -> str:
    for value in PLACEHOLDER_PERSON_IDS:
        text = text.replace(f"telegram_id = {value} ", "telegram_id = 4242 ")
    for value in PLACEHOLDER_CHAT_IDS:
        text = text.replace(f"chat_id = {value}", "chat_id = -100777")
    return text


@pytest.mark.parametrize("config", [EXAMPLE, TEMPLATE], ids=["example", "template"])
def test_example_and_template_need_only_their_edit_marks(tmp_path: Path, config: Path) -> None:
    """Both parse: check-config asks only for what the EDIT comments name; with those put
    in, it says ok."""
    env = {"TELEGRAM_BOT_TOKEN": REAL_LOOKING_TOKEN, "ANTHROPIC_API_KEY": "sk-ant-x"}
    done = fleet("check-config", "--config", config, cwd=tmp_path, **env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"{config}: people.Ana.telegram_id: 123456789 is the example id; put this person's "
        "own Telegram id (@userinfobot tells a person theirs)",
        *[
            f"{config}: feeds.{feed}.chat_id: -1001234567890 is the example chat id; put your "
            f"group's id (it starts with -100) or remove the {feed} feed"
            for feed in ("alerts", "triage", "approvals", "activity")
        ],
    ]
    edited = tmp_path / "fleet.toml"
    edited.write_text(_without_placeholders(config.read_text()), encoding="utf-8")
    (tmp_path / "workspaces").symlink_to(ROOT / "workspaces")
    done = fleet("check-config", "--config", edited, cwd=tmp_path, **env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_example_config_is_a_real_file_with_the_templates_body_and_its_own_workspaces() -> None:
    assert not EXAMPLE.is_symlink() and not (ROOT / "workspaces").is_symlink()
    assert _body(EXAMPLE.read_text()) == _body(TEMPLATE.read_text())
    templates = ROOT / "bot" / "templates" / "workspaces"
    for agent in ("hub", "coder", "writer"):
        for name in TEMPLATE_FILES:
            copy = ROOT / "workspaces" / agent / name
            assert copy.read_text() == (templates / agent / name).read_text(), copy


def test_example_config_keeps_its_database_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", REAL_LOOKING_TOKEN)
    config = load_config(EXAMPLE)
    assert config.sqlite_path() == ROOT / "fleet.db"
    assert all((ROOT / a.workspace).resolve().parent == ROOT / "workspaces" for a in config.agents)


# --- tools ----------------------------------------------------------------------------------


def test_the_tool_catalog_is_the_tools() -> None:
    assert {tool.name: tool.authority for tool in TOOLS} == TOOL_AUTHORITY
