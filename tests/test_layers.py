"""The layers of docs/architecture.md, checked: no module imports a layer above its own, no
import cycle between modules, storage/ never imports aiogram, and each package imports alone.

Imports inside functions count (an upward import hidden in a function body is still upward);
imports under `if TYPE_CHECKING:` count too, since they are still a dependency of the code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "agents", "integrations", "storage")

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = ("base", "views", "storage", "services", "handlers", "assembly")

# Module (or package) prefix -> layer; the longest matching prefix decides.
PLACES: dict[str, str] = {
    # base: the rows, the statuses, the config and the vocabulary the config is checked with
    "storage.models": "base",
    "storage.statuses": "base",
    "bot.config": "base",
    "bot.cron": "base",
    "bot.redact": "base",
    "agents.catalog": "base",
    # views: Telegram text, buttons and callback data, pure functions of rows and config
    "bot.views": "views",
    "bot.views.text": "views",
    "bot.args": "views",
    "bot.views.buttons": "views",
    "bot.views.pipelines": "views",
    # storage: transitions and queries
    "storage": "storage",
    # services: agents, integrations, the scheduled jobs and the delivery of messages
    "agents": "services",
    "integrations": "services",
    "bot": "services",
    # handlers: Telegram updates, web requests, and the middlewares in front of them
    "handlers": "handlers",
    "bot.middlewares": "handlers",
    "bot.web": "handlers",
    # assembly: the process and the command line
    "bot.app": "assembly",
    "bot.cli": "assembly",
    "bot.scaffold": "assembly",
    "bot.systemd": "assembly",
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every absolute module name `module` imports (from our packages or not)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            for alias in node.names:
                full = f"{name}.{alias.name}"
                yield full if full in MODULES else name


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges[module] = {
            target
            for target in _imports(module, path)
            if target in MODULES and target != module and not module.startswith(target + ".")
        }
    return edges


def layer_of(module: str) -> int:
    best = max(
        (prefix for prefix in PLACES if module == prefix or module.startswith(prefix + ".")),
        key=len,
    )
    return LAYERS.index(PLACES[best])


def _cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)  # raises ValueError (max of nothing) for a module with no place


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = {
        (module, target)
        for module, targets in _edges().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    }
    described = [
        f"{module} ({LAYERS[layer_of(module)]}) imports {target} ({LAYERS[layer_of(target)]})"
        for module, target in sorted(upward)
    ]
    assert not described, "upward imports:\n" + "\n".join(described)


def test_no_import_cycles() -> None:
    cycles = [sorted(cycle) for cycle in _cycles(_edges())]
    assert not cycles, f"import cycles: {cycles}"


def test_storage_does_not_import_aiogram() -> None:
    using = {
        module
        for module, path in MODULES.items()
        if module.startswith("storage")
        and any(name.split(".")[0] == "aiogram" for name in _imports(module, path))
    }
    assert not using, f"storage modules importing aiogram: {using}"


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_alone(package: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {package}"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
