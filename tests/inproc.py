"""A fleet run inside the test's own process and event loop, for end-to-end tests that do not
need a real process.

`InProcessFleet` runs the same assembly as `fleet run` (bot.app.run_fleet: the poller lock,
the migration, the Dispatcher with the real handlers and middlewares, the outbox sender, the
scheduler and its jobs, the workers) against the local Bot API server and the test's own
database; it only skips the process-wide settings (signal handlers, gc.freeze). It saves the
~3 s a `fleet run` subprocess spends starting Python and importing aiogram, which the test
process has done already.

Its interface is FleetProcess's (tests/fleet.py): start, stop, wait, kill, log, wait_log.
Keep FleetProcess for what needs a real process: signals, the poller lock between processes,
kill -9 and what a restart finds, the command line, startup logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
from pathlib import Path
from typing import ClassVar

import agents.process_adapter
import handlers.edits
from bot.app import run_fleet
from bot.config import Config, load_config
from bot.config_check import startup_warnings
from bot.logs import FirstPollingLines, QuietPollingErrors, RedactingFormatter
from tests.fleet import FleetProcess, fleet_env

# Which fleet a log record comes from: set in the fleet's task, and so inherited by every task
# and thread it starts (asyncio copies the context), never by the test or the fake servers.
_current: contextvars.ContextVar[InProcessFleet | None] = contextvars.ContextVar(
    "inproc_fleet", default=None
)


def _fresh_process_state() -> None:
    """What a new `fleet run` process starts without: the few module-level records of the
    process (listed here; a fleet's own objects are built afresh by run_fleet). Without this,
    a fleet would find what an earlier fleet of the test process recorded (message ids start
    at 1 on each local Bot API server)."""
    handlers.edits._last_edits = handlers.edits._LastEdits()
    agents.process_adapter._running.clear()
    agents.process_adapter._stopped.clear()


# Loggers `fleet run` quietens (bot.logs.configure_logging); set once for the test process.
_QUIET = ("aiogram.event", "apscheduler", "httpx", "alembic")


class _FleetLog(logging.Handler):
    """Writes the records of one fleet to its log file, formatted and redacted as
    `fleet run` writes them to stderr."""

    def __init__(self, fleet: InProcessFleet, secrets: list[str]) -> None:
        super().__init__(logging.INFO)
        self.fleet = fleet
        self.setFormatter(RedactingFormatter(secrets))
        self.addFilter(QuietPollingErrors())
        self.addFilter(FirstPollingLines())
        self.file = fleet.log_path.open("a", encoding="utf-8")

    def filter(self, record: logging.LogRecord) -> bool:
        return _current.get() is self.fleet and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.file.write(self.format(record) + "\n")
            self.file.flush()
        except Exception:  # noqa: BLE001 - logging must not break the fleet
            self.handleError(record)

    def close(self) -> None:
        self.file.close()
        super().close()


class InProcessFleet:
    """One fleet running as a task of the test's event loop. Every fleet still running when
    its test ends is stopped (see `stop_leftovers`)."""

    started: ClassVar[list[InProcessFleet]] = []
    # The root logger's level before the first of the fleets running now raised it to INFO.
    _logging: ClassVar[list[InProcessFleet]] = []
    _level_before: ClassVar[int] = logging.NOTSET

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env or fleet_env()
        self.log_path = config.parent / f"fleet-{id(self)}.log"
        self.task: asyncio.Task[int] | None = None
        self._stop = asyncio.Event()
        self._handler: _FleetLog | None = None
        self._saved_env: dict[str, str | None] = {}

    async def start(self) -> None:
        InProcessFleet.started.append(self)  # from here on, `stop_leftovers` undoes it all
        self.log_path.touch()
        # The config's ${VARS} and the fleet's child processes read the environment, which a
        # process would have had of its own.
        self._saved_env = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        for name in [n for n in os.environ if n.startswith(("ANTHROPIC_", "TELEGRAM_"))]:
            if name not in self.env:
                self._saved_env[name] = os.environ.pop(name)
        config = load_config(self.config)
        _fresh_process_state()
        self._handler = _FleetLog(self, config.secret_values())
        root = logging.getLogger()
        root.addHandler(self._handler)
        if not InProcessFleet._logging:
            InProcessFleet._level_before = root.level
            root.setLevel(min(root.level or logging.INFO, logging.INFO))
        InProcessFleet._logging.append(self)
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
        self._stop = asyncio.Event()
        context = contextvars.copy_context()
        context.run(_current.set, self)
        self.task = asyncio.get_running_loop().create_task(
            self._run(config), name=f"fleet {self.config}", context=context
        )

    async def _run(self, config: Config) -> int:
        cli = logging.getLogger("bot.cli")
        for line in startup_warnings(config):
            cli.warning("config: %s (see `fleet check-config`)", line)
        try:
            return await run_fleet(config, stop=self._stop)
        except Exception:  # noqa: BLE001 - reported as a process would: logged, exit 1
            # What Python prints for an uncaught exception, before a process exits 1.
            cli.exception("fleet run crashed")
            return 1

    @property
    def returncode(self) -> int | None:
        if self.task is None or not self.task.done():
            return None
        if self.task.cancelled():
            return -signal.SIGKILL
        return self.task.result()

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_log(self, needle: str, timeout: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while needle not in self.log:
            if self.returncode is not None:
                raise AssertionError(f"fleet exited {self.returncode}:\n{self.log}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{needle!r} not logged in {timeout} s:\n{self.log}")
            await asyncio.sleep(0.05)

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.task is not None
        await asyncio.wait({self.task}, timeout=timeout)
        code = self.returncode
        if code is None:
            raise TimeoutError(f"the fleet did not stop in {timeout} s:\n{self.log}")
        self._restore()
        return code

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Stop as SIGTERM or SIGINT would; SIGKILL cancels the fleet's task instead (which,
        unlike a killed process, still runs its cleanup: keep FleetProcess for kill -9)."""
        assert self.task is not None
        if sig == signal.SIGKILL:
            self.task.cancel()
        else:
            self._stop.set()
        return await self.wait(timeout)

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    def _restore(self) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
            InProcessFleet._logging.remove(self)
            if not InProcessFleet._logging:
                logging.getLogger().setLevel(InProcessFleet._level_before)
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}

    @classmethod
    async def stop_leftovers(cls) -> None:
        for fleet in cls.started:
            if fleet.task is not None and not fleet.task.done():
                fleet.task.cancel()
                with contextlib.suppress(BaseException):
                    await fleet.task
            fleet._restore()
        cls.started.clear()


# Either kind, for helpers that start one or the other.
Fleet = FleetProcess | InProcessFleet
