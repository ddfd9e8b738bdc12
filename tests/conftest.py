from __future__ import annotations

import shutil
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


_migrated: list[Path] = []  # this worker's migrated SQLite file, made by the first `db`


async def _migrated_copy(tmp_path_factory: pytest.TempPathFactory, target: Path) -> None:
    """Put a migrated, empty SQLite database at `target`: the migrations run once per worker
    and each test gets a copy of their result (tests/test_migrations.py tests them)."""
    if not _migrated:
        template = tmp_path_factory.mktemp("migrated") / "fleet.db"
        database = Database(f"sqlite+aiosqlite:///{template}")
        await database.migrate()
        await database.dispose()  # the last connection's close folds the WAL into the file
        _migrated.append(template)
    shutil.copyfile(_migrated[0], target)


@pytest.fixture
async def db(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    """A migrated SQLite database of the test's own."""
    await _migrated_copy(tmp_path_factory, tmp_path / "fleet.db")
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    await database.migrate()  # finds the newest schema there: a quick check
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
