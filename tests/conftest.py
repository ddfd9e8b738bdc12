from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.db import Database
from tests.botapi_server import BotAPIServer
from tests.fleet import ANTHROPIC_KEY, TOKEN, FleetProcess, write_config
from tests.inproc import InProcessFleet


@pytest.fixture(autouse=True)
async def _no_leftover_processes() -> AsyncIterator[None]:
    """A failed test must not leave a `fleet run` polling in the background."""
    yield
    await FleetProcess.kill_leftovers()
    await InProcessFleet.stop_leftovers()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database of the test's own."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
async def botapi() -> AsyncIterator[BotAPIServer]:
    async with BotAPIServer(TOKEN) as server:
        yield server


@pytest.fixture
def fleet_config(tmp_path: Path, botapi: BotAPIServer) -> Path:
    return write_config(tmp_path, botapi.base_url)


@pytest.fixture
async def fleet(fleet_config: Path, botapi: BotAPIServer) -> AsyncIterator[InProcessFleet]:
    """A running fleet, polling the local Bot API server: in the test's process (see
    tests/inproc.py); tests that need a real process start a FleetProcess. On teardown it must
    stop cleanly: exit 0, no traceback and no secret in its log."""
    process = InProcessFleet(fleet_config)
    await process.start()
    await botapi.wait_until_polling(timeout=20)
    yield process
    code = await process.stop()
    assert code == 0, process.log
    assert "Traceback" not in process.log, process.log
    assert TOKEN not in process.log
    assert ANTHROPIC_KEY not in process.log


@pytest.fixture
async def fleet_process(fleet_config: Path, botapi: BotAPIServer) -> AsyncIterator[FleetProcess]:
    """A running `fleet run` subprocess, for tests about the process itself (signals, the
    poller lock between processes, what a restart finds). The same checks on teardown."""
    process = FleetProcess(fleet_config)
    await process.start()
    await botapi.wait_until_polling(timeout=20)
    yield process
    code = await process.stop()
    assert code == 0, process.log
    assert "Traceback" not in process.log, process.log
    assert TOKEN not in process.log
    assert ANTHROPIC_KEY not in process.log
