"""The config's typed values: durations are `timedelta` parsed once, mailboxes one table per
backend, and the checks between a table's keys say each problem at its own key path."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.config import (
    CheckConfig,
    ConfigError,
    GraphMailbox,
    HimalayaMailbox,
    NodeConfig,
    duration_text,
    load_config,
    parse_duration,
)

TELEGRAM = '[telegram]\ntoken = "123456:test-token"\n'
HUB = '[[agents]]\nid = "hub"\nhub = true\nworkspace = "ws"\nmodel = "claude-test"\n'

MAILBOX_KEYS = (
    "id, backend, folder, every, vip, urgent_keywords, ignore, urgent_domains, "
    "ignore_keywords, high_importance_urgent, timeout, page_size, failures_before_incident"
)
GRAPH_KEYS = f"{MAILBOX_KEYS}, user, graph"
HIMALAYA_KEYS = f"{MAILBOX_KEYS}, account, himalaya"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ws").mkdir(exist_ok=True)
    path = tmp_path / "fleet.toml"
    path.write_text(TELEGRAM + HUB + text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [p.removeprefix(f"{path}: ") for p in info.value.problems]


# --- durations ------------------------------------------------------------------------------


def test_durations_are_timedeltas_with_their_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[[checks]]\nid = "site"\ntcp = "db:5432"\nevery = "90s"\nmax_latency = "500ms"\n'
            '[node]\nleader_takeover = "1m"\n',
        )
    )
    check = config.checks[0]
    assert (check.every, check.timeout) == (timedelta(seconds=90), timedelta(seconds=10))
    assert check.max_latency == timedelta(milliseconds=500)
    assert config.node.leader_takeover == timedelta(minutes=1)
    assert config.node.renew_every == timedelta(seconds=3)
    assert config.runtime.wake_window == timedelta(seconds=2)
    assert config.approvals.deadline == timedelta(hours=24)


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("leader_takeover", '"11m"', '"11m" is too long: must be at most 10m'),
        ("renew_every", '"2m"', '"2m" is too long: must be at most 1m'),
        ("renew_every", '"soon"', '"soon" is not a duration like "45s", "10m", "2h" or "1d"'),
        ("renew_every", "3", "must be text in quotes"),
    ],
)
def test_node_durations_are_bounded(tmp_path: Path, key: str, value: str, said: str) -> None:
    assert problems(write(tmp_path, f"[node]\n{key} = {value}\n")) == [f"node.{key}: {said}"]


def test_a_duration_given_in_code_keeps_its_bound() -> None:
    assert NodeConfig(renew_every=timedelta(seconds=5)).renew_every == timedelta(seconds=5)
    with pytest.raises(ValidationError, match="must be more than 0s and at most 1m"):
        NodeConfig(renew_every=timedelta(minutes=5))


def test_duration_text_reads_back_as_the_same_duration() -> None:
    rng = random.Random(11)
    for _ in range(500):
        text = f"{rng.randint(1, 400)}{rng.choice('smhd')}"
        try:
            value = parse_duration(text)
        except ValueError:
            continue  # over 365d
        assert parse_duration(duration_text(value)) == value
    assert [duration_text(timedelta(seconds=s)) for s in (30, 90, 3600, 86400, 0.5)] == [
        "30s",
        "90s",
        "1h",
        "1d",
        "500ms",
    ]


# --- mailboxes: one table per backend -------------------------------------------------------


def test_each_backend_has_its_own_table(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[[mailboxes]]\nid = "work"\nbackend = "himalaya"\naccount = "work"\n'
            '[[mailboxes]]\nid = "m365"\nbackend = "graph"\nuser = "ops@example.com"\n'
            'graph = { tenant = "t", client_id = "c", client_secret = "s3cret-value" }\n',
        )
    )
    work, m365 = config.mailboxes
    assert isinstance(work, HimalayaMailbox) and work.himalaya.bin == "himalaya"
    assert isinstance(m365, GraphMailbox) and m365.graph.tenant == "t"
    assert "s3cret-value" in config.own_secrets()


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ('backend = "himalaya"', ["account: required for the himalaya backend"]),
        ('backend = "himalaya"\naccount = ""', ["account: required for the himalaya backend"]),
        (
            'backend = "graph"',
            [
                "user: required for the graph backend",
                "graph: required for the graph backend (tenant, client_id, client_secret)",
            ],
        ),
        ('account = "a"', ["backend: required key is missing"]),
        ('backend = "imap"\naccount = "a"', ['backend: must be "himalaya" or "graph"']),
        (
            'backend = "graph"\nuser = "u"\naccount = "a"\n'
            'graph = { tenant = "t", client_id = "c", client_secret = "s" }',
            [f"account: unknown key (known: {GRAPH_KEYS})"],
        ),
        (
            'backend = "himalaya"\naccount = "a"\ngraph = { tenant = "t" }',
            [f"graph: unknown key (known: {HIMALAYA_KEYS})"],
        ),
        (
            'backend = "himalaya"\naccount = "a"\nevery = "2d"',
            ['every: "2d" is too long: must be at most 1d'],
        ),
    ],
)
def test_a_mailbox_has_only_its_backends_keys(tmp_path: Path, table: str, said: list[str]) -> None:
    found = problems(write(tmp_path, f'[[mailboxes]]\nid = "mb"\n{table}\n'))
    assert found == [f"mailboxes.mb.{line}" for line in said]


# --- checks between keys --------------------------------------------------------------------


def test_every_problem_between_keys_of_one_table_is_said_on_its_own_line(
    tmp_path: Path,
) -> None:
    text = (
        'heartbeat = "1h"\ncron = "0 * * * *"\nadapter = "process"\n'
        '[[publish_targets]]\nid = "p"\nkind = "telegram"\nmin_chars = 10\nmax_chars = 5\n'
    )
    assert problems(write(tmp_path, text)) == [
        "agents.hub: give either heartbeat or cron, not both",
        'agents.hub: adapter = "process" needs clis and repo',
        "publish_targets.p: a telegram target needs exactly one of chat_id or feed",
        "publish_targets.p: min_chars is over max_chars",
    ]


def test_a_broken_key_does_not_hide_the_tables_other_problems(tmp_path: Path) -> None:
    """The checks between keys run on the repaired copy too: a broken `every` is said, and
    so is the check's missing probe (its table could not be checked the first time)."""
    text = 'heartbeat = "1h"\ncron = "0 * * * *"\n[[checks]]\nid = "site"\nevery = "soon"\n'
    assert problems(write(tmp_path, text)) == [
        "agents.hub: give either heartbeat or cron, not both",
        'checks.site.every: "soon" is not a duration like "45s", "10m", "2h" or "1d"',
        "checks.site: give exactly one of http, tcp or command",
    ]


def test_a_table_built_in_code_runs_its_checks_between_keys() -> None:
    with pytest.raises(ValidationError, match="give exactly one of http, tcp or command"):
        CheckConfig(id="site")
    assert CheckConfig(id="site", tcp="db:5432").every == timedelta(minutes=1)
