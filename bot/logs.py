"""Logging: one format, UTC times, and secrets replaced before anything is written."""

from __future__ import annotations

import logging
import sys
import time

from bot.redact import Redactor


class RedactingFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]

    def __init__(self, secrets: list[str]) -> None:
        super().__init__("%(asctime)sZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
        self.redactor = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(super().format(record))

    def redact(self, text: str) -> str:
        return self.redactor.redact(text)


class QuietPollingErrors(logging.Filter):
    """Drops aiogram's per-retry polling error lines; bot.polling.PollMonitor logs those once
    a minute instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Failed to fetch updates", "Sleep for "))


class FirstPollingLines(logging.Filter):
    """Lets aiogram's "Start polling", "Run polling for bot ..." and "Polling stopped" through
    once each (or always, with debug logging). bot.polling restarts polling after a stall or
    a failure and says so itself; aiogram would repeat all three on every restart."""

    ONCE = ("Start polling", "Run polling for bot", "Polling stopped")

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        prefix = next((p for p in self.ONCE if message.startswith(p)), None)
        if prefix is None or logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        if prefix in self.seen:
            return False
        self.seen.add(prefix)
        return True


def configure_logging(secrets: list[str], level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    dispatcher = logging.getLogger("aiogram.dispatcher")
    for old in [
        f for f in dispatcher.filters if isinstance(f, QuietPollingErrors | FirstPollingLines)
    ]:
        dispatcher.removeFilter(old)  # configured again (tests): not twice
    dispatcher.addFilter(QuietPollingErrors())
    dispatcher.addFilter(FirstPollingLines())
    # One line per handled update is noise at fleet scale; errors still come through.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
