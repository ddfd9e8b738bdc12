"""The publish worker: carries approved publications to their targets, once, and verifies them.

Telegram targets go through the outbox (the publication's outbox row, dedup key
`publication:<id>`, is queued in the transaction that marks it `sending`, so it is sent
once even across a crash; the sender refuses to resend such a row it may have sent already);
the publication is `published` when the Telegram message id came back. A webhook is POSTed
with the publication id as its idempotency key and, when the target has a `verify_url`, is
`published` only if a GET of it shows the text. A folder target gets the file, `published`
when it is there with the text's sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.config import Config, PublishTarget
from storage import nodes, outbox, publications
from storage.db import Database
from storage.models import Publication
from storage.statuses import OutboxStatus, PublicationStatus

log = logging.getLogger(__name__)

MAX_BODY = 1_000_000  # bytes of a verify_url page read
TIMEOUT = 20.0


@dataclass(frozen=True)
class Result:
    status: str
    reason: str = ""
    message_id: int | None = None
    location: str | None = None


def guards(target: PublishTarget) -> publications.Guards:
    return publications.Guards(
        min_gap=target.min_gap,
        max_per_day=target.max_per_day,
        dedup_threshold=target.dedup_threshold,
        min_chars=target.min_chars,
        max_chars=target.max_chars,
        banned=tuple(target.banned),
        required=tuple(target.required),
        approve=target.approve,
    )


def destination(config: Config, target: PublishTarget) -> outbox.Destination | None:
    if target.feed is not None:
        feed = config.feed(target.feed)
        return None if feed is None else outbox.Destination(feed.chat_id, feed.topic, target.id)
    if target.chat_id is None:
        return None
    return outbox.Destination(target.chat_id, target.topic, target.id)


def shows(body: str, text: str) -> bool:
    """Whether a page shows the text: its words, in order, whatever the markup around."""
    wanted = " ".join(publications.normalise(text))
    return bool(wanted) and wanted in " ".join(publications.normalise(body))


class PublishWorker:
    """Publishes approved publications until stopped. One per process; `recover` first."""

    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        idle_poll: float = 1.0,
        placement: nodes.Placement | None = None,
    ) -> None:
        """`placement`: this node; at start it settles only the publications it claimed
        (another node's webhook call may be in flight)."""
        self.config = config
        self.db = db
        self.idle_poll = idle_poll
        self.node, self.recovers = nodes.Placement.claims(placement)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def _alerts(self) -> outbox.Destination | None:
        feed = self.config.feed("alerts")
        return None if feed is None else outbox.Destination(feed.chat_id, feed.topic, "alerts")

    def _target(self, publication: Publication) -> PublishTarget | None:
        return next((t for t in self.config.publish_targets if t.id == publication.target), None)

    async def recover(self) -> None:
        """Webhook calls found `sending` died with the process between the call and its
        record: `unknown`, never re-sent. A folder write is repeatable (same file, same
        text): it is done again. Telegram rows are the outbox's (see `settle_telegram`)."""
        async with self.db.session() as session:
            stuck = await publications.publishing(session, node=self.recovers)
        for publication in stuck:
            if publication.kind == "webhook":
                await self._finish(
                    publication,
                    Result(
                        PublicationStatus.UNKNOWN,
                        "the fleet stopped between the webhook call and recording its answer, "
                        "so it may or may not have been published.",
                    ),
                )
                log.warning("publication #%d was cut off by a restart: unknown", publication.id)
            elif publication.kind == "folder":
                await self.carry_out(publication)

    async def run(self, stop: asyncio.Event) -> None:
        await self.recover()
        while not stop.is_set():
            self._wake.clear()
            try:
                while await self.publish_next():
                    pass
                await self.settle_telegram()
            except Exception:  # the worker must outlive a database or network hiccup
                log.exception("publish pass failed; retrying in %.0f s", self.idle_poll)
            waiters = {
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._wake.wait()),
            }
            await asyncio.wait(
                waiters, timeout=self.idle_poll, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in waiters:
                waiter.cancel()

    async def publish_next(self) -> bool:
        """Claim the oldest approved publication and carry it out (a telegram one: queue its
        outbox row); False when there was none."""
        async with self.db.claim() as session:
            publication = await publications.claim_next(session, node=self.node)
            if publication is None:
                return False
            target = self._target(publication)
            to = None
            if publication.kind == "telegram" and target is not None:
                to = destination(self.config, target)
            if to is not None:
                # Queued in the claiming transaction: the row exists once, whatever crashes.
                await publications.set_chat(session, publication.id, to.chat_id)
                await outbox.enqueue(
                    session, to, publication.text, dedup_key=f"publication:{publication.id}"
                )
                return True  # the outbox sends it; settle_telegram sees the outcome
        if publication.kind == "telegram":
            await self._finish(
                publication, Result(PublicationStatus.FAILED, "its target has no chat now")
            )
        else:
            await self.carry_out(publication)
        return True

    async def settle_telegram(self) -> None:
        """Telegram publications whose outbox row was settled: sent with a message id
        (`published`), refused for having been in flight at a crash (`unknown`), or failed."""
        async with self.db.session() as session:
            waiting = await publications.publishing(session, "telegram")
            rows = {p.id: await outbox.latest(session, f"publication:{p.id}") for p in waiting}
        for publication in waiting:
            row = rows[publication.id]
            if row is None or row.status == OutboxStatus.PENDING:
                continue
            if row.status == OutboxStatus.SENT and row.sent_message_ids:
                result = Result(
                    PublicationStatus.PUBLISHED, message_id=int(row.sent_message_ids[-1])
                )
            elif row.status == OutboxStatus.SENT:
                result = Result(PublicationStatus.UNVERIFIED, "Telegram returned no message id")
            elif row.last_error == outbox.IN_FLIGHT_ERROR:
                result = Result(
                    PublicationStatus.UNKNOWN,
                    "Telegram gave no answer to the post (the fleet stopped, or the call timed "
                    "out), so it may or may not be in the channel.",
                )
            else:
                result = Result(PublicationStatus.FAILED, f"Telegram refused it: {row.last_error}")
            await self._finish(publication, result)

    async def carry_out(self, publication: Publication) -> None:
        target = self._target(publication)
        if target is None:
            result = Result(
                PublicationStatus.FAILED, f"no publish target {publication.target} now"
            )
        elif target.kind == "webhook":
            result = await self._webhook(target, publication)
        else:
            result = self._folder(target, publication)
        await self._finish(publication, result)

    async def _finish(self, publication: Publication, result: Result) -> None:
        async with self.db.claim() as session:
            await publications.finish(
                session,
                publication.id,
                result.status,
                reason=result.reason,
                message_id=result.message_id,
                location=result.location,
                alert_to=self._alerts(),
            )
        log.info("publication #%d to %s: %s", publication.id, publication.target, result.status)

    def _folder(self, target: PublishTarget, publication: Publication) -> Result:
        assert target.path is not None
        folder = target.path
        if not folder.is_absolute():
            folder = self.config.path.parent / folder
        path = folder / f"{publication.id}.md"
        data = publication.text.encode()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            partial.write_bytes(data)
            os.replace(partial, path)
            written = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as err:
            return Result(PublicationStatus.FAILED, f"cannot write {path}: {err.strerror}")
        if written != publication.sha256:
            return Result(PublicationStatus.UNVERIFIED, f"{path} does not hold the text's sha256")
        return Result(PublicationStatus.PUBLISHED, location=str(path))

    async def _webhook(self, target: PublishTarget, publication: Publication) -> Result:
        assert target.url is not None
        key = f"publication:{publication.id}"
        body = {
            "id": publication.id,
            "idempotency_key": key,
            "target": target.id,
            "text": publication.text,
            "source": publication.source,
        }
        headers = {**target.headers, "Idempotency-Key": key}
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            try:
                async with client.post(target.url, json=body, headers=headers) as response:
                    status = response.status
            except aiohttp.ClientConnectorError as err:
                return Result(
                    PublicationStatus.FAILED, f"cannot reach the webhook: {err.strerror}"
                )
            except (TimeoutError, aiohttp.ClientError) as err:
                # The request may have arrived: not safe to call it failed and try again.
                return Result(
                    PublicationStatus.UNKNOWN,
                    f"the webhook call broke off ({type(err).__name__}); it may have arrived.",
                )
            if not 200 <= status < 300:
                return Result(PublicationStatus.FAILED, f"the webhook answered {status}")
            if target.verify_url is None:
                return Result(PublicationStatus.PUBLISHED, location=target.url)
            try:
                async with client.get(target.verify_url) as response:
                    page = (await response.content.read(MAX_BODY)).decode("utf-8", "replace")
                    seen = response.status
            except (TimeoutError, aiohttp.ClientError) as err:
                return Result(
                    PublicationStatus.UNVERIFIED,
                    f"the webhook answered {status}, but {target.verify_url} could not be read "
                    f"({type(err).__name__}).",
                )
        if seen != 200 or not shows(page, publication.text):
            return Result(
                PublicationStatus.UNVERIFIED,
                f"the webhook answered {status}, but {target.verify_url} (status {seen}) does "
                "not show the text.",
            )
        return Result(PublicationStatus.PUBLISHED, location=target.verify_url)
