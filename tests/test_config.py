"""Loading fleet.toml: broken configs give one precise line per problem, naming the file, the
key path and what is wrong, and never a secret value."""

from __future__ import annotations

import tomllib
import traceback
from datetime import time, timedelta
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, QuietHours, Role, load_config, parse_duration

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"

SECRET = "123456:s3cr3t-VALUE-7f3a9c"  # distinctive, so any leak into an error is unmistakable

TELEGRAM = '[telegram]\ntoken = "123456:test-token"\n'

TOP_LEVEL_KEYS = (
    "timezone, telegram, database, people, feeds, anthropic, pricing, agents, mailboxes, checks, "
    "deploys, folders, publish_targets, pipelines, runtime, budget, alerting, watchdog, triage, "
    "approvals, web, node"
)

RUNTIME_KEYS = (
    "max_concurrent_runs, lease_seconds, max_turns, context_budget_tokens, "
    "shutdown_grace_seconds, keep_idle_runs_days, retry_backoff, retry_backoff_max, wake_window"
)

WORKSPACE_HINT = "does not exist (`fleet init` writes example workspaces)"

HUB = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-test"
"""


def agent(agent_id: str, extra: str = "") -> str:
    return f"""
[[agents]]
id = "{agent_id}"
workspace = "workspaces/{agent_id}"
model = "claude-test"
{extra}
"""


def write(folder: Path, text: str, name: str = "fleet.toml", *, workspaces: bool = True) -> Path:
    """Write a config; with `workspaces`, also create the workspace folder of every agent it
    lists (relative to `folder`), since a missing one is itself a problem."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    if workspaces:
        for workspace in workspaces_of(text):
            (folder / workspace).mkdir(parents=True, exist_ok=True)
    return path


def workspaces_of(text: str) -> list[str]:
    """The `workspace` of each [[agents]] entry; none when the text is not valid TOML (those
    tests are about the TOML, not the agents)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return []
    agents = raw.get("agents", [])
    if not isinstance(agents, list):
        return []
    return [
        a["workspace"]
        for a in agents
        if isinstance(a, dict) and isinstance(a.get("workspace"), str)
    ]


def problems_of(path: Path) -> list[str]:
    """The problems, with the leading "<file>: " checked and removed."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert str(err) == "\n".join(err.problems)
    for line in err.problems:
        assert line.startswith(f"{path}: "), line
    return [line.removeprefix(f"{path}: ") for line in err.problems]


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


# --- a good config -----------------------------------------------------------------------------


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, TELEGRAM)
    assert config.telegram.token.get_secret_value() == "123456:test-token"
    assert config.path == tmp_path / "fleet.toml"
    assert config.timezone == "UTC"
    assert config.agents == []
    assert config.hub is None


def test_example_config_loads_when_its_token_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", SECRET)
    config = load_config(EXAMPLE)
    assert config.telegram.token.get_secret_value() == SECRET
    assert config.hub is not None and config.hub.id == "hub"
    assert [a.reports_to for a in config.agents] == [None, "hub", "hub", "hub", "hub", "hub"]
    assert [name for name, _ in config.feeds.items()] == [
        "alerts",
        "triage",
        "approvals",
        "activity",
    ]
    assert config.person(123456789) is not None
    assert SECRET in config.secret_values()


def test_example_config_names_the_missing_token_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    assert problems_of(EXAMPLE) == [
        "telegram.token: references ${TELEGRAM_BOT_TOKEN}, which is not set"
    ]


# --- file level -----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert problems_of(path) == ["file not found (create one with `fleet init`)"]


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[telegram\ntoken = "x"\n')
    assert problems_of(path) == [
        "not valid TOML at line 1, column 10: expected ']' at the end of a table declaration"
    ]


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_bytes(b'[telegram]\ntoken = "\xff"\n')
    assert problems_of(path) == ["not UTF-8 text"]


# --- unknown keys and wrong types ----------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "tokn = 1\n" + TELEGRAM)
    assert problems_of(path) == [f"tokn: unknown key (known: {TOP_LEVEL_KEYS})"]


def test_unknown_nested_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[telegram]\ntoken = "123456:t"\ntokn = "t"\n'
        + HUB
        + agent("coder", 'modle = "claude-x"'),
    )
    assert sorted(problems_of(path)) == [
        'agents.coder.modle: unknown key (did you mean "model"?)',
        'telegram.tokn: unknown key (did you mean "token"?)',
    ]


