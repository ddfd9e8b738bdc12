"""The triage keys of the config: graph credentials (the secret from a file or the
environment, never in an error), validation of URLs, times and the billed agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, GraphMailbox, load_config

SECRET = "graph-s3cr3t-Qx7~value"
BASE = """
[telegram]
token = "123456:test-token"

[[agents]]
id = "hub"
hub = true
workspace = "ws"
model = "claude-test"
"""

GRAPH = """
[[mailboxes]]
id = "m365"
backend = "graph"
user = "ops@example.com"
[mailboxes.graph]
tenant = "t"
client_id = "c"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ws").mkdir(exist_ok=True)
    path = tmp_path / "fleet.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [p.removeprefix(f"{path}: ") for p in info.value.problems]


def test_graph_secret_from_a_file_is_a_redacted_secret(tmp_path: Path) -> None:
    (tmp_path / "graph.secret").write_text(SECRET + "\n", encoding="utf-8")
    config = load_config(write(tmp_path, GRAPH + 'client_secret_file = "graph.secret"\n'))
    mailbox = config.mailboxes[0]
    assert isinstance(mailbox, GraphMailbox)
    graph = mailbox.graph
    assert graph.client_secret.get_secret_value() == SECRET
    assert SECRET in config.secret_values()
    assert SECRET not in repr(config)
    assert graph.authority == "https://login.microsoftonline.com"
    assert config.triage.model == "claude-haiku-4-5" and config.triage.digest_at == "18:00"


def test_graph_secret_from_an_unset_variable_is_named_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAPH_SECRET", raising=False)
    found = problems(write(tmp_path, GRAPH + 'client_secret = "${GRAPH_SECRET}"\n'))
    assert found == [
        "mailboxes.m365.graph.client_secret: references ${GRAPH_SECRET}, which is not set"
    ]


def test_graph_backend_needs_its_table_and_an_https_authority(tmp_path: Path) -> None:
    text = '[[mailboxes]]\nid = "m365"\nbackend = "graph"\nuser = "ops@example.com"\n'
    assert problems(write(tmp_path, text)) == [
        "mailboxes.m365.graph: required for the graph backend (tenant, client_id, client_secret)"
    ]
    text = GRAPH + f'client_secret = "{SECRET}"\nauthority = "http://login.example"\n'
    found = problems(write(tmp_path, text))
    assert found == [
        "mailboxes.m365.graph.authority: must be an https:// URL (msal refuses anything else)"
    ]
    assert all(SECRET not in p for p in found)


def test_triage_section_is_validated(tmp_path: Path) -> None:
    text = (
        '[triage]\nagent = "nobody"\ndigest_at = "25:00"\n'
        '[[mailboxes]]\nid = "work"\nbackend = "himalaya"\naccount = "work"\n'
        "himalaya = { version = 3 }\n"
    )
    found = problems(write(tmp_path, text))
    assert 'triage.digest_at: "25:00" is not a time like "18:00"' in found
    assert any(p.startswith("mailboxes.work.himalaya.version:") for p in found)
    fixed = text.replace('digest_at = "25:00"', 'digest_at = "07:30"').replace(
        "version = 3", "version = 2"
    )
    assert problems(write(tmp_path, fixed)) == ['triage.agent: unknown agent "nobody"']
