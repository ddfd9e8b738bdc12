"""How a command is declared: its name, the minimum role, and its docstring as the help line.

`RoleMiddleware` enforces the `role` flag; `/help` and setMyCommands read the same flags, so a
command is described in exactly one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aiogram import Router
from aiogram.filters import Command

from bot.config import Role

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CommandSpec:
    name: str
    role: Role
    help: str
    usage: str


def command(router: Router, name: str, role: Role, usage: str = "") -> Callable[[F], F]:
    """Register `handler` for /name, allowed to `role` and above. The handler's docstring
    (first line) is its /help text; `usage` shows the arguments, e.g. "<agent> <text>"."""

    def register(handler: F) -> F:
        router.message.register(
            handler,
            Command(name, ignore_case=True),
            flags={"command": name, "role": role, "usage": usage},
        )
        return handler

    return register


def command_specs(routers: Iterable[Router]) -> Iterator[CommandSpec]:
    for router in routers:
        yield from _specs_of(router)


def _specs_of(router: Router) -> Iterator[CommandSpec]:
    for handler in router.message.handlers:
        name = handler.flags.get("command")
        if name is None:
            continue
        doc = (handler.callback.__doc__ or "").strip().splitlines()
        yield CommandSpec(
            name=name,
            role=handler.flags["role"],
            help=doc[0] if doc else name,
            usage=handler.flags.get("usage", ""),
        )
    for sub in router.sub_routers:
        yield from _specs_of(sub)


def commands_for(routers: Iterable[Router], role: Role) -> list[CommandSpec]:
    """The commands a person with `role` may use, in registration order."""
    return [spec for spec in command_specs(routers) if role.allows(spec.role)]
