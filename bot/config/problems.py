"""From pydantic's errors to the config's own words, and on to every other problem.

The cross-checks run on a repaired copy (bot.config.walk) next to the key errors; whatever
they would say about a key already reported is left out (`under`, `said_already`).
`describe` turns each error into a plain sentence with its key path, and `name_items` names
list entries by id ("agents.coder.budget_usd_month", not "agents[1].budget_usd_month").

This module knows the models only through the root model it is given, so the tables can use
it without an import cycle. It knows two conventions of theirs: an error of type
`CROSS_FIELD` is a problem between keys whose message is said as is, and a required key may
say what to write when it is missing (`WhenMissing`).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bot.config.walk import (
    UNION_TAG,
    Loc,
    container,
    field_annotation,
    field_at,
    known_keys,
    shown_loc,
)

_INDEXED = re.compile(r"^([a-z_]+)\[(\d+)\]")
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_ID_PATTERN = "^[a-z][a-z0-9_-]{0,31}$"

# The error type of a problem between keys of one table (bot.config.values.Section).
CROSS_FIELD = "cross_field"


@dataclass(frozen=True)
class WhenMissing:
    """What to say when a required key is missing, instead of "required key is missing":
    `account: Annotated[str, WhenMissing("required for the himalaya backend")]`."""

    text: str


def key_path(loc: Loc) -> str:
    """("agents", 1, "model") -> "agents[1].model"; dict keys that are not bare are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE.match(part) else json.dumps(part, ensure_ascii=False)
            out += f".{name}" if out else name
    return out or "(top level)"


def path_of(problem: str) -> str:
    """The key path a problem line starts with."""
    return problem.split(": ", 1)[0]


def under(path: str, paths: set[str]) -> bool:
    """Whether `path` is one of `paths` or inside one of them."""
    return any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in paths)


def said_already(problem: str, skip: set[str]) -> bool:
    """Whether `problem` is about a key in `skip` (reported, or left unresolved), or is a
    finding about a whole section ("agents: no agent has hub = true") that may only follow
    from an entry's key reported broken (its `hub`, or the entry itself)."""
    path = path_of(problem)
    if under(path, skip):
        return True
    if not _BARE.match(path):
        return False
    words = set(re.findall(r"[a-z_]+", problem.partition(": ")[2]))
    for reported in skip:
        match = re.match(rf"^{re.escape(path)}\[\d+\](?:\.([a-z_]+))?$", reported)
        if match and (match.group(1) is None or match.group(1) in words):
            return True
    return False


def name_items(problem: str, raw: dict[str, Any]) -> str:
    """ "agents[1].model: ..." -> "agents.coder.model: ..." when that entry's id is unique in
    the file (people go by name). Entries without a usable id keep their position."""
    match = _INDEXED.match(problem)
    if not match:
        return problem
    section, index = match.group(1), int(match.group(2))
    items = raw.get(section)
    if not isinstance(items, list) or index >= len(items) or not isinstance(items[index], dict):
        return problem
    key = "name" if section == "people" else "id"
    name = items[index].get(key)
    if not isinstance(name, str) or not name.strip() or "\n" in name:
        return problem
    same = [item for item in items if isinstance(item, dict) and item.get(key) == name]
    if len(same) != 1:
        return problem
    return key_path((section, name)) + problem[match.end() :]


# --- describing pydantic's errors ----------------------------------------------------------


def describe(errors: list[Any], root: type[BaseModel]) -> list[tuple[str, str]]:
    """(key path, sentence) per broken key, in the order found; a union's several errors for
    one key become one sentence. Problems between keys are said one by one, even several
    about one table."""
    found: dict[tuple[str, int], list[str]] = {}
    for n, error in enumerate(errors):
        raw = tuple(error["loc"])
        if error["type"] in UNION_TAG:  # said about the key that chooses the table
            raw = (*raw, str((error.get("ctx") or {}).get("discriminator", "")).strip("'"))
        loc = shown_loc(raw, root)
        sentence = _own_sentence(error, raw, loc, root) or _sentence(error, raw, loc, root)
        said = found.setdefault((key_path(loc), n if error["type"] == CROSS_FIELD else -1), [])
        if sentence not in said:
            said.append(sentence)
    return [(path, _joined(sentences)) for (path, _), sentences in found.items()]


def _joined(sentences: list[str]) -> str:
    if len(sentences) == 1:
        return sentences[0]
    # "must be text in quotes" + "must be a list ..." -> "must be text in quotes, or a list ..."
    rest = [s.removeprefix("must be ") for s in sentences[1:]]
    return ", or ".join([sentences[0], *rest])


def _own_sentence(error: Any, raw: Loc, loc: Loc, root: type[BaseModel]) -> str | None:
    """The sentences of the config's own conventions (see the top), None for the others."""
    kind = str(error["type"])
    if kind == CROSS_FIELD:
        return str(error["msg"])
    if kind == "union_tag_invalid":
        tags = str((error.get("ctx") or {}).get("expected_tags", "")).replace("'", '"')
        return f"must be {' or '.join(tags.split(', '))}"
    if kind == "union_tag_not_found":
        return "required key is missing"
    if kind == "missing":
        field = field_at(raw, root)
        said = [m.text for m in field.metadata if isinstance(m, WhenMissing)] if field else []
        return said[0] if said else "required key is missing"
    return None


def _sentence(error: Any, raw: Loc, loc: Loc, root: type[BaseModel]) -> str:
    """What is wrong at `raw` (pydantic's location), shown to people as `loc`."""
    kind = str(error["type"])
    ctx = error.get("ctx") or {}
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = known_keys(raw[:-1], root)
        hint = ""
        if known:
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else f" (known: {', '.join(known)})"
        return f"unknown key{hint}"
    if kind == "enum" and loc and loc[-1] == "role":
        return "unknown role (use owner, operator or viewer)"
    simple = {
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "finite_number": "must be a finite number (not inf or nan)",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "string_type": "must be text in quotes",
        "path_type": "must be a path in quotes",
        "list_type": 'must be a list, like ["a", "b"]',
        "dict_type": "must be a table ([section] or { key = value })",
        "model_type": "must be a table ([section] or { key = value })",
        "model_attributes_type": "must be a table ([section] or { key = value })",
    }
    if kind == "list_type" and container(field_annotation(raw, root))[0] == "list":
        item = container(field_annotation(raw, root))[1]
        if container(item)[0] == "model":
            return f"must be a list of tables: write each entry as [[{key_path(loc)}]]"
    if kind in simple:
        return simple[kind]
    bounds = {
        "greater_than_equal": ("must be at least", "ge"),
        "greater_than": ("must be more than", "gt"),
        "less_than_equal": ("must be at most", "le"),
        "less_than": ("must be less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{words} {_number(ctx.get(key))}"
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must be at least {least} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length')}"
    if kind == "too_long":
        return f"must list at most {ctx.get('max_length')}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == _ID_PATTERN:
            return (
                "must be an id: a lowercase letter, then up to 31 lowercase letters, "
                "digits, - or _"
            )
        return f"must match the pattern {ctx.get('pattern')}"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", "")).replace("'", '"')
        return f"must be {expected}" if expected else message
    if kind == "value_error":
        return message
    return message[:1].lower() + message[1:]


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
