"""How a feature's handlers are declared (`Routes`), and how a command is: its name, the
minimum role, and its docstring as the help line.

`RoleMiddleware` enforces the `role` flag; `/help` and setMyCommands read the same flags, so a
command is described in exactly one place.

A handlers module declares `router = Routes(__name__)` rather than an aiogram Router: an aiogram
Router can join only one Dispatcher in a process, while `Routes.build()` makes a fresh Router
each time, so tests can run several fleets (each with its own Dispatcher) in one process.
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
class _Registration:
    observer: str
    handler: Callable[..., Any]
    filters: tuple[Any, ...]
    flags: dict[str, Any]


class _Observer:
    """Records `@routes.message(...)` (and `.register(...)`) like aiogram's observer does."""

    def __init__(self, routes: Routes, name: str) -> None:
        self._routes = routes
        self._name = name

    def register(self, handler: F, *filters: Any, flags: dict[str, Any] | None = None) -> F:
        self._routes.registrations.append(
            _Registration(self._name, handler, filters, dict(flags or {}))
        )
        return handler

    def __call__(self, *filters: Any, flags: dict[str, Any] | None = None) -> Callable[[F], F]:
        def register(handler: F) -> F:
            return self.register(handler, *filters, flags=flags)

        return register


class Routes:
    """A feature's handlers, recorded in order at import; `build()` makes an aiogram Router of
    them (a new one per call, since a Router joins only one Dispatcher)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.registrations: list[_Registration] = []
        self.message = _Observer(self, "message")
        self.callback_query = _Observer(self, "callback_query")
        self.errors = _Observer(self, "errors")

    def build(self) -> Router:
        router = Router(name=self.name)
        for item in self.registrations:
            # A copy of the flags: aiogram adds to them (e.g. a Command filter's "commands").
            getattr(router, item.observer).register(
                item.handler, *item.filters, flags=dict(item.flags)
            )
        return router


@dataclass(frozen=True)
class CommandSpec:
    name: str
    role: Role
    help: str
    usage: str


def command(router: Routes, name: str, role: Role, usage: str = "") -> Callable[[F], F]:
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
