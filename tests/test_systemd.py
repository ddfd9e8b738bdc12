"""`fleet systemd`: units for a service user, sandboxed to write only where the fleet writes,
accepted by `systemd-analyze verify` where systemd is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Config, read_config, validate_config
from bot.systemd import units

_FLEET = Path(sys.executable).parent / "fleet"
FLEET = [str(_FLEET)] if _FLEET.exists() else [sys.executable, "-m", "bot.cli"]

HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes")


def fleet(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Without any secret in the environment: the units are written where they are not."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "ANTHROPIC_"))
    }
    return subprocess.run(
        [*FLEET, *map(str, args)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fleet_config(folder: Path, *, database: Path | None = None, extra: str = "") -> Path:
    """A config in `folder` with two workspaces inside it and one elsewhere."""
    (folder / "workspaces" / "hub").mkdir(parents=True, exist_ok=True)
    (folder / "workspaces" / "coder").mkdir(parents=True, exist_ok=True)
    outside = folder.parent / "shared ws" / "writer"
    outside.mkdir(parents=True, exist_ok=True)
    url = f"sqlite+aiosqlite:///{database}" if database else "sqlite+aiosqlite:///fleet.db"
    path = folder / "fleet.toml"
    path.write_text(
        '[telegram]\ntoken = "${TELEGRAM_BOT_TOKEN}"\n'
        f'[database]\nurl = "{url}"\n'
        '[[people]]\ntelegram_id = 1\nname = "Ana"\nrole = "owner"\n'
        '[[agents]]\nid = "hub"\nhub = true\nworkspace = "workspaces/hub"\nmodel = "m"\n'
        '[[agents]]\nid = "coder"\nworkspace = "workspaces/coder"\nmodel = "m"\n'
        f'[[agents]]\nid = "writer"\nworkspace = "{outside}"\nmodel = "m"\n' + extra,
        encoding="utf-8",
    )
    return path


def loaded(path: Path) -> Config:
    checked = validate_config(read_config(path)[1], path, offline=True)
    assert checked.config is not None and not checked.problems, checked.problems
    return checked.config


def service_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_units_run_as_the_service_user_in_a_sandbox(tmp_path: Path) -> None:
    folder = tmp_path / "srv"
    folder.mkdir()
    database = tmp_path / "data" / "fleet.db"
    database.parent.mkdir()
    config = loaded(fleet_config(folder, database=database))
    made = units(config, user="ops", fleet_bin=Path("/opt/fleet/bin/fleet"))
    for name in ("fleet.service", "fleet-watchdog.service"):
        lines = service_lines(made[name])
        assert "User=ops" in lines
        assert all(option in lines for option in HARDENING)
        assert "ProtectHome=yes" in lines
        # The workspaces inside the config's folder are covered by it; the one elsewhere
        # (with a space in its path) is quoted.
        writer = tmp_path / "shared ws" / "writer"
        assert f'ReadWritePaths={database.parent} "{writer}" {folder}' in lines
    assert "User=" not in made["fleet-watchdog.timer"]


def test_an_install_under_home_keeps_home_readable(tmp_path: Path) -> None:
    config = loaded(fleet_config(tmp_path / "srv"))
    made = units(config, fleet_bin=Path("/home/ana/fleetbridge/.venv/bin/fleet"))
    lines = service_lines(made["fleet.service"])
    assert "User=fleet" in lines
    assert "ProtectHome=read-only" in lines


def test_fleet_systemd_needs_no_secrets_and_checks_the_user_name(tmp_path: Path) -> None:
    path = fleet_config(tmp_path / "srv")
    done = fleet("systemd", "--config", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "User=fleet\n" in done.stdout
    done = fleet("systemd", "--user", "ops", "--config", path, cwd=tmp_path)
    assert "User=ops\n" in done.stdout
    bad = fleet("systemd", "--user", "ops\nExecStartPre=/bin/sh", "--config", path, cwd=tmp_path)
    assert bad.returncode == 2 and "is not a user name like fleet" in bad.stderr
    path.write_text(path.read_text() + 'heartbeat = "400d"\n', encoding="utf-8")
    broken = fleet("systemd", "--config", path, cwd=tmp_path)
    assert broken.returncode == 2 and broken.stdout == ""
    assert "heartbeat" in broken.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    path = fleet_config(tmp_path / "srv")
    done = fleet("systemd", "--config", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    for part in done.stdout.split("# --- ")[1:]:
        name, _, text = part.partition("\n")
        (units_dir / name).write_text(text, encoding="utf-8")
    names = sorted(p.name for p in units_dir.iterdir())
    assert names == ["fleet-watchdog.service", "fleet-watchdog.timer", "fleet.service"]
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(units_dir / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # verify exits 0 even for a directive it ignores: any line about our files is a failure.
    about_ours = [line for line in verify.stderr.splitlines() if str(units_dir) in line]
    assert verify.returncode == 0 and about_ours == [], verify.stderr