def test_wrong_type(tmp_path: Path) -> None:
    path = write(
        tmp_path, TELEGRAM + '[[people]]\ntelegram_id = "abc"\nname = "Ana"\nrole = "owner"\n'
    )
    (problem,) = problems_of(path)
    assert problem == "people.Ana.telegram_id: must be a whole number"


def test_unknown_role(tmp_path: Path) -> None:
    path = write(
        tmp_path, TELEGRAM + '[[people]]\ntelegram_id = 1\nname = "Ana"\nrole = "admin"\n'
    )
    assert problems_of(path) == ["people.Ana.role: unknown role (use owner, operator or viewer)"]


def test_required_key_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "[telegram]\n")
    assert problems_of(path) == ["telegram.token: required key is missing"]


def test_feed_without_chat_id(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + "[feeds]\nalerts = { topic = 3 }\n")
    assert problems_of(path) == ["feeds.alerts.chat_id: required key is missing"]


def test_unknown_feed_name(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + "[feeds]\nalarms = { chat_id = -100 }\n")
    assert problems_of(path) == ['feeds.alarms: unknown key (did you mean "alerts"?)']


def test_bad_heartbeat(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + 'heartbeat = "30x"\n')
    assert problems_of(path) == [
        'agents.hub.heartbeat: "30x" is not a duration like "45s", "10m", "2h" or "1d"'
    ]


@pytest.mark.parametrize("value", ["25:00-07:00", "23:00", "23:00-7:00", "11pm-7am"])
def test_bad_quiet_hours(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, TELEGRAM + HUB + f'quiet_hours = "{value}"\n')
    assert problems_of(path) == [
        f'agents.hub.quiet_hours: "{value}" is not a range like "23:00-07:00"'
    ]


def test_good_quiet_hours_and_heartbeat(tmp_path: Path) -> None:
    config = load(tmp_path, TELEGRAM + HUB + 'quiet_hours = "23:00-07:00"\nheartbeat = "30m"\n')
    assert config.agents[0].quiet_hours == QuietHours(time(23, 0), time(7, 0))
    assert str(config.agents[0].quiet_hours) == "23:00-07:00"
    assert config.agents[0].heartbeat == timedelta(minutes=30)


def test_bad_timezone(tmp_path: Path) -> None:
    path = write(tmp_path, 'timezone = "Mars/Olympus_Mons"\n' + TELEGRAM)
    assert problems_of(path) == [
        'timezone: unknown time zone "Mars/Olympus_Mons" (use an IANA name)'
    ]


def test_good_timezone(tmp_path: Path) -> None:
    config = load(tmp_path, 'timezone = "Europe/Lisbon"\n' + TELEGRAM)
    assert config.tz.key == "Europe/Lisbon"


# --- ${VAR} secrets ----------------------------------------------------------------------------


def test_secret_variable_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_TEST_TOKEN", raising=False)
    path = write(tmp_path, '[telegram]\ntoken = "${FLEET_TEST_TOKEN}"\n')
    assert problems_of(path) == [
        "telegram.token: references ${FLEET_TEST_TOKEN}, which is not set"
    ]


@pytest.mark.parametrize("value", ["", "   "])
def test_secret_variable_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FLEET_TEST_TOKEN", value)
    path = write(tmp_path, '[telegram]\ntoken = "${FLEET_TEST_TOKEN}"\n')
    assert problems_of(path) == ["telegram.token: references ${FLEET_TEST_TOKEN}, which is empty"]


def test_secret_variable_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TEST_TOKEN", SECRET)
    monkeypatch.setenv("FLEET_TEST_KEY", SECRET + "-anthropic")
    config = load(
        tmp_path,
        '[telegram]\ntoken = "${FLEET_TEST_TOKEN}"\n'
        '[anthropic.profiles.primary]\napi_key = "${FLEET_TEST_KEY}"\n',
    )
    assert config.telegram.token.get_secret_value() == SECRET
    assert config.anthropic.profiles["primary"].api_key.get_secret_value() == SECRET + "-anthropic"
    assert SECRET not in repr(config)


