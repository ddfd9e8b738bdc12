"""Where the model gateway's notices go: the `alerts` feed (through the outbox, each with its
dedup key, so that several nodes seeing the same thing post it once) and the hub's inbox."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

import bot.views.models as view
from agents.failover import Failover
from bot.config import Config
from storage import inbox, outbox
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)


class ModelAlerts:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db

    async def unpriced(self, session: AsyncSession, model: str) -> None:
        """A model without a price was called: once a day."""
        await self.alert(
            session, view.unpriced(model), f"price-unknown:{model}:{utcnow():%Y-%m-%d}"
        )

    async def key_rejected(self, failover: Failover, profile: str, status: int) -> None:
        """Mark `profile` rejected on every node until its key changes (a new config); one
        alert per key."""
        log.error("Anthropic rejected the key for profile %s (%d)", profile, status)
        async with self.db.session() as session:
            key = await failover.reject(session, profile)
            await self.alert(
                session, view.key_rejected(profile, status), f"key-rejected:{profile}:{key}"
            )

    async def tell_hub(self, session: AsyncSession, agent_id: str, body: str, key: str) -> None:
        """An oversight notice for the hub, which routes work and must stop sending it to a
        paused agent. None when the paused agent is the hub itself: it reads nothing now."""
        hub = self.config.hub
        if hub is not None and hub.id != agent_id:
            await inbox.oversight(session, hub.id, body, key)

    async def alert(
        self,
        session: AsyncSession,
        text: str,
        key: str,
        *,
        buttons: list[list[outbox.Button]] | None = None,
    ) -> None:
        feed = self.config.feed("alerts")
        if feed is None:
            log.warning("no alerts feed configured; not posted: %s", text)
            return
        await outbox.enqueue(
            session,
            outbox.Destination(feed.chat_id, feed.topic, "alerts"),
            text,
            buttons=buttons,
            dedup_key=key,
        )
