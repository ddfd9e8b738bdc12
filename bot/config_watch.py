"""Config safety: a last-known-good copy, change detection while running, and rollback.

On start the validated config file is copied to `<config>.last-good` beside it, with its
SHA-256 in `<config>.last-good.sha256` (beside the config, not in the data dir, so that
`fleet config rollback --config X` finds it with nothing else configured). The
`config-watch` job polls the file's mtime and size; a file that changed and then held still
for one poll is hashed and validated before anything uses it: a bad edit keeps the running
config and alerts with every problem; a valid edit is reported with the sections it changes.
Nothing is applied live: every change takes effect at the next restart, and the message says
so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from bot.config import Config, ConfigError, load_config
from bot.views.text import esc
from storage import inbox, outbox
from storage.db import Database

log = logging.getLogger(__name__)

MAX_LISTED = 20


def last_good_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".last-good")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_private(target: Path, data: bytes, mode: int) -> None:
    """Write `data` to `target` atomically with `mode`: the copies hold what the config holds
    (secrets, often), so they get its permissions, not the umask's default 0644."""
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the tmp may exist from a crash, with other permissions
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def _mode(path: Path) -> int:
    """The config file's permission bits, or 0600 if it cannot be read."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o600


def save_last_good(config: Config) -> str:
    """Keep the bytes `load_config` validated as the last-known-good; returns their hash.
    Not the file read again: an edit landing since would become "good" unvalidated."""
    data = config.source
    if data is None:
        raise OSError(f"{config.path}: the config was not loaded from a file")
    target = last_good_path(config.path)
    mode = _mode(config.path)
    _write_private(target, data, mode)
    value = digest(data)
    _write_private(target.with_name(target.name + ".sha256"), f"{value}\n".encode(), mode)
    return value


def rollback(config_path: Path) -> tuple[bool, str]:
    """Restore the last-known-good file over `config_path` (the replaced file is kept as
    `<config>.rejected`). Returns whether it worked and what to tell the operator."""
    good = last_good_path(config_path)
    hash_file = good.with_name(good.name + ".sha256")
    if not good.is_file() or not hash_file.is_file():
        return False, f"no last-known-good copy at {good} (it is written when `fleet run` starts)"
    data = good.read_bytes()
    if digest(data) != hash_file.read_text(encoding="utf-8").strip():
        return False, f"{good} does not match its hash in {hash_file}; not restored"
    if config_path.is_file():
        if config_path.read_bytes() == data:
            return True, f"{config_path} is the last-known-good already"
        shutil.copy2(config_path, config_path.with_name(config_path.name + ".rejected"))
    # The copy was written with the config's mode then; keep the stricter of the two now.
    mode = _mode(good) & _mode(config_path) if config_path.is_file() else _mode(good)
    _write_private(config_path, data, mode)
    return True, f"restored {config_path} from {good}; restart `fleet run` to use it"


def changed_sections(old: Config, new: Config) -> list[str]:
    """Top-level sections that differ (secret values compared, never shown)."""
    return [
        name
        for name in type(old).model_fields
        if name != "path" and getattr(old, name) != getattr(new, name)
    ]


@dataclass
class _Seen:
    stat: tuple[int, int] | None
    digest: str


class ConfigWatch:
    """The `config-watch` job."""

    def __init__(self, config: Config, db: Database, loaded_digest: str) -> None:
        self.config = config
        self.db = db
        self.running_digest = loaded_digest
        # No stat yet: the first polls hash the file once, so an edit that landed after
        # `loaded_digest` was validated (during startup) is judged, not taken as seen.
        self.seen = _Seen(None, loaded_digest)
        self.settling: tuple[int, int] | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.config.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    async def run(self) -> None:
        stat = self._stat()
        if stat == self.seen.stat:
            self.settling = None
            return
        if stat != self.settling:
            # Editors and scripts write in steps (truncate, then write): judge the file only
            # once it has held still for one poll, or a half-written file would be "invalid".
            self.settling = stat
            return
        self.settling = None
        path = self.config.path
        try:
            data = path.read_bytes()
        except OSError as err:
            self.seen = _Seen(stat, "")
            await self._report(
                f"⚠️ Config file {esc(path)} cannot be read ({esc(err.strerror)}); "
                "the running config stays in force.",
                key=f"config-unreadable:{stat}",
            )
            return
        value = digest(data)
        self.seen = _Seen(stat, value)
        if value == self.running_digest:
            return
        try:
            new = load_config(path)
        except ConfigError as err:
            problems = err.problems[:MAX_LISTED]
            more = len(err.problems) - len(problems)
            log.error("config %s changed and is invalid; keeping the running config", path)
            await self._report(
                f"⚠️ Config file {esc(path)} changed but is invalid; the running config stays "
                "in force. Fix it or run <code>fleet config rollback</code>:\n"
                + "\n".join(f"• {esc(p)}" for p in problems)
                + (f"\n… and {more} more" if more > 0 else ""),
                key=f"config-invalid:{value[:16]}",
            )
            return
        sections = changed_sections(self.config, new)
        what = ", ".join(sections) if sections else "nothing that matters (formatting only)"
        log.info("config %s changed (valid): %s", path, what)
        await self._report(
            f"📝 Config file {esc(path)} changed and is valid. Changed: {esc(what)}. "
            "Nothing is applied live: restart <code>fleet run</code> to use it.",
            key=f"config-valid:{value[:16]}",
        )

    async def _report(self, text: str, *, key: str) -> None:
        feed = self.config.feed("alerts")
        hub = self.config.hub
        async with self.db.session() as session:
            if feed is not None:
                await outbox.enqueue(
                    session,
                    outbox.Destination(feed.chat_id, feed.topic, "alerts"),
                    text,
                    dedup_key=key,
                )
            if hub is not None:
                await inbox.oversight(
                    session, hub.id, f"Config file changed: {_plain(text)}", f"oversight:{key}"
                )


def _plain(html_text: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", html_text))
