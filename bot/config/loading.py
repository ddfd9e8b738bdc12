"""Reading a config: the file, its TOML, its secrets, then every problem in one pass.

Validation goes in three steps, each saying nothing about a key an earlier one reported:
the keys and types of every table (with each table's checks between its own keys), then
those checks again on a repaired copy (a table whose keys were broken could not run them),
then the checks across tables (bot.config.semantics) on that copy.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.config.model import Config
from bot.config.problems import CROSS_FIELD, describe, name_items, path_of, said_already, under
from bot.config.secrets import Resolution, resolve_secrets
from bot.config.semantics import semantic_problems
from bot.config.values import NO_CROSS_CHECKS
from bot.config.walk import repair

DEFAULT_CONFIG_PATH = Path("fleet.toml")


class ConfigError(Exception):
    """The config cannot be used. `problems` holds one line per problem, each naming the file
    and the key path; none contains a secret value."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: Path) -> Config:
    """Read, resolve and validate a config file; raise ConfigError listing every problem."""
    data, raw = read_config(path)
    checked = validate_config(raw, path)
    if checked.problems or checked.config is None:
        raise ConfigError(checked.lines())
    checked.config._source = data
    return checked.config


def read_config(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its TOML; ConfigError (one line) when it cannot be read or is not
    TOML, since nothing else can be checked then."""
    where = str(path)
    try:
        data = path.read_bytes()
        return data, tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{where}: file not found (create one with `fleet init`)"]) from None
    except OSError as err:
        raise ConfigError([f"{where}: cannot read: {err.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{where}: {_toml_problem(err)}"]) from None


def _toml_problem(err: tomllib.TOMLDecodeError) -> str:
    # tomllib (3.11) puts the position at the end: "Expected ... (at line 2, column 5)".
    text = str(err)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if match is None:
        return f"not valid TOML: {text}"
    what = text[: match.start()]
    what = what[:1].lower() + what[1:]
    return f"not valid TOML at line {match.group(1)}, column {match.group(2)}: {what}"


@dataclass
class Checked:
    """The outcome of `validate_config`. With problems, `config` (if any) is a repaired copy
    good only for further checks; `skip` holds the key paths (positional, "agents[1].model")
    already reported or left unresolved, about which later checks must say nothing."""

    path: Path
    raw: dict[str, Any]
    config: Config | None
    problems: list[str] = field(default_factory=list)
    skip: set[str] = field(default_factory=set)

    def lines(self) -> list[str]:
        return [f"{self.path}: {problem}" for problem in self.problems]

    def named(self, problems: list[str]) -> list[str]:
        """Positional key paths of further problems, named by id; those under `skip` left out."""
        return [name_items(p, self.raw) for p in problems if not said_already(p, self.skip)]


def validate_config(raw: dict[str, Any], path: Path, *, offline: bool = False) -> Checked:
    """Every problem of a parsed config at once: unresolved secrets, keys and types, and the
    cross-checks, each key reported once. `offline` leaves `${VAR}` and `<key>_file` unread
    (and says nothing about the keys they feed)."""
    resolution = Resolution(path.parent, offline)
    resolved = resolve_secrets(raw, (), resolution)
    resolved["path"] = path
    problems = list(resolution.problems)
    skip = {path_of(p) for p in problems} | resolution.skip
    config: Config | None
    try:
        config = Config.model_validate(resolved)
    except ValidationError as err:
        errors = err.errors(include_input=False)
        keys = [e for e in errors if e["type"] != CROSS_FIELD]
        problems += [
            f"{at}: {what}" for at, what in describe(errors, Config) if not under(at, skip)
        ]
        # A problem between keys is not a broken key: what else is wrong there is still said.
        skip |= {at for at, _ in describe(keys, Config)}
        data, config = _repaired(resolved, keys)
        if config is not None:
            again = [f"{at}: {what}" for at, what in _cross_problems(data)]
            problems += [p for p in again if p not in problems and not said_already(p, skip)]
    if config is not None:
        config._substituted = resolution.substituted
        problems += [p for p in semantic_problems(config) if not said_already(p, skip)]
        config = _anchor_sqlite(config)
    return Checked(path, raw, config, [name_items(p, raw) for p in problems], skip)


def _repaired(resolved: dict[str, Any], errors: list[Any]) -> tuple[dict[str, Any], Config | None]:
    """A copy of the data after `repair`, and the config it validates to (without the checks
    between keys), so that the cross-checks can run next to the key errors; None if it still
    fails after a few rounds (then only those are said)."""
    data = copy.deepcopy(resolved)
    for _ in range(6):
        repair(data, errors, Config)
        try:
            return data, Config.model_validate(data, context=NO_CROSS_CHECKS)
        except ValidationError as again:
            errors = again.errors(include_input=False)
    return data, None


def _cross_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The checks between keys of every table of repaired data: its keys are all valid, so
    each table's checks run (not only those of the tables that were whole the first time)."""
    try:
        Config.model_validate(data)
    except ValidationError as err:
        found = [e for e in err.errors(include_input=False) if e["type"] == CROSS_FIELD]
        return describe(found, Config)
    return []


def _anchor_sqlite(config: Config) -> Config:
    """A relative SQLite path is relative to the config file, like workspaces, not to
    wherever the process happens to start (systemd, cron and shells differ)."""
    prefix = "sqlite+aiosqlite:///"
    url = config.database.url
    if not url.startswith(prefix) or url[len(prefix) :].startswith(("/", ":memory:")):
        return config
    if not url[len(prefix) :]:
        return config
    absolute = (config.path.parent / url[len(prefix) :]).resolve()
    database = config.database.model_copy(update={"url": f"{prefix}{absolute}"})
    return config.model_copy(update={"database": database})
