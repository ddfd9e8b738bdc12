"""Test helpers for mailboxes: the fake `himalaya` executable's state, and generated mail."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BIN = Path(__file__).parent / "bin"
HIMALAYA = BIN / "himalaya"
START = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


def message(
    n: int,
    *,
    sender: str = "someone@example.org",
    subject: str | None = None,
    body: str = "Hello.",
    name: str | None = None,
    seen: bool = False,
) -> dict[str, Any]:
    return {
        "id": str(n),
        "message_id": f"<m{n}@mail.example.org>",
        "from_name": name,
        "from_addr": sender,
        "subject": subject if subject is not None else f"Message {n}",
        "date": (START + timedelta(seconds=n)).isoformat(),
        "body": body,
        "seen": seen,
    }


class HimalayaState:
    """The fake himalaya's accounts and messages, in a JSON file it reads and writes."""

    def __init__(self, folder: Path, *, version: int = 1) -> None:
        self.path = folder / "himalaya-state.json"
        self.data: dict[str, Any] = {"version": version, "accounts": {}}

    def account(
        self,
        name: str,
        messages: list[dict[str, Any]],
        mode: str = "ok",
        version: int | None = None,
    ) -> None:
        """Add or replace an account; `version` makes it answer as that CLI generation."""
        account: dict[str, Any] = {"mode": mode, "folders": {"INBOX": messages}}
        if version is not None:
            account["version"] = version
        self.data["accounts"][name] = account
        self.save()

    def set_mode(self, name: str, mode: str) -> None:
        self.load()
        self.data["accounts"][name]["mode"] = mode
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data), encoding="utf-8")

    def load(self) -> dict[str, Any]:
        self.data = json.loads(self.path.read_text(encoding="utf-8"))
        return self.data

    def messages(self, account: str, folder: str = "INBOX") -> list[dict[str, Any]]:
        return list(self.load()["accounts"][account]["folders"].get(folder, []))

    def calls(self) -> list[list[str]]:
        calls = self.path.with_name(self.path.name + ".calls")
        if not calls.exists():
            return []
        return [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()]

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment with the fake first on PATH and pointing at this state."""
        env = dict(os.environ if base is None else base)
        # The fake's `#!/usr/bin/env python3` then finds this interpreter, not a slower shim.
        python = Path(sys.executable).parent
        env["PATH"] = os.pathsep.join([str(BIN), str(python), env.get("PATH", "")])
        env["FAKE_HIMALAYA_STATE"] = str(self.path)
        return env
