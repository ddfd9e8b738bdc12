"""From pydantic's errors to the config's own words, and on to every other problem.

pydantic stops a model at its first broken key, so a config with a bad duration would hide
its duplicate ids and unknown agents until the next attempt. `repair` edits a copy of the data
until it validates (a bad optional key falls back to its default, a bad required one gets a
harmless stand-in), so the cross-checks run in the same pass; whatever they would say about a
key already reported is left out (`under`). `describe` turns each error into a plain sentence
with its key path, and `name_items` names list entries by id ("agents.coder.budget_usd_month",
not "agents[1].budget_usd_month").

This module knows the models only through the root model it is given, so bot.config can use
it without an import cycle. It knows two conventions of theirs: an error of type
`CROSS_FIELD` is a problem between keys whose message is said as is, and a required key may
say what to write when it is missing (`WhenMissing`). A table chosen by a key
(`Annotated[A | B, Field(discriminator="backend")]`) is read as the member that key names.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

Loc = tuple[str | int, ...]

# A union's member tags in an error location ("str", "list[str]", "function-after[...]").
_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\]|[A-Z][A-Za-z]+)$")
_INDEXED = re.compile(r"^([a-z_]+)\[(\d+)\]")
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_ID_PATTERN = "^[a-z][a-z0-9_-]{0,31}$"
_UNION_TAG = ("union_tag_not_found", "union_tag_invalid")

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
        if error["type"] in _UNION_TAG:  # said about the key that chooses the table
            raw = (*raw, str((error.get("ctx") or {}).get("discriminator", "")).strip("'"))
        loc = _shown_loc(raw, root)
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
        field = _field(raw, root)
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
    if kind == "list_type" and _container(_field_annotation(raw, root))[0] == "list":
        item = _container(_field_annotation(raw, root))[1]
        if _container(item)[0] == "model":
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


def _field(loc: Loc, root: type[BaseModel]) -> FieldInfo | None:
    """The field of the key at `loc` (None for an unknown key or an entry)."""
    walk = _walk(loc, root)
    return walk.field if walk.used == len(loc) else None


def _field_annotation(loc: Loc, root: type[BaseModel]) -> Any:
    field = _field(loc, root)
    return field.annotation if field is not None else None


def _shown_loc(loc: Loc, root: type[BaseModel]) -> Loc:
    """The location as a person names it: without union member tags."""
    walk = _walk(loc, root)
    shown = list(walk.target)
    for part in loc[walk.used :]:
        if isinstance(part, str) and _TAG.match(part):
            continue
        shown.append(part)
    return tuple(shown)


def known_keys(loc: Loc, root: type[BaseModel]) -> list[str]:
    """The keys the table at `loc` accepts."""
    annotation: Any = root
    for part in loc:
        variant = _variant(annotation, part)
        if variant is not None:
            annotation = variant
            continue
        kind, sub = _container(annotation)
        if kind == "model" and isinstance(part, str):
            field = sub.model_fields.get(part)
            if field is None:
                return []
            annotation = _annotated(field)
        elif kind in ("list", "dict"):
            annotation = sub
        else:
            return []
    kind, sub = _container(annotation)
    return [name for name in sub.model_fields if name != "path"] if kind == "model" else []


# --- repairing a copy far enough for the cross-checks --------------------------------------


def repair(data: dict[str, Any], errors: list[Any], root: type[BaseModel]) -> None:
    """Edit `data` (a copy) so that the keys in `errors` no longer fail: an unknown or broken
    optional key is removed (its default applies), a broken required key and an entry that is
    not a table get a stand-in. Entries are never removed from lists, so positions stay."""
    for error in errors:
        walk = _walk(tuple(error["loc"]), root)
        target, field = walk.target, walk.field
        if not target:
            continue
        parent = _node(data, target[:-1])
        last = target[-1]
        if error["type"] in _UNION_TAG:
            # The entry becomes the first kind of table (its key said broken already).
            key, tag = _first_tag(walk.annotation)
            entry = _node(data, target)
            if isinstance(entry, dict):
                entry[key] = tag
            elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
                parent[last] = {key: tag}
        elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
            parent[last] = {}
        elif isinstance(parent, dict) and isinstance(last, str):
            if field is not None and field.is_required():
                parent[last] = _stand_in(field.annotation)
            else:
                parent.pop(last, None)


def _node(data: Any, loc: Loc) -> Any:
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node


@dataclass
class _Walk:
    """How far a location leads through the models: `target`, its part down to the key of
    the innermost table (without union tags), is `used` parts of it; `field` is that key's
    (None for an unknown key or an entry of a list or dict of tables), `annotation` what
    the last part holds."""

    target: Loc
    field: FieldInfo | None
    used: int
    annotation: Any


def _walk(loc: Loc, root: type[BaseModel]) -> _Walk:
    annotation: Any = root
    out: list[str | int] = []
    field: FieldInfo | None = None
    used = 0
    for part in loc:
        variant = _variant(annotation, part)
        if variant is not None:
            annotation = variant
            used += 1
            continue
        kind, sub = _container(annotation)
        if kind == "model" and isinstance(part, str):
            out.append(part)
            used += 1
            field = sub.model_fields.get(part)
            if field is None:
                break
            annotation = _annotated(field)
        elif kind in ("list", "dict") and _container(sub)[0] == "model":
            out.append(part)
            used += 1
            field = None
            annotation = sub
        else:
            break
    return _Walk(tuple(out), field, used, annotation)


def _annotated(field: FieldInfo) -> Any:
    """A field's annotation, with the discriminator pydantic moved out of it put back."""
    if isinstance(field.discriminator, str):
        return Annotated[field.annotation, field]
    return field.annotation


