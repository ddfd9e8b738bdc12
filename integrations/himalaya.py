"""The himalaya CLI as a mailbox backend (both CLI generations).

Only `asyncio.create_subprocess_exec` with argument lists: no shell, and no argument is taken
from message content (ids come from himalaya's own output and are checked to be plain ids;
the account, folder and query are from the config or constants). Every call has a timeout,
after which the process is killed.

v1: `envelope list -o json -a ACCOUNT -f FOLDER -s SIZE -p PAGE QUERY` prints a bare array of
`{id, flags: ["Seen"], subject, from: {name, addr}, to, date, has_attachment}`.
v2: `--json`, `-m/--mailbox`, `{"envelopes": [{id, message-id, flags: [{raw, iana}],
from: [{name, email}], date (RFC 3339)}]}` and `flag add --flag seen ID`.
v1 envelopes carry no Message-ID, so the dedup key is a hash of the account, folder and
himalaya's id of the message, with its sender, subject and date. Sender, subject and date
alone collapsed distinct emails (the same alert every minute: v1 prints dates to the minute;
every email without a date); reading each message's Message-ID header would cost one more
himalaya call per envelope per pass. The price: with v1, a message in two mailboxes is judged
in each (v2 and Graph give the real Message-ID and dedup across mailboxes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from integrations.mailbox import (
    AccountUnknown,
    AuthFailed,
    BackendNotFound,
    BadOutput,
    Envelope,
    MailboxError,
    MailboxTimeout,
)

UNSEEN_QUERY = ("not", "flag", "seen")
MAX_PAGES = 20  # per pass; the rest comes next pass
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_VERSION = re.compile(r"(?:himalaya\s+)?v?(\d+)\.\d+", re.IGNORECASE)
_AUTH = ("authenticat", "invalid credentials", "login failed", "password")


class Himalaya:
    def __init__(
        self,
        *,
        account: str,
        folder: str = "INBOX",
        binary: str = "himalaya",
        version: int | None = None,
        timeout: float = 60.0,
        page_size: int = 500,
        where: str = "himalaya.bin",
    ) -> None:
        self.account = account
        self.folder = folder
        self.binary = binary
        self.version = version
        self.timeout = timeout
        self.page_size = page_size
        self.where = where  # the config key naming the binary, for error messages

    async def close(self) -> None:
        return None

    async def detect_version(self) -> int:
        """The CLI generation: from the config, else from `himalaya --version`."""
        if self.version is None:
            out = await self._run("--version", json_out=False)
            found = _VERSION.search(out)
            if found is None:
                raise BadOutput(f"himalaya --version printed {_head(out)!r}; set himalaya.version")
            self.version = 1 if int(found.group(1)) <= 1 else 2
        return self.version

    async def list_new(self, cursor: str | None) -> tuple[list[Envelope], str | None]:
        version = await self.detect_version()
        envelopes: list[Envelope] = []
        for page in range(1, MAX_PAGES + 1):
            args = [
                "envelope",
                "list",
                *self._output(version),
                *self._where(version),
                "-s",
                str(self.page_size),
                "-p",
                str(page),
                *UNSEEN_QUERY,
            ]
            raw = _parse_json(await self._run(*args))
            scope = f"{self.account}\n{self.folder}"
            batch = _envelopes_v1(raw, scope) if version == 1 else _envelopes_v2(raw, scope)
            envelopes += [e for e in batch if not e.seen]
            if len(batch) < self.page_size:
                break
        envelopes.sort(key=lambda e: e.date or datetime.min.replace(tzinfo=UTC))
        dates = [e.date for e in envelopes if e.date is not None]
        newest = max(dates).isoformat() if dates else cursor
        return envelopes, newest

    async def read(self, backend_id: str) -> str:
        version = await self.detect_version()
        out = await self._run(
            "message", "read", *self._output(version), *self._where(version), "-p", _id(backend_id)
        )
        try:
            value: Any = json.loads(out)
        except ValueError:
            return out  # some builds print the text itself
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            for key in ("body", "text", "content"):
                if isinstance(value.get(key), str):
                    return str(value[key])
        raise BadOutput(f"himalaya message read printed unexpected JSON: {_head(out)!r}")

    async def mark_read(self, backend_id: str) -> None:
        version = await self.detect_version()
        if version == 1:
            await self._run("flag", "add", *self._where(1), _id(backend_id), "seen")
        else:
            await self._run("flag", "add", *self._where(2), "--flag", "seen", _id(backend_id))

    async def move(self, backend_id: str, folder: str) -> None:
        version = await self.detect_version()
        await self._run("message", "move", *self._where(version), folder, _id(backend_id))

    def _output(self, version: int) -> list[str]:
        return ["-o", "json"] if version == 1 else ["--json"]

    def _where(self, version: int) -> list[str]:
        return ["-a", self.account, "-f" if version == 1 else "-m", self.folder]

    async def _run(self, *args: str, json_out: bool = True) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise BackendNotFound(
                f"himalaya not found at {self.binary!r} (set {self.where} to its path)"
            ) from None
        except PermissionError:
            raise BackendNotFound(
                f"himalaya at {self.binary!r} is not executable (check {self.where})"
            ) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise MailboxTimeout(
                f"himalaya {args[0]} {args[1] if len(args) > 1 else ''} gave no answer in "
                f"{self.timeout:.0f} s for account {self.account!r}; the process was killed"
            ) from None
        if proc.returncode != 0:
            raise _error(self.account, proc.returncode, err.decode(errors="replace"))
        return out.decode(errors="replace")


def _error(account: str, code: int | None, stderr: str) -> MailboxError:
    text = stderr.strip()
    lower = text.lower()
    if "cannot find account" in lower or "account not found" in lower:
        return AccountUnknown(
            f"himalaya does not know account {account!r} (check its config.toml and "
            "mailboxes[].account)"
        )
    if any(word in lower for word in _AUTH):
        return AuthFailed(
            f"himalaya could not log in to account {account!r}: authentication failed "
            "(check the account's credentials)"
        )
    return MailboxError(f"himalaya exited {code}: {_head(text)}")


def _head(text: str) -> str:
    return text.strip()[:200]


def _id(backend_id: str) -> str:
    if not _ID.match(backend_id):
        raise MailboxError(f"refusing message id {backend_id[:40]!r}: not a himalaya id")
    return backend_id


def _parse_json(out: str) -> Any:
    try:
        return json.loads(out)
    except ValueError:
        raise BadOutput(f"himalaya printed something that is not JSON: {_head(out)!r}") from None


def _date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _synthetic_id(scope: str, backend_id: str, addr: str, subject: str, date: str) -> str:
    """A dedup key for an envelope without a Message-ID: unique to this mailbox's message
    (`scope` is account and folder, `backend_id` himalaya's id in it); sender, subject and
    date keep a reused id (after an expunge) from passing for the old message."""
    key = "\n".join((scope, backend_id, addr.lower(), subject, date))
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()[:48]}"


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _envelopes_v1(raw: Any, scope: str) -> list[Envelope]:
    if not isinstance(raw, list):
        raise BadOutput(f"himalaya v1 envelope list is not an array: {_head(json.dumps(raw))!r}")
    out: list[Envelope] = []
    for item in raw:
        if not isinstance(item, dict) or "id" not in item:
            raise BadOutput(f"himalaya v1 envelope without an id: {_head(json.dumps(item))!r}")
        sender = item.get("from") or {}
        if not isinstance(sender, dict):
            sender = {}
        addr, subject, date = _str(sender.get("addr")), _str(item.get("subject")), item.get("date")
        flags = [str(f).lower() for f in item.get("flags") or [] if isinstance(f, str)]
        out.append(
            Envelope(
                backend_id=_str(item["id"]),
                message_id=_synthetic_id(scope, _str(item["id"]), addr, subject, _str(date)),
                sender_addr=addr,
                sender_name=_str(sender.get("name")),
                subject=subject,
                date=_date(date),
                seen="seen" in flags,
            )
        )
    return out


def _envelopes_v2(raw: Any, scope: str) -> list[Envelope]:
    items = raw.get("envelopes") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise BadOutput(
            f'himalaya v2 envelope list has no "envelopes" array: {_head(json.dumps(raw))!r}'
        )
    out: list[Envelope] = []
    for item in items:
        if not isinstance(item, dict) or "id" not in item:
            raise BadOutput(f"himalaya v2 envelope without an id: {_head(json.dumps(item))!r}")
        senders = item.get("from") or []
        sender = senders[0] if isinstance(senders, list) and senders else {}
        if not isinstance(sender, dict):
            sender = {}
        addr, subject = _str(sender.get("email")), _str(item.get("subject"))
        date = item.get("date")
        flags = {
            _str(f.get("iana") or f.get("raw")).lower().lstrip("\\")
            for f in item.get("flags") or []
            if isinstance(f, dict)
        }
        message_id = _str(item.get("message-id")).strip().strip("<>")
        out.append(
            Envelope(
                backend_id=_str(item["id"]),
                message_id=message_id
                or _synthetic_id(scope, _str(item["id"]), addr, subject, _str(date)),
                sender_addr=addr,
                sender_name=_str(sender.get("name")),
                subject=subject,
                date=_date(date),
                importance=_str(item.get("importance") or "normal").lower(),
                seen="seen" in flags,
            )
        )
    return out
