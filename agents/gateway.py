"""The one way to call a model: key profiles, a failover chain, cooldowns, monthly budgets, and
a usage row with its cost for every call.

The SDK's own retries are off (`max_retries=0`): it would retry 429 and 5xx on the same key and
model, while the gateway moves on to the next (model, profile) pair at once. Errors are decided
on `APIStatusError.status_code`, since exception classes differ between SDK versions: 429 cools
the pair down; 5xx and network errors move on; 401/403 mark the profile rejected until its key
changes (one alert per key; the key is not called again); 400/404 end the call as a
configuration error (`GatewayError.permanent`). Error texts are redacted (bot.redact): a proxy
may repeat the key in its message. Cooldowns and rejections are shared by every node through
the database (agents.failover).

Budgets are checked before each call, in the database, under a lock (agents.budget): the call
reserves its worst-case cost, and the real cost replaces the reservation when its usage row is
written (agents.usage_writer), so calls made at once on several nodes cannot pass a budget
together. At 80% of the agent's (or the fleet's) month the `alerts` feed is warned once; at
100% no call is made, the agent is paused, and `alerts` gets a stop with a "Raise budget"
button for the owner. One call can cross the line, never two. The 80% warning is also checked
as each call's usage is recorded, so a run whose last call crosses it is warned about at once.

The budget's warnings and stops are agents.budget's (`BudgetStops`); the failover state is
agents.failover's; usage rows are written by agents.usage_writer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from agents.budget import BudgetStops, Ledger, Standing
from agents.failover import CALL_TIMEOUT, Failover, retry_after
from agents.model_alerts import ModelAlerts
from agents.model_errors import BudgetExceeded, GatewayError
from agents.prices import cache_writes, cost_of, input_bound, price_of, worst_case
from agents.usage_writer import UsageWriter, usage_row
from bot.config import AgentConfig, Config
from bot.redact import Redactor
from storage import usage as spend
from storage.db import Database
from storage.models import utcnow
from storage.usage import BUDGET_TOPIC

if TYPE_CHECKING:
    from anthropic.types import Message
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["BudgetExceeded", "Gateway", "GatewayError", "Reply"]

log = logging.getLogger(__name__)

# How long a hold outlives the longest its call can take (each pair's timeout): room for the
# usage row to be written before the hold stops counting.
HOLD_MARGIN = timedelta(minutes=1)


@dataclass(frozen=True)
class Reply:
    message: Message
    model: str
    profile: str
    fallback_used: bool
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


class Gateway:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self.redact = Redactor(config.secret_values())
        self.failover = Failover(config, db)
        self.ledger = Ledger(config, db)
        self.alerts = ModelAlerts(config, db)
        self.stops = BudgetStops(config, db, self.ledger, self.alerts)
        self.usage = UsageWriter(
            db, unpriced=self.alerts.unpriced, written=self.stops.warn_crossed
        )
        # One process owns a SQLite database (the poller lock refuses a second), so there
        # what this process knows is all there is to know: the profiles' state needs no
        # read, and an agent found without a budget stays so until a transaction of this
        # process changes a budget (the BUDGET_TOPIC commit clears it). Several nodes on
        # PostgreSQL read both before every call.
        self._alone = db.is_sqlite
        self._unbounded: dict[str, Standing] = {}
        self._loaded = False  # alone: the marks written before this process started are read
        if self._alone:
            db.on_commit(BUDGET_TOPIC, self._unbounded.clear)

    async def close(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("usage rows of %d call(s) could not be written", self.usage.pending)
        await self.failover.close()

    def pairs(self, agent: AgentConfig) -> list[tuple[str, str]]:
        """(model, profile) in the order tried: the model on each profile, then fallbacks."""
        return self.failover.pairs(agent)

    async def create(
        self,
        agent: AgentConfig,
        *,
        run_id: int | None,
        purpose: str,
        system: str,
        messages: list[Any],
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int = 4096,
    ) -> Reply:
        """One model call for `agent`, through its (model, profile) pairs in order. Raises
        BudgetExceeded without calling when its month's budget is used up, and GatewayError
        when no pair answered (with `retry_at` when all are rate-limited)."""
        pairs = self.pairs(agent)
        worst = self._worst_case(agent, input_bound(system, messages, tools), max_tokens)
        standing = await self._reserve(
            agent, worst, timedelta(seconds=CALL_TIMEOUT * len(pairs)) + HOLD_MARGIN
        )
        try:
            await self.stops.judge(agent, standing)
            return await self._call(
                agent, pairs, run_id, purpose, system, messages, tools, max_tokens
            )
        finally:
            if standing.hold is not None:
                # Queued right after the call's usage row: both go in one transaction.
                self.usage.release(standing.hold)
            await self.failover.shared()

    async def _call(
        self,
        agent: AgentConfig,
        pairs: list[tuple[str, str]],
        run_id: int | None,
        purpose: str,
        system: str,
        messages: list[Any],
        tools: list[dict[str, Any]] | None,
        max_tokens: int,
    ) -> Reply:
        import anthropic

        failover = self.failover
        problems: list[str] = []
        transient = False  # a problem that may go away by itself (429, 5xx, network)
        retry_at = failover.all_cooling(agent)
        if retry_at is not None:
            raise GatewayError("every model and key is rate-limited", retry_at=retry_at)
        for model, profile in pairs:
            if failover.is_rejected(profile):
                problems.append(f"the key of profile {profile} was rejected; fix its api_key")
                continue
            if failover.cooling_until((model, profile)) is not None:
                problems.append(f"{model}@{profile} cooling down")
                transient = True
                continue
            try:
                client = failover.client(profile)
            except GatewayError as err:
                problems.append(str(err))
                continue
            started = time.monotonic()
            try:
                kwargs: dict[str, Any] = {}
                if tools:
                    kwargs["tools"] = tools
                message = await client.messages.create(
                    model=model,
                    system=system,
                    messages=messages,
                    max_tokens=max_tokens,
                    **kwargs,
                )
            except anthropic.APIStatusError as err:
                self._record(agent, run_id, purpose, model, profile, None, started, err)
                status = err.status_code
                if status == 429:
                    failover.cool_down_everywhere((model, profile), utcnow() + retry_after(err))
                    problems.append(f"{model}@{profile} rate-limited (429)")
                    transient = True
                    continue
                if status in (401, 403):
                    # Calling it again cannot help until the key changes: the next profile
                    # is tried at once, and this one is left alone until then.
                    await self.alerts.key_rejected(self.failover, profile, status)
                    problems.append(
                        f"the key of profile {profile} was rejected ({status}); fix its api_key"
                    )
                    continue
                if status >= 500:
                    problems.append(f"{model}@{profile} unavailable ({status})")
                    transient = True
                    continue
                # 400 (an invalid model, a request the API refuses), 402 (billing), 404:
                # the same request fails the same way on every pair, and again later.
                raise GatewayError(
                    f"the API refused the request ({status}): {self.redact(str(err.message))}",
                    permanent=True,
                ) from err
            except (anthropic.APIConnectionError, anthropic.APITimeoutError) as err:
                self._record(agent, run_id, purpose, model, profile, None, started, err)
                problems.append(f"{model}@{profile} unreachable ({type(err).__name__})")
                transient = True
                continue
            cost = self._record(agent, run_id, purpose, model, profile, message, started, None)
            return Reply(
                message=message,
                model=model,
                profile=profile,
                fallback_used=model != agent.model,
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
                cost_usd=cost,
            )
        detail = self.redact("; ".join(dict.fromkeys(problems)))
        retry_at = failover.all_cooling(agent)
        if retry_at is not None:
            # Every pair is rate-limited (some just now): come back when the first cools down.
            raise GatewayError("every model and key is rate-limited: " + detail, retry_at=retry_at)
        if not transient:
            raise GatewayError(
                "no model can answer until the configuration is fixed: " + detail,
                permanent=True,
            )
        raise GatewayError("no model answered: " + detail)

    def _record(
        self,
        agent: AgentConfig,
        run_id: int | None,
        purpose: str,
        model: str,
        profile: str,
        message: Message | None,
        started: float,
        error: Exception | None,
    ) -> Decimal:
        """Queue the usage row of one call (see agents.usage_writer). Returns its cost."""
        price = price_of(self.config, model)
        usage = message.usage if message is not None else None
        cost = cost_of(price, usage) if price is not None and usage is not None else Decimal(0)
        self.usage.queue(
            usage_row(
                agent.id,
                run_id,
                purpose,
                model,
                profile,
                cost=cost,
                price_known=price is not None,
                latency_ms=int((time.monotonic() - started) * 1000),
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                cache_writes=cache_writes(usage) if usage is not None else (0, 0),
                cache_read_tokens=(usage.cache_read_input_tokens or 0) if usage else 0,
                fallback_used=model != agent.model,
                error=None if error is None else self.redact(f"{type(error).__name__}: {error}"),
            ),
            unpriced=model if price is None and message is not None else None,
            spent=bool(cost),
        )
        return cost

    # -- process agents: coding CLIs ------------------------------------------------------

    async def check_budget(self, agent: AgentConfig) -> None:
        """What a model call checks first (BudgetExceeded when the month is spent, the 80%
        warning), for a process agent before it starts a CLI."""
        await self.stops.judge(agent, await self._reserve(agent, Decimal(0), timedelta(0)))

    def cooling_until(self, key: tuple[str, str]) -> datetime | None:
        """When the (model or CLI, profile) pair stops cooling down; None if it is not."""
        return self.failover.cooling_until(key)

    def cool_down(self, key: tuple[str, str], until: datetime) -> None:
        self.failover.cool_down(key, until)

    def record_external(
        self,
        agent: AgentConfig,
        run_id: int | None,
        *,
        purpose: str,
        model: str,
        profile: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cost: Decimal | None = None,
        latency_ms: int = 0,
        error: str | None = None,
    ) -> Decimal:
        """Queue the usage row of work a coding CLI did and reported: its own cost when it
        gave one, else its tokens priced as `model`. Counts against the budgets like a call."""
        price = price_of(self.config, model)
        if cost is None and price is not None:
            cost = cost_of(
                price,
                SimpleNamespace(
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_creation_input_tokens=cache_write_tokens,
                    cache_read_input_tokens=cache_read_tokens,
                ),
            )
        known = cost is not None
        self.usage.queue(
            usage_row(
                agent.id,
                run_id,
                purpose,
                model,
                profile,
                cost=cost or Decimal(0),
                price_known=known,
                latency_ms=latency_ms,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cache_writes=(cache_write_tokens, 0),
                cache_read_tokens=cache_read_tokens,
                error=error,
            ),
            unpriced=model if not known and (input_tokens or output_tokens) else None,
        )
        return cost or Decimal(0)

    async def flush(self) -> None:
        """Write the queued usage rows (see agents.usage_writer): a run flushes before it is
        recorded as finished, and so does shutdown."""
        await self.usage.flush()

    # -- budgets --------------------------------------------------------------------------

    def _worst_case(self, agent: AgentConfig, input_tokens: int, max_tokens: int) -> Decimal:
        """The most one call of `agent` can cost, whichever of its models answers."""
        prices = [price_of(self.config, model) for model in (agent.model, *agent.fallbacks)]
        costs = [worst_case(p, input_tokens, max_tokens) for p in prices if p is not None]
        return max(costs, default=Decimal(0))

    async def _reserve(self, agent: AgentConfig, worst: Decimal, ttl: timedelta) -> Standing:
        """Reserve `worst` against the budgets (see agents.budget) and learn the profiles'
        shared state, in one transaction."""
        if agent.budget_usd_month is None and self.config.budget.fleet_usd_month is None:
            # No budget in the config: only one set with /budget can bound this agent, and a
            # read (no lock, no hold) says whether there is one.
            known = self._unbounded.get(agent.id)
            if known is not None and known.month == spend.month_of():
                return known
            async with self.db.session() as session:
                standing = await self.ledger.read(session, agent)
                await self._refresh(session, agent)
            if standing.limit is None:
                if self._alone:
                    self._unbounded[agent.id] = standing
                return standing
        if self.usage.pending or self.usage.holding:
            # The calls that returned count at their real cost, and all of them count.
            await self.flush()
        async with self.db.claim() as session:
            standing = await self.ledger.reserve(session, agent, worst, ttl)
            await self._refresh(session, agent)
        return standing

    async def _refresh(self, session: AsyncSession, agent: AgentConfig) -> None:
        """Learn the profiles' shared state: before every call with other nodes; alone, once
        (for every profile), since then only this process writes it."""
        if not self._alone:
            await self.failover.refresh(session, agent.profiles)
        elif not self._loaded:
            await self.failover.refresh(session, self.config.anthropic.profiles)
            self._loaded = True
