"""Secret references in the config: `${VAR}` from the environment and `<key>_file` read from
a file (relative to the config). A problem names the variable or the file, never the value;
every value put in is remembered (with what it replaced) so that it can be redacted wherever
it went."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config.problems import key_path

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Resolution:
    """What resolving secrets found: problems, every value put in (value -> what it replaced,
    for redaction) and the key paths left without a value."""

    base: Path
    offline: bool
    problems: list[str] = field(default_factory=list)
    substituted: dict[str, str] = field(default_factory=dict)
    skip: set[str] = field(default_factory=set)


def resolve_secrets(node: Any, loc: tuple[str | int, ...], res: Resolution) -> Any:
    """Expand ${VAR} references and read `<key>_file` entries into `<key>`."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.endswith("_file") and isinstance(value, str) and len(key) > 5:
                target = key.removesuffix("_file")
                here = key_path((*loc, key))
                if target in node:
                    res.problems.append(f"{here}: give either {target} or {key}, not both")
                    res.skip.add(key_path((*loc, target)))
                    continue
                out[target] = _read_secret_file(value, here, res)
                if not out[target]:  # unread or unreadable: said under `here`, if at all
                    res.skip.add(key_path((*loc, target)))
                continue
            out[key] = resolve_secrets(value, (*loc, key), res)
        return out
    if isinstance(node, list):
        return [resolve_secrets(v, (*loc, i), res) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        return _expand(node, key_path(loc), res)
    return node


def _expand(text: str, here: str, res: Resolution) -> str:
    if res.offline and _VAR.search(text):
        res.skip.add(here)
        return text

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        value = os.environ.get(name)
        if value is None:
            res.problems.append(f"{here}: references ${{{name}}}, which is not set")
            return ""
        if not value.strip():
            res.problems.append(f"{here}: references ${{{name}}}, which is empty")
            return ""
        res.substituted.setdefault(value, f"${{{name}}}")
        return value

    return _VAR.sub(value_of, text)


def _read_secret_file(name: str, here: str, res: Resolution) -> str:
    if res.offline:
        return ""
    # The path may use ${VAR}, e.g. systemd's ${CREDENTIALS_DIRECTORY}/telegram.
    if "${" in name:
        before = len(res.problems)
        name = _expand(name, here, res)
        if len(res.problems) > before:
            return ""
    file = (res.base / name) if not Path(name).is_absolute() else Path(name)
    try:
        value = file.read_text(encoding="utf-8").strip()
    except OSError as err:
        res.problems.append(f"{here}: cannot read {file}: {err.strerror}")
        return ""
    except UnicodeDecodeError:
        res.problems.append(f"{here}: {file} is not UTF-8 text")
        return ""
    if not value:
        res.problems.append(f"{here}: {file} is empty")
    else:
        res.substituted.setdefault(value, f"[{here}]")
    return value