def _assert_no_secret(err: ConfigError, secret: str) -> None:
    assert err.problems, "expected at least one problem"
    for line in err.problems:
        assert secret not in line
    assert secret not in str(err)
    assert secret not in repr(err)
    assert secret not in "".join(traceback.format_exception(err))


def test_secret_never_in_errors_next_to_a_schema_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same sections hold a resolved secret and a broken key; the lines name the broken
    keys and nothing of the secret."""
    monkeypatch.setenv("FLEET_TEST_TOKEN", SECRET)
    monkeypatch.setenv("FLEET_TEST_KEY", SECRET)
    monkeypatch.setenv("FLEET_TEST_DB", f"postgres://fleet:{SECRET}@db/fleet")
    path = write(
        tmp_path,
        '[telegram]\ntoken = "${FLEET_TEST_TOKEN}"\ntokn = "x"\npolling_timeout = 0\n'
        'api_base = "ftp://${FLEET_TEST_TOKEN}"\n'
        '[database]\nurl = "${FLEET_TEST_DB}"\n'
        '[anthropic.profiles.primary]\napi_key = "${FLEET_TEST_KEY}"\nkey = "x"\n'
        # a whole section replaced by a secret: the error's input would be the secret itself
        '[anthropic.profiles]\nbackup = "${FLEET_TEST_KEY}"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _assert_no_secret(info.value, SECRET)
    paths = {line.removeprefix(f"{path}: ").split(":")[0] for line in info.value.problems}
    assert paths == {
        "telegram.tokn",
        "telegram.polling_timeout",
        "telegram.api_base",
        "database.url",
        "anthropic.profiles.primary.key",
        "anthropic.profiles.backup",
    }


def test_secret_never_in_errors_next_to_a_semantic_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_TEST_TOKEN", SECRET)
    monkeypatch.delenv("FLEET_TEST_UNSET", raising=False)
    secret_file = tmp_path / "anthropic.key"
    secret_file.write_text(SECRET + "-file\n", encoding="utf-8")
    path = write(
        tmp_path,
        '[telegram]\ntoken = "${FLEET_TEST_TOKEN}"\n'
        '[anthropic.profiles.primary]\napi_key_file = "anthropic.key"\n'
        '[anthropic.profiles.backup]\napi_key = "x-${FLEET_TEST_UNSET}"\n'
        + HUB
        + agent("coder", 'profiles = ["primary", "third"]'),
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _assert_no_secret(info.value, SECRET)
    assert [line.removeprefix(f"{path}: ") for line in info.value.problems] == [
        "anthropic.profiles.backup.api_key: references ${FLEET_TEST_UNSET}, which is not set",
        'agents.coder.profiles[1]: unknown profile "third"; '
        "define [anthropic.profiles.third] or list this agent's profiles",
    ]


# --- <key>_file secrets ---------------------------------------------------------------------


def test_token_file_is_read_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "fleet"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "telegram.token").write_text(f"  {SECRET}\n", encoding="utf-8")
    path = write(folder, '[telegram]\ntoken_file = "secrets/telegram.token"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the config's folder, not the working directory
    config = load_config(path)
    assert config.telegram.token.get_secret_value() == SECRET


def test_token_file_absolute_path(tmp_path: Path) -> None:
    token = tmp_path / "abs.token"
    token.write_text(SECRET, encoding="utf-8")
    config = load(tmp_path / "conf", f'[telegram]\ntoken_file = "{token}"\n')
    assert config.telegram.token.get_secret_value() == SECRET


def test_api_key_file_for_a_profile(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(SECRET, encoding="utf-8")
    config = load(tmp_path, TELEGRAM + '[anthropic.profiles.main]\napi_key_file = "key"\n')
    assert config.anthropic.profiles["main"].api_key.get_secret_value() == SECRET


def test_token_file_missing(tmp_path: Path) -> None:
    path = write(tmp_path, '[telegram]\ntoken_file = "missing.token"\n')
    assert problems_of(path) == [
        f"telegram.token_file: cannot read {tmp_path / 'missing.token'}: No such file or directory"
    ]


@pytest.mark.parametrize("content", ["", " \n\n"])
def test_token_file_empty(tmp_path: Path, content: str) -> None:
    (tmp_path / "empty.token").write_text(content, encoding="utf-8")
    path = write(tmp_path, '[telegram]\ntoken_file = "empty.token"\n')
    assert problems_of(path) == [f"telegram.token_file: {tmp_path / 'empty.token'} is empty"]


@pytest.mark.parametrize("order", ["token first", "file first"])
def test_token_and_token_file_both_given(tmp_path: Path, order: str) -> None:
    (tmp_path / "t.token").write_text(SECRET, encoding="utf-8")
    lines = ['token = "abc"', 'token_file = "t.token"']
    if order == "file first":
        lines.reverse()
    path = write(tmp_path, "[telegram]\n" + "\n".join(lines) + "\n")
    assert problems_of(path) == ["telegram.token_file: give either token or token_file, not both"]


def test_token_file_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bin.token").write_bytes(b"\xff\xfe" + SECRET.encode())
    path = write(tmp_path, '[telegram]\ntoken_file = "bin.token"\n')
    (problem,) = problems_of(path)
    assert problem == f"telegram.token_file: {tmp_path / 'bin.token'} is not UTF-8 text"
    assert SECRET not in problem


def test_token_file_path_expands_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"  # like systemd's ${CREDENTIALS_DIRECTORY}
    creds.mkdir()
    (creds / "tg").write_text(f"{SECRET}\n", encoding="utf-8")
    monkeypatch.setenv("CREDS", str(creds))
    config = load(tmp_path / "conf", '[telegram]\ntoken_file = "${CREDS}/tg"\n')
    assert config.telegram.token.get_secret_value() == SECRET


def test_token_file_path_with_an_unset_variable_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDS", raising=False)
    path = write(tmp_path, '[telegram]\ntoken_file = "${CREDS}/tg"\n')
    problems = problems_of(path)
    assert problems[0] == "telegram.token_file: references ${CREDS}, which is not set"


def test_token_file_path_with_an_unset_variable_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDS", raising=False)
    path = write(tmp_path, '[telegram]\ntoken_file = "${CREDS}/tg"\n')
    assert problems_of(path) == ["telegram.token_file: references ${CREDS}, which is not set"]


# --- people and agents ------------------------------------------------------------------------


def test_duplicate_person(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TELEGRAM
        + '[[people]]\ntelegram_id = 7\nname = "Ana"\nrole = "owner"\n'
        + '[[people]]\ntelegram_id = 7\nname = "Bo"\nrole = "viewer"\n',
    )
    assert problems_of(path) == ["people.Bo.telegram_id: duplicate person 7"]


def test_people_without_an_owner(tmp_path: Path) -> None:
    path = write(
        tmp_path, TELEGRAM + '[[people]]\ntelegram_id = 7\nname = "Ana"\nrole = "viewer"\n'
    )
    assert problems_of(path) == ["people: no person has role owner (deploys and P0 need one)"]


def test_duplicate_agent_id(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + agent("coder") + agent("coder"))
    assert problems_of(path) == ['agents[2].id: duplicate agent id "coder"']


def test_reports_to_unknown_agent(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + agent("coder", 'reports_to = "hubb"'))
    assert problems_of(path) == ['agents.coder.reports_to: unknown agent "hubb"']


def test_hub_reports_to_no_agent(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + 'reports_to = "coder"\n' + agent("coder"))
    assert problems_of(path) == ["agents.hub.reports_to: the hub reports to no agent"]


def test_reports_to_cycle_is_reported_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TELEGRAM + HUB + agent("a", 'reports_to = "b"') + agent("b", 'reports_to = "a"'),
    )
    assert problems_of(path) == ["agents: reports_to forms a cycle: a -> b -> a"]


def test_reports_to_three_cycle_and_a_tail(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TELEGRAM
        + HUB
        + agent("tail", 'reports_to = "a"')
        + agent("a", 'reports_to = "b"')
        + agent("b", 'reports_to = "c"')
        + agent("c", 'reports_to = "a"')
        + agent("self", 'reports_to = "self"'),
    )
    assert problems_of(path) == [
        "agents: reports_to forms a cycle: a -> b -> c -> a",
        "agents: reports_to forms a cycle: self -> self",
    ]


def test_no_hub(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + agent("coder") + agent("writer"))
    assert problems_of(path) == ["agents: no agent has hub = true (exactly one must)"]


def test_two_hubs(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + agent("coder") + agent("other", "hub = true"))
    assert problems_of(path) == [
        "agents.other.hub: more than one hub (exactly one agent has hub = true)"
    ]


def test_heartbeat_and_cron_both(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + 'heartbeat = "1h"\ncron = "0 * * * *"\n')
    assert problems_of(path) == ["agents.hub: give either heartbeat or cron, not both"]


def test_missing_workspace_folder(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + agent("coder"), workspaces=False)
    (tmp_path / "workspaces" / "hub").mkdir(parents=True)
    assert problems_of(path) == [
        f"agents.coder.workspace: folder {tmp_path / 'workspaces' / 'coder'} {WORKSPACE_HINT}"
    ]


def test_every_missing_workspace_folder_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + agent("coder"), workspaces=False)
    assert problems_of(path) == [
        f"agents.hub.workspace: folder {tmp_path / 'workspaces' / 'hub'} {WORKSPACE_HINT}",
        f"agents.coder.workspace: folder {tmp_path / 'workspaces' / 'coder'} {WORKSPACE_HINT}",
    ]


def test_workspace_that_is_a_file_is_not_a_folder(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB, workspaces=False)
    (tmp_path / "workspaces").mkdir()
    (tmp_path / "workspaces" / "hub").write_text("not a folder", encoding="utf-8")
    assert problems_of(path) == [
        f"agents.hub.workspace: folder {tmp_path / 'workspaces' / 'hub'} is not a folder "
        "(`fleet init` writes example workspaces)"
    ]


def test_workspace_is_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "fleet"
    path = write(folder, TELEGRAM + HUB)
    assert (folder / "workspaces" / "hub").is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the config's folder, not the working directory
    config = load_config(path)
    assert config.agents[0].workspace == Path("workspaces/hub")


def test_absolute_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "abs" / "hub"
    workspace.mkdir(parents=True)
    hub = HUB.replace('"workspaces/hub"', f'"{workspace}"')
    config = load(tmp_path / "conf", TELEGRAM + hub)
    assert config.agents[0].workspace == workspace
    missing = tmp_path / "abs" / "gone"
    gone = HUB.replace('"workspaces/hub"', f'"{missing}"')
    path = write(tmp_path / "conf", TELEGRAM + gone, workspaces=False)
    assert problems_of(path) == [f"agents.hub.workspace: folder {missing} {WORKSPACE_HINT}"]


@pytest.mark.parametrize("cron", ["0 */2 * * *", "30 9 * * mon-fri", "0 0 1 1 *"])
def test_good_cron(tmp_path: Path, cron: str) -> None:
    config = load(tmp_path, TELEGRAM + HUB + f'cron = "{cron}"\n')
    assert config.agents[0].cron == cron


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("every hour", "expected 5 fields (minute hour day month weekday), got 2"),
        ("0 * * * * *", "expected 5 fields (minute hour day month weekday), got 6"),
        ("", "expected 5 fields (minute hour day month weekday), got 0"),
        ("61 * * * *", "61"),
        ("*/0 * * * *", "Increment must be higher than 0"),
        ("0 0 0 * *", "0"),
        ("0 0 * * funday", "funday"),
    ],
)
def test_bad_cron(tmp_path: Path, cron: str, why: str) -> None:
    path = write(tmp_path, TELEGRAM + HUB + f'cron = "{cron}"\n')
    (problem,) = problems_of(path)
    assert problem.startswith(f'agents.hub.cron: "{cron}" is not a crontab line: '), problem
    assert why in problem.removeprefix(f'agents.hub.cron: "{cron}"'), problem


def test_bad_cron_is_reported_with_the_other_agent_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TELEGRAM + HUB + agent("coder", 'cron = "* * *"\nreports_to = "nobody"'),
        workspaces=False,
    )
    (tmp_path / "workspaces" / "hub").mkdir(parents=True)
    assert problems_of(path) == [
        'agents.coder.reports_to: unknown agent "nobody"',
        'agents.coder.cron: "* * *" is not a crontab line: '
        "expected 5 fields (minute hour day month weekday), got 3",
        f"agents.coder.workspace: folder {tmp_path / 'workspaces' / 'coder'} {WORKSPACE_HINT}",
    ]


def test_profile_not_defined_when_profiles_exist(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TELEGRAM
        + '[anthropic.profiles.main]\napi_key = "k"\n'
        + HUB
        + 'profiles = ["main"]\n'
        + agent("coder", 'profiles = ["main", "spare"]'),
    )
    assert problems_of(path) == [
        'agents.coder.profiles[1]: unknown profile "spare"; '
        "define [anthropic.profiles.spare] or list this agent's profiles"
    ]


def test_default_primary_profile_needs_definition_once_profiles_exist(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + '[anthropic.profiles.main]\napi_key = "k"\n' + HUB)
    assert problems_of(path) == [
        'agents.hub.profiles[0]: unknown profile "primary" (the default); '
        "define [anthropic.profiles.primary] or list this agent's profiles"
    ]


def test_primary_allowed_without_any_profiles(tmp_path: Path) -> None:
    config = load(tmp_path, TELEGRAM + HUB + agent("coder", 'profiles = ["primary"]'))
    assert [a.profiles for a in config.agents] == [["primary"], ["primary"]]


def test_non_primary_profile_without_any_profiles(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + HUB + 'profiles = ["spare"]\n')
    assert problems_of(path) == [
        'agents.hub.profiles[0]: unknown profile "spare"; '
        "define [anthropic.profiles.spare] or list this agent's profiles"
    ]


# --- runtime ---------------------------------------------------------------------------------


def test_runtime_defaults(tmp_path: Path) -> None:
    runtime = load(tmp_path, TELEGRAM).runtime
    assert runtime.max_concurrent_runs == 4
    assert runtime.lease_seconds == 120
    assert runtime.max_turns == 10
    assert runtime.context_budget_tokens == 200_000
    assert runtime.shutdown_grace_seconds == 10.0


def test_runtime_values(tmp_path: Path) -> None:
    runtime = load(
        tmp_path,
        TELEGRAM + "[runtime]\nmax_concurrent_runs = 2\nlease_seconds = 3\nmax_turns = 100\n"
        "context_budget_tokens = 1000\nshutdown_grace_seconds = 0\n",
    ).runtime
    assert (runtime.max_concurrent_runs, runtime.lease_seconds, runtime.max_turns) == (2, 3, 100)
    assert runtime.context_budget_tokens == 1000
    assert runtime.shutdown_grace_seconds == 0


def test_runtime_unknown_key_with_a_close_match(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + "[runtime]\nmax_turn = 5\n")
    assert problems_of(path) == ['runtime.max_turn: unknown key (did you mean "max_turns"?)']


def test_runtime_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + "[runtime]\nworkers = 5\n")
    assert problems_of(path) == [f"runtime.workers: unknown key (known: {RUNTIME_KEYS})"]


def test_runtime_backoffs_are_durations(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + '[runtime]\nretry_backoff = "soon"\n')
    (problem,) = problems_of(path)
    assert problem.startswith("runtime.retry_backoff: "), problem


def test_lease_seconds_too_short(tmp_path: Path) -> None:
    path = write(tmp_path, TELEGRAM + "[runtime]\nlease_seconds = 1\n")
    assert problems_of(path) == ["runtime.lease_seconds: must be at least 3"]


# --- every problem at once ------------------------------------------------------------------


def test_every_problem_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEET_TEST_UNSET", raising=False)
    path = write(
        tmp_path,
        '[telegram]\ntoken = "${FLEET_TEST_UNSET}"\n'
        + "[feeds]\nalarms = { chat_id = 1 }\n"
        + HUB
        + 'heartbeat = "30x"\n',
    )
    assert sorted(problems_of(path)) == [
        'agents.hub.heartbeat: "30x" is not a duration like "45s", "10m", "2h" or "1d"',
        'feeds.alarms: unknown key (did you mean "alerts"?)',
        "telegram.token: references ${FLEET_TEST_UNSET}, which is not set",
    ]


def test_every_semantic_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TELEGRAM
        + '[[people]]\ntelegram_id = 7\nname = "Ana"\nrole = "owner"\n'
        + '[[people]]\ntelegram_id = 7\nname = "Bo"\nrole = "owner"\n'
        + agent("coder", 'reports_to = "nobody"'),
    )
    assert problems_of(path) == [
        "people.Bo.telegram_id: duplicate person 7",
        "agents: no agent has hub = true (exactly one must)",
        'agents.coder.reports_to: unknown agent "nobody"',
    ]


def test_key_and_cross_field_problems_are_reported_together(tmp_path: Path) -> None:
    """A broken key no longer hides the duplicates and unknown agents: the cross-checks run
    on a repaired copy in the same pass, and say nothing about a key already reported."""
    people = (
        '[[people]]\ntelegram_id = 7\nname = "Ana"\nrole = "owner"\n'
        '[[people]]\ntelegram_id = 7\nname = "Bo"\nrole = "owner"\n'
    )
    cross_field = people + HUB + agent("coder", 'reports_to = "nobody"')
    broken = write(tmp_path, "tokn = 1\n" + TELEGRAM + cross_field + 'heartbeat = "30x"\n')
    assert problems_of(broken) == [
        'agents.coder.heartbeat: "30x" is not a duration like "45s", "10m", "2h" or "1d"',
        f"tokn: unknown key (known: {TOP_LEVEL_KEYS})",
        "people.Bo.telegram_id: duplicate person 7",
        'agents.coder.reports_to: unknown agent "nobody"',
    ]


def test_a_consequence_of_a_reported_key_is_not_reported_again(tmp_path: Path) -> None:
    """A broken role is not also "no owner"; a broken hub flag is not also "no hub"; a
    missing workspace key is not also a missing folder."""
    text = (
        TELEGRAM
        + '[[people]]\ntelegram_id = 7\nname = "Ana"\nrole = "boss"\n'
        + HUB.replace("hub = true", 'hub = "maybe"').replace('workspace = "workspaces/hub"\n', "")
    )
    assert problems_of(write(tmp_path, text)) == [
        "people.Ana.role: unknown role (use owner, operator or viewer)",
        "agents.hub.hub: must be true or false",
        "agents.hub.workspace: required key is missing",
    ]


# --- roles and durations --------------------------------------------------------------------


def test_role_allows_ordering() -> None:
    order = [Role.viewer, Role.operator, Role.owner]
    for i, have in enumerate(order):
        for j, needed in enumerate(order):
            assert have.allows(needed) is (i >= j), (have, needed)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        (" 90m ", timedelta(minutes=90)),
        ("5 m", timedelta(minutes=5)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30x", "0s", "0m", "1.5h", "-1m", "2H", "1w", "h", "10"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like") as info:
        parse_duration(text)
    assert f'"{text}"' in str(info.value)


def test_process_agents_need_clis_and_repo_and_a_good_queue_cron(tmp_path: Path) -> None:
    good = agent(
        "dev",
        'adapter = "process"\nrepo = "git@example.com:o/r.git"\n'
        'clis = [{ id = "claude", argv = ["claude", "-p"], env = ["CLAUDE_CODE_OAUTH_TOKEN"] }]\n'
        "queue = { max_tasks = 2 }\n",
    )
    config = load(tmp_path / "ok", TELEGRAM + HUB + good)
    dev = config.agents[1]
    assert (dev.adapter, dev.timeout, dev.clis[0].env) == (
        "process",
        timedelta(minutes=45),
        ["CLAUDE_CODE_OAUTH_TOKEN"],
    )
    assert dev.queue is not None and (dev.queue.cron, dev.queue.max_tasks) == ("0 2 * * *", 2)
    assert config.agents[0].adapter == "anthropic"
    bad = agent("dev", 'adapter = "process"\nqueue = { cron = "at two" }\n')
    path = write(tmp_path / "bad", TELEGRAM + HUB + bad)
    problems = problems_of(path)
    assert problems[0] == 'agents.dev: adapter = "process" needs clis and repo'
    assert problems[1].startswith('agents.dev.queue.cron: "at two" is not a crontab line')
    leaky = agent("dev", 'clis = [{ id = "c", argv = ["c"], env = ["ANTHROPIC_API_KEY"] }]\n')
    [problem] = problems_of(write(tmp_path / "leaky", TELEGRAM + HUB + leaky))
    assert "ANTHROPIC_API_KEY holds the fleet's own secrets" in problem
