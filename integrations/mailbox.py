"""One interface over the mailbox backends (himalaya CLI, Microsoft Graph) and their errors.

A backend lists the unread messages of its folder (newer than a cursor where it can filter),
reads one message without marking it seen, marks one read, and moves one to a folder. Every
failure is a `MailboxError` whose message says what is wrong and what to check; the rest of
the code never sees a subprocess or HTTP error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class MailboxError(Exception):
    """A mailbox could not be read or changed. The message is safe to log and show."""


class BackendNotFound(MailboxError):
    """The backend program or service does not exist where the config says."""


class AccountUnknown(MailboxError):
    """The backend does not know the configured account."""


class AuthFailed(MailboxError):
    """The backend rejected the credentials."""


class BadOutput(MailboxError):
    """The backend answered something that is not what it documents."""


class MailboxTimeout(MailboxError):
    """The backend did not answer in time (the process was killed)."""


@dataclass(frozen=True)
class Envelope:
    """The headers triage rules need. `message_id` is the dedup key across mailboxes."""

    backend_id: str
    message_id: str
    sender_addr: str
    sender_name: str
    subject: str
    date: datetime | None = None
    importance: str = "normal"  # low | normal | high
    seen: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def sender(self) -> str:
        return f"{self.sender_name} <{self.sender_addr}>" if self.sender_name else self.sender_addr


class Mailbox(Protocol):
    async def list_new(self, cursor: str | None) -> tuple[list[Envelope], str | None]:
        """Unread envelopes, oldest first, and the cursor to pass next time."""
        ...

    async def read(self, backend_id: str) -> str:
        """The message's text body, without marking it seen."""
        ...

    async def mark_read(self, backend_id: str) -> None: ...

    async def move(self, backend_id: str, folder: str) -> None: ...

    async def close(self) -> None: ...