def _chooser(annotation: Any) -> tuple[str, list[type[BaseModel]]] | None:
    """(the key, the tables) of a table chosen by a key, else None."""
    if get_origin(annotation) is not Annotated:
        return None
    base, *extra = get_args(annotation)
    key = next((m.discriminator for m in extra if isinstance(m, FieldInfo)), None)
    if not isinstance(key, str) or get_origin(base) not in (Union, types.UnionType):
        return None
    return key, [m for m in get_args(base) if isinstance(m, type) and issubclass(m, BaseModel)]


def _variant(annotation: Any, tag: str | int) -> type[BaseModel] | None:
    """The table of a table chosen by a key that `tag` (the key's value, which pydantic puts
    into error locations) names."""
    chooser = _chooser(annotation)
    if chooser is None:
        return None
    key, members = chooser
    for member in members:
        field = member.model_fields.get(key)
        if field is not None and tag in get_args(field.annotation):
            return member
    return None


def _first_tag(annotation: Any) -> tuple[str, Any]:
    """The key of a table chosen by a key, and the value naming its first table."""
    chooser = _chooser(annotation)
    assert chooser is not None, "a union tag error comes from a table chosen by a key"
    key, members = chooser
    return key, get_args(members[0].model_fields[key].annotation)[0]


def _container(annotation: Any) -> tuple[str, Any]:
    """("model", M), ("list", item), ("dict", value) or ("leaf", annotation)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            tables = [a for a in members if _container(a)[0] != "leaf"]
            annotation = (tables or members)[0]
        else:
            break
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if origin is list:
        return "list", get_args(annotation)[0]
    if origin is dict:
        return "dict", get_args(annotation)[1]
    return "leaf", annotation


def _stand_in(annotation: Any) -> Any:
    """A value of the right type for a required key that is missing or broken; it is never
    used, only validated, and what is said about its key is left out (`under`)."""
    kind, leaf = _container(annotation)
    if kind == "model":
        return {}
    if kind == "list":
        return []
    if kind == "dict":
        return {}
    if get_origin(leaf) is Literal:
        return get_args(leaf)[0]
    if isinstance(leaf, type):
        if issubclass(leaf, Enum):
            return next(iter(leaf)).value
        if leaf is bool:
            return False
        if issubclass(leaf, int | float):
            return 0
        if leaf is SecretStr:
            return "0:stand-in"
        if issubclass(leaf, Path):
            return "."
    return "stand-in"
