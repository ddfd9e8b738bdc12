"""`fleet systemd`: unit files for the bot and for the watchdog timer, run as a service user
in a sandbox that may write only where the fleet writes."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from bot.config import Config

ENV_FILE = "/etc/fleetbridge/env"
# Under these, ProtectHome=yes would hide the install itself; read-only keeps it visible.
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))


def writable_paths(config: Config) -> list[Path]:
    """Where the fleet writes: the config's folder (last-known-good copies, the poller lock),
    the SQLite database's folder, every agent's workspace and the shared [[folders]]; a path
    inside another listed one is left out."""
    base = config.path.resolve().parent
    paths = [base]
    database = config.sqlite_path()
    if database is not None:
        paths.append((base / database).resolve().parent)  # relative: to the config
    for agent in config.agents:
        paths.append((base / agent.workspace).resolve())
    # getattr: [[folders]] comes with the agents' file tools; a config without it has none.
    for folder in getattr(config, "folders", ()):
        paths.append((base / folder.path).resolve())
    unique = sorted(set(paths))
    return [p for p in unique if not any(p != q and p.is_relative_to(q) for q in unique)]


def _quoted(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def units(config: Config, *, user: str = "fleet", fleet_bin: Path | None = None) -> dict[str, str]:
    """fleet.service (the bot), fleet-watchdog.service and fleet-watchdog.timer."""
    config_path = config.path.resolve()
    fleet = fleet_bin or Path(sys.executable).parent / "fleet"
    workdir = config_path.parent
    command = f"{shlex.quote(str(fleet))} %s --config {shlex.quote(str(config_path))}"
    writable = writable_paths(config)
    in_home = any(p.is_relative_to(h) for p in [fleet, *writable] for h in HOME_DIRS)
    sandbox = f"""User={user}
# The sandbox: no privilege gains (no sudo, no setuid), the system and home folders read-only
# or hidden, a private /tmp, and writes only where the fleet writes. Checks, recoveries and
# deploys run inside it too: add the folders they write to ReadWritePaths.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={"read-only" if in_home else "yes"}
PrivateTmp=yes
ReadWritePaths={" ".join(_quoted(p) for p in writable)}"""
    return {
        "fleet.service": f"""[Unit]
Description=fleetbridge: AI agent fleet controlled from Telegram
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{sandbox}
WorkingDirectory={workdir}
# Secrets the config references: TELEGRAM_BOT_TOKEN=..., ANTHROPIC_API_KEY=... (chmod 600).
EnvironmentFile=-{ENV_FILE}
ExecStart={command % "run"}
Restart=on-failure
RestartSec=5
# 2 (config), 3 (another poller) and 4 (token rejected) do not fix themselves by restarting.
RestartPreventExitStatus=2 3 4
# Stop the bot and every command it started (checks, recoveries, deploys) together.
KillMode=control-group
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
""",
        "fleet-watchdog.service": f"""[Unit]
Description=fleetbridge watchdog: checks fleet.service from outside and alerts if it is down

[Service]
Type=oneshot
{sandbox}
WorkingDirectory={workdir}
EnvironmentFile=-{ENV_FILE}
ExecStart={command % "watchdog --once"}
# Exit 1 means problems were found (and posted); that is not a failure of this unit.
SuccessExitStatus=1
""",
        "fleet-watchdog.timer": """[Unit]
Description=Run the fleetbridge watchdog every 5 minutes

[Timer]
OnBootSec=5min
OnUnitActiveSec=5min

[Install]
WantedBy=timers.target
""",
    }


def render(config: Config, *, user: str = "fleet") -> str:
    return "".join(f"# --- {name}\n{text}\n" for name, text in units(config, user=user).items())
