"""`fleet check-config`: everything `load_config` rejects, plus what a fleet needs from the
place it runs in, which a config can be valid without: at least one person, no placeholder
left from `fleet init`, a token that looks like one from @BotFather, an Anthropic key for the
agents. Warnings (exit 0) are for what works but may surprise: a model without a price, a
`tools` list that leaves a tool out of reach, no alerts feed.

`fleet run` refuses only what `load_config` refuses (a fleet for tests or a first look may
lack people or keys); it logs the rest of this as warnings when it starts.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.catalog import TOOL_AUTHORITY
from agents.prices import price_of
from bot.config import Config, ConfigError, read_config, validate_config
from bot.config.problems import name_items

# The example values of `fleet init`'s template and of config.example.toml: a config that
# still holds one was not edited there (tests/test_config_check.py keeps them in step).
PLACEHOLDER_PERSON_IDS = frozenset({123456789})
PLACEHOLDER_CHAT_IDS = frozenset({-1001234567890})
# The README's "123456:your-token" and the like, never a token from @BotFather.
_PLACEHOLDER_TOKEN = re.compile(
    r"^\d+:(your[-_]?(bot[-_]?)?token|token|changeme|change[-_]me|replace[-_]?me|x+)$", re.I
)
TOKEN_SECRET_LENGTH = range(30, 51)  # @BotFather's tokens have 35 characters after the colon
# The SDK reads either when no profile gives a key.
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


@dataclass
class Report:
    """Lines to print: each names the file and the key path."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Findings:
    """Problems with positional key paths ("people[0].telegram_id: ...")."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_config(path: Path, *, offline: bool = False) -> Report:
    """Every problem of the file at once: TOML syntax first (nothing else can be read then),
    then secrets, keys and types, cross-checks and surroundings together. `offline` does not
    resolve `${VAR}` or `<key>_file` and does not look for an Anthropic key."""
    try:
        _, raw = read_config(path)
    except ConfigError as err:
        return Report(errors=err.problems)
    checked = validate_config(raw, path, offline=offline)
    report = Report(errors=checked.lines())
    if checked.config is not None:
        found = surroundings(checked.config, offline=offline)
        report.errors += [f"{path}: {line}" for line in checked.named(found.errors)]
        report.warnings += [f"{path}: warning: {line}" for line in checked.named(found.warnings)]
    return report


def startup_warnings(config: Config) -> list[str]:
    """What check-config would still say about a config `fleet run` accepted, for its log."""
    found = surroundings(config)
    raw: dict[str, Any] = {}
    if config.source is not None:
        raw = tomllib.loads(config.source.decode("utf-8"))
    return [name_items(line, raw) for line in [*found.errors, *found.warnings]]


def surroundings(config: Config, *, offline: bool = False) -> Findings:
    found = Findings()
    _people(config, found)
    _token(config, found)
    _feeds(config, found)
    if not offline:
        _api_key(config, found)
    _prices(config, found)
    _tools(config, found)
    return found


def _people(config: Config, found: Findings) -> None:
    if not config.people:
        found.errors.append(
            'people: nobody is listed: add yourself as [[people]] with role = "owner" '
            "(the bot refuses everyone who is not listed)"
        )
    for i, person in enumerate(config.people):
        if person.telegram_id in PLACEHOLDER_PERSON_IDS:
            found.errors.append(
                f"people[{i}].telegram_id: {person.telegram_id} is the example id; put this "
                "person's own Telegram id (@userinfobot tells a person theirs)"
            )


def _token(config: Config, found: Findings) -> None:
    token = config.telegram.token.get_secret_value()
    secret = token.partition(":")[2]
    if _PLACEHOLDER_TOKEN.match(token):
        found.errors.append(
            "telegram.token: is a placeholder, not a token: ask @BotFather for the bot's token"
        )
    elif not config.telegram.api_base and len(secret) not in TOKEN_SECRET_LENGTH:
        found.errors.append(
            "telegram.token: does not look like a token from @BotFather (about 35 characters "
            "after the colon); was it cut short or joined to something when copied?"
        )


def _feeds(config: Config, found: Findings) -> None:
    for name, feed in config.feeds.items():
        if feed.chat_id in PLACEHOLDER_CHAT_IDS:
            found.errors.append(
                f"feeds.{name}.chat_id: {feed.chat_id} is the example chat id; put your "
                f"group's id (it starts with -100) or remove the {name} feed"
            )
    if config.feed("alerts") is None:
        found.warnings.append(
            "feeds.alerts: not set: incidents and failures are recorded but posted nowhere"
        )


def _api_key(config: Config, found: Findings) -> None:
    needing = [agent.id for agent in config.agents if "primary" in agent.profiles]
    if config.anthropic.profiles or not (needing or config.mailboxes):
        return  # each configured profile's api_key was resolved by load_config already
    if any(os.environ.get(name, "").strip() for name in KEY_VARIABLES):
        return
    # Not naming the agents: an id may be a stand-in for one reported broken.
    who = "the agents" if needing else "email triage"
    found.errors.append(
        f"anthropic: no API key for {who}: set ANTHROPIC_API_KEY, or give "
        '[anthropic.profiles.primary] an api_key = "${VAR}" or api_key_file'
    )


def _prices(config: Config, found: Findings) -> None:
    used: list[tuple[str, str]] = []
    for i, agent in enumerate(config.agents):
        used.append((f"agents[{i}].model", agent.model))
        used += [(f"agents[{i}].fallbacks[{j}]", m) for j, m in enumerate(agent.fallbacks)]
    if config.mailboxes:
        used.append(("triage.model", config.triage.model))
        used += [(f"triage.fallbacks[{j}]", m) for j, m in enumerate(config.triage.fallbacks)]
    seen: set[str] = set()
    for where, model in used:
        if model in seen or price_of(config, model) is not None:
            continue
        seen.add(model)
        found.warnings.append(
            f'{where}: no price for "{model}": its calls count as $0, so budgets never stop '
            f'them; add [pricing."{model}"] with input and output (USD per million tokens)'
        )


def _tools(config: Config, found: Findings) -> None:
    for i, agent in enumerate(config.agents):
        if not agent.tools:
            continue
        if "set_status" not in agent.tools:
            found.warnings.append(
                f"agents[{i}].tools: without set_status the agent can never finish a task"
            )
        for j, name in enumerate(agent.tools):
            needs = TOOL_AUTHORITY.get(name)
            if needs is not None and needs not in agent.authority:
                found.warnings.append(
                    f"agents[{i}].tools[{j}]: {name} needs the {needs} authority, "
                    "which this agent lacks, so it is not offered"
                )
