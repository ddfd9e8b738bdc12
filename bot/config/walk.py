"""How an error's location leads through the config's models, and repairing a copy of the
data along it.

pydantic stops a model at its first broken key, so a config with a bad duration would hide
its duplicate ids and unknown agents until the next attempt. `repair` edits a copy of the data
until it validates (a bad optional key falls back to its default, a bad required one gets a
harmless stand-in), so the cross-checks run in the same pass. A table chosen by a key
(`Annotated[A | B, Field(discriminator="backend")]`) is read as the member that key names:
pydantic puts the key's value into the location, which people never see.

This module knows the models only through the root model it is given.
"""

from __future__ import annotations

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
UNION_TAG = ("union_tag_not_found", "union_tag_invalid")


def field_at(loc: Loc, root: type[BaseModel]) -> FieldInfo | None:
    """The field of the key at `loc` (None for an unknown key or an entry)."""
    walk = _walk(loc, root)
    return walk.field if walk.used == len(loc) else None


def field_annotation(loc: Loc, root: type[BaseModel]) -> Any:
    field = field_at(loc, root)
    return field.annotation if field is not None else None


def shown_loc(loc: Loc, root: type[BaseModel]) -> Loc:
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
        kind, sub = container(annotation)
        if kind == "model" and isinstance(part, str):
            field = sub.model_fields.get(part)
            if field is None:
                return []
            annotation = _annotated(field)
        elif kind in ("list", "dict"):
            annotation = sub
        else:
            return []
    kind, sub = container(annotation)
    return [name for name in sub.model_fields if name != "path"] if kind == "model" else []


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
        if error["type"] in UNION_TAG:
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
        kind, sub = container(annotation)
        if kind == "model" and isinstance(part, str):
            out.append(part)
            used += 1
            field = sub.model_fields.get(part)
            if field is None:
                break
            annotation = _annotated(field)
        elif kind in ("list", "dict") and container(sub)[0] == "model":
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


def container(annotation: Any) -> tuple[str, Any]:
    """("model", M), ("list", item), ("dict", value) or ("leaf", annotation)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            tables = [a for a in members if container(a)[0] != "leaf"]
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
    kind, leaf = container(annotation)
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
