"""`fleet init`: a commented config and workspaces for a hub and two specialists, copied from
the templates shipped in the package (`bot/templates`). The repository's config.example.toml
and workspaces/ are copies of them to run from a checkout (tests/test_config_check.py keeps
them in step)."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

# What a new workspace starts with; WORKSTATE.md and memory/ are the agent's to write.
TEMPLATE_FILES = ("SOUL.md", "AGENTS.md", "USER.md", "MEMORY.md", "GUARDRAILS.md", "HEARTBEAT.md")


def planned_files(target: Path) -> dict[Path, str]:
    templates = resources.files("bot").joinpath("templates")
    files = {target / "fleet.toml": templates.joinpath("fleet.toml").read_text(encoding="utf-8")}
    agents: list[Traversable] = sorted(
        (e for e in templates.joinpath("workspaces").iterdir() if e.is_dir()),
        key=lambda e: e.name,
    )
    for agent in agents:
        for name in TEMPLATE_FILES:
            template = agent.joinpath(name)
            if template.is_file():
                text = template.read_text(encoding="utf-8")
                files[target / "workspaces" / agent.name / name] = text
    return files


def init(target: Path) -> list[Path]:
    """Write the files, or none of them if any already exists. Returns what was written."""
    files = planned_files(target)
    existing = [path for path in files if path.exists()]
    if existing:
        raise FileExistsError(
            f"refusing to overwrite {len(existing)} of the {len(files)} files `fleet init` "
            f"writes; nothing was written. Choose an empty folder, or move these away:\n"
            + "\n".join(f"  {path}" for path in existing)
        )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
