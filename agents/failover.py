"""Which (model, profile) pairs a model call may try, in what order, and with which client.

The pairs are the agent's model on each of its key profiles, then each fallback model the
same way. A 429 cools its pair down for the `retry-after` the API asked for; a 401/403 marks
the profile rejected until its key changes. Both are rows of `profile_state`, shared by every
node (`refresh` reads them before a call chooses its pair), and kept here too: the latest
known state, so that a node does not call a pair another node has seen limited.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from agents.model_errors import GatewayError
from bot.config import AgentConfig, Config
from storage import model_state
from storage.db import Database
from storage.models import utcnow

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger(__name__)

DEFAULT_COOLDOWN = timedelta(seconds=30)
CALL_TIMEOUT = 120.0  # seconds one request may take before it counts as unreachable

Pair = tuple[str, str]  # (model, profile); for a coding CLI ("cli:<id>", "process")


class Failover:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self._clients: dict[str, anthropic.AsyncAnthropic] = {}
        self._cooldown: dict[Pair, datetime] = {}
        self._rejected: dict[str, str] = {}  # profile -> digest of the key Anthropic rejected
        self._unshared: dict[Pair, datetime] = {}  # cooldowns not yet written

    def pairs(self, agent: AgentConfig) -> list[Pair]:
        """(model, profile) in the order tried: the model on each profile, then fallbacks."""
        return [(model, p) for model in (agent.model, *agent.fallbacks) for p in agent.profiles]

    def client(self, profile: str) -> anthropic.AsyncAnthropic:
        # Imported at the first model call: the SDK costs ~40 MB, and a fleet whose agents
        # are all idle never needs it.
        import anthropic

        client = self._clients.get(profile)
        if client is None:
            configured = self.config.anthropic.profiles.get(profile)
            key = configured.api_key.get_secret_value() if configured else None
            try:
                client = anthropic.AsyncAnthropic(
                    api_key=key,
                    base_url=self.config.anthropic.base_url or None,
                    max_retries=0,
                    timeout=CALL_TIMEOUT,
                )
            except anthropic.AnthropicError as err:
                raise GatewayError(no_key(profile)) from err
            if not client.api_key and not client.auth_token:
                # The SDK would raise a TypeError at the first request instead.
                raise GatewayError(no_key(profile))
            self._clients[profile] = client
        return client

    @property
    def started(self) -> bool:
        """Whether any client was made (a model was called, or tried)."""
        return bool(self._clients)

    async def close(self) -> None:
        try:
            await self.shared()
        finally:
            for client in self._clients.values():
                await client.close()

    # -- the shared state ---------------------------------------------------------------------

    async def refresh(self, session: AsyncSession, profiles: Iterable[str]) -> None:
        """Learn what every node recorded about `profiles`: cooldowns and rejections."""
        for row in await model_state.read(session, set(profiles)):
            if row.model == model_state.PROFILE:
                if row.rejected_key is not None:
                    self._rejected[row.profile] = row.rejected_key
            elif row.cooling_until is not None:
                self.cool_down((row.model, row.profile), row.cooling_until)

    def key_digest(self, profile: str) -> str:
        configured = self.config.anthropic.profiles.get(profile)
        key = configured.api_key.get_secret_value() if configured else ""
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def is_rejected(self, profile: str) -> bool:
        """Anthropic rejected this profile's key (401/403), and the key has not changed."""
        return self._rejected.get(profile) == self.key_digest(profile)

    async def reject(self, session: AsyncSession, profile: str) -> str:
        """Mark `profile` rejected for every node until its key changes; the key's digest."""
        key = self.key_digest(profile)
        self._rejected[profile] = key
        await model_state.reject(session, profile, key)
        return key

    def cooling_until(self, pair: Pair) -> datetime | None:
        """When the pair stops cooling down; None if it is not."""
        until = self._cooldown.get(pair)
        return until if until is not None and until > utcnow() else None

    def cool_down(self, pair: Pair, until: datetime) -> None:
        """Cool `pair` down in this process (a later end wins)."""
        known = self._cooldown.get(pair)
        if known is None or until > known:
            self._cooldown[pair] = until

    def cool_down_everywhere(self, pair: Pair, until: datetime) -> None:
        """Cool `pair` down on every node. The row is written when the call ends (see
        `shared`): the call moves on to the next pair at once, as with one node."""
        self.cool_down(pair, until)
        self._unshared[pair] = until

    async def shared(self) -> None:
        """Write the cooldowns this process learnt for every node to see, in one transaction.
        A failure is logged, not raised: this node still respects them."""
        pending, self._unshared = self._unshared, {}
        if not pending:
            return
        try:
            async with self.db.session() as session:
                for (model, profile), until in pending.items():
                    await model_state.cool_down(session, model, profile, until)
        except Exception:
            log.exception("cooldowns of %d pair(s) could not be shared", len(pending))

    def all_cooling(self, agent: AgentConfig) -> datetime | None:
        """When the first pair stops cooling down, if every pair not rejected is cooling
        down (else None: some pair may be called now)."""
        cooling = [
            self.cooling_until(pair) for pair in self.pairs(agent) if not self.is_rejected(pair[1])
        ]
        if not cooling or any(until is None for until in cooling):
            return None
        return min(until for until in cooling if until is not None)


def no_key(profile: str) -> str:
    return (
        f"no API key for profile {profile}: set ANTHROPIC_API_KEY or "
        f"[anthropic.profiles.{profile}]"
    )


def retry_after(err: anthropic.APIStatusError) -> timedelta:
    header = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        seconds = None
    return timedelta(seconds=seconds) if seconds and seconds > 0 else DEFAULT_COOLDOWN
