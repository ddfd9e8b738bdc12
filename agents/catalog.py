"""The names of the agents' tools and the authority each needs (None: any agent may use it).

Apart from agents.tools, which implements them and imports storage and aiogram, so that
validating `[[agents]] tools` and `authority` (every `fleet` command loads the config) costs
nothing. tests/test_config_check.py keeps this table and agents.tools.TOOLS in step.
"""

from __future__ import annotations

TOOL_AUTHORITY: dict[str, str | None] = {
    "comment": "comment",
    "set_status": None,
    "create_subtask": "subtask",
    "assign_task": "assign",
    "message_hub": None,
    "append_memory": None,
    "update_workstate": None,
    "remember": None,
    "request_approval": "request_approval",
    "request_deploy": "request_deploy",
    "raise_incident": None,
    "confirm_incident": "confirm_incident",
    "read_file": None,
    "write_file": None,
    "edit_file": None,
    "list_files": None,
    "run_command": None,
    "publish": "publish",
    "start_pipeline": None,
}


def tool_names() -> list[str]:
    """What `[[agents]] tools` may list."""
    return list(TOOL_AUTHORITY)


def authorities() -> list[str]:
    """What `[[agents]] authority` may list: the rights tools ask for."""
    return sorted({name for name in TOOL_AUTHORITY.values() if name is not None})
