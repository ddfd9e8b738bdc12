"""The one redactor: every configured secret, wherever it would leave the process.

A secret is every value the config read through `${VAR}` or a `<key>_file` key, and the
fleet's own tokens and keys (`Config.secret_values`). The same `Redactor` is applied to log
lines (bot.logs), to every text written to the database (storage.db.Database.redact_with: the
outbox, incidents, runs, comments, so chats too), and to the output of every command the fleet
runs (integrations.process). No aiogram here: storage and integrations use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_LENGTH = 4  # shorter values would mangle ordinary text; the config refuses nothing for it
# Bot tokens look like 123456789:AA...; redact any, even one the config does not know.
_TOKEN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b")


class Redactor:
    def __init__(self, secrets: Iterable[str] = (), *, mask: str = MASK) -> None:
        self.mask = mask
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact `secrets` (a reloaded config's); the old ones stay secret."""
        known = {*self.secrets, *(s for s in secrets if len(s) >= MIN_LENGTH)}
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted(known, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, self.mask)
        if ":" in text:
            text = _TOKEN.sub(self.mask, text)
        return text
