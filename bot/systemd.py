"""`fleet systemd`: unit files for the bot and for the watchdog timer."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

ENV_FILE = "/etc/fleetbridge/env"


def units(config_path: Path, fleet_bin: Path | None = None) -> dict[str, str]:
    """fleet.service (the bot), fleet-watchdog.service and fleet-watchdog.timer."""
    config = config_path.resolve()
    fleet = fleet_bin or Path(sys.executable).parent / "fleet"
    workdir = config.parent
    command = f"{shlex.quote(str(fleet))} %s --config {shlex.quote(str(config))}"
    return {
        "fleet.service": f"""[Unit]
Description=fleetbridge: AI agent fleet controlled from Telegram
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
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


def render(config_path: Path) -> str:
    return "".join(f"# --- {name}\n{text}\n" for name, text in units(config_path).items())
