"""The one way to call a model: key profiles, a failover chain, cooldowns, monthly budgets, and
a usage row with its cost for every call.

The SDK's own retries are off (`max_retries=0`): it would retry 429 and 5xx on the same key and
model, while the gateway moves on to the next (model, profile) pair at once. Errors are decided
on `APIStatusError.status_code`, since exception classes differ between SDK versions.

Budgets are checked before each call from the usage rows (see `storage.usage`): at 80% of the
agent's (or the fleet's) month the `alerts` feed is warned once; at 100% no call is made, the
agent is paused, and `alerts` gets a stop with a "Raise budget" button for the owner. One call
can cross the line, never two.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import AgentConfig, Config, Price
from bot.text import esc
from handlers.budget import RaiseBudget, percent, usd
from storage import agents as agent_state
from storage import outbox
from storage import usage as spend
from storage.db import Database
from storage.models import Usage, utcnow

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
# USD per million tokens (input, output) by model-name prefix; `[pricing]` in the config wins.
DEFAULT_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "claude-opus-4-5": (Decimal(5), Decimal(25)),
    "claude-opus-4-6": (Decimal(5), Decimal(25)),
    "claude-opus-4": (Decimal(15), Decimal(75)),
    "claude-sonnet-4": (Decimal(3), Decimal(15)),
    "claude-3-7-sonnet": (Decimal(3), Decimal(15)),
    "claude-haiku-4": (Decimal(1), Decimal(5)),
    "claude-3-5-haiku": (Decimal("0.8"), Decimal(4)),
}
CACHE_WRITE_FACTOR = Decimal("1.25")  # 5-minute cache writes
CACHE_READ_FACTOR = Decimal("0.1")
DEFAULT_COOLDOWN = timedelta(seconds=30)
WARN_AT = Decimal("0.8")  # share of a budget at which `alerts` is warned


class GatewayError(Exception):
    """No model answered. With `retry_at`, every pair was rate-limited: try again then.
    `alerted`: the gateway has told the `alerts` feed already; callers need not repeat it."""

    def __init__(
        self, message: str, *, retry_at: datetime | None = None, alerted: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        self.alerted = alerted


class BudgetExceeded(GatewayError):
    """The agent's or the fleet's monthly budget is used up: no call was made, the agent is
    paused, and `alerts` has the stop (raise the budget, then the agent runs again)."""


@dataclass(frozen=True)
class Reply:
    message: Message
    model: str
    profile: str
    fallback_used: bool
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


def price_of(config: Config, model: str) -> Price | None:
    if model in config.pricing:
        return config.pricing[model]
    for prefix in sorted(DEFAULT_PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            prices = DEFAULT_PRICES[prefix]
            return Price(input=float(prices[0]), output=float(prices[1]))
    return None


def cost_of(price: Price, usage: Any) -> Decimal:
    """USD for one call, from the API's usage block."""
    input_price = Decimal(str(price.input))
    output_price = Decimal(str(price.output))
    write_price = (
        Decimal(str(price.cache_write))
        if price.cache_write is not None
        else input_price * CACHE_WRITE_FACTOR
    )
    read_price = (
        Decimal(str(price.cache_read))
        if price.cache_read is not None
        else input_price * CACHE_READ_FACTOR
    )
    total = (
        Decimal(usage.input_tokens) * input_price
        + Decimal(usage.output_tokens) * output_price
        + Decimal(getattr(usage, "cache_creation_input_tokens", 0) or 0) * write_price
        + Decimal(getattr(usage, "cache_read_input_tokens", 0) or 0) * read_price
    )
    return total / MILLION


class Gateway:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self._clients: dict[str, anthropic.AsyncAnthropic] = {}
        self._cooldown: dict[tuple[str, str], datetime] = {}
        self._warned: set[str] = set()  # budget warnings queued by this process

    def _client(self, profile: str) -> anthropic.AsyncAnthropic:
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
                    timeout=120.0,
                )
            except anthropic.AnthropicError as err:
                raise GatewayError(
                    f"no API key for profile {profile}: set ANTHROPIC_API_KEY or "
                    f"[anthropic.profiles.{profile}]"
                ) from err
            self._clients[profile] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    def pairs(self, agent: AgentConfig) -> list[tuple[str, str]]:
        """(model, profile) in the order tried: the model on each profile, then fallbacks."""
        return [(model, p) for model in (agent.model, *agent.fallbacks) for p in agent.profiles]

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
        import anthropic

        await self._check_budget(agent)
        problems: list[str] = []
        now = utcnow()
        cooling = [self._cooldown.get(pair) for pair in self.pairs(agent)]
        if all(until is not None and until > now for until in cooling):
            retry_at = min(until for until in cooling if until is not None)
            raise GatewayError("every model and key is rate-limited", retry_at=retry_at)
        for model, profile in self.pairs(agent):
            until = self._cooldown.get((model, profile))
            if until is not None and until > utcnow():
                problems.append(f"{model}@{profile} cooling down")
                continue
            started = time.monotonic()
            try:
                kwargs: dict[str, Any] = {}
                if tools:
                    kwargs["tools"] = tools
                message = await self._client(profile).messages.create(
                    model=model,
                    system=system,
                    messages=messages,
                    max_tokens=max_tokens,
                    **kwargs,
                )
            except anthropic.APIStatusError as err:
                await self._record(agent, run_id, purpose, model, profile, None, started, err)
                status = err.status_code
                if status == 429:
                    self._cooldown[(model, profile)] = utcnow() + _retry_after(err)
                    problems.append(f"{model}@{profile} rate-limited (429)")
                    continue
                if status in (401, 403):
                    await self._key_rejected(profile, status)
                    raise GatewayError(
                        f"key for profile {profile} rejected ({status}); check its api_key"
                    ) from err
                if status >= 500:
                    problems.append(f"{model}@{profile} unavailable ({status})")
                    continue
                raise GatewayError(
                    f"the API refused the request ({status}): {err.message}"
                ) from err
            except (anthropic.APIConnectionError, anthropic.APITimeoutError) as err:
                await self._record(agent, run_id, purpose, model, profile, None, started, err)
                problems.append(f"{model}@{profile} unreachable ({type(err).__name__})")
                continue
            price = price_of(self.config, model)
            cost = cost_of(price, message.usage) if price is not None else Decimal(0)
            fallback = model != agent.model
            await self._record(agent, run_id, purpose, model, profile, message, started, None)
            return Reply(
                message=message,
                model=model,
                profile=profile,
                fallback_used=fallback,
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
                cost_usd=cost,
            )
        cooling = [self._cooldown.get(pair) for pair in self.pairs(agent)]
        if all(until is not None and until > utcnow() for until in cooling):
            # Every pair is rate-limited (some just now): come back when the first cools down.
            retry_at = min(until for until in cooling if until is not None)
            raise GatewayError(
                "every model and key is rate-limited: " + "; ".join(problems), retry_at=retry_at
            )
        raise GatewayError("no model answered: " + "; ".join(problems))

    async def _record(
        self,
        agent: AgentConfig,
        run_id: int | None,
        purpose: str,
        model: str,
        profile: str,
        message: Message | None,
        started: float,
        error: Exception | None,
    ) -> None:
        price = price_of(self.config, model)
        usage = message.usage if message is not None else None
        async with self.db.session() as session:
            session.add(
                Usage(
                    agent_id=agent.id,
                    run_id=run_id,
                    purpose=purpose,
                    model=model,
                    profile=profile,
                    input_tokens=usage.input_tokens if usage else 0,
                    output_tokens=usage.output_tokens if usage else 0,
                    cache_write_tokens=(usage.cache_creation_input_tokens or 0) if usage else 0,
                    cache_read_tokens=(usage.cache_read_input_tokens or 0) if usage else 0,
                    cost_usd=cost_of(price, usage) if price is not None and usage else Decimal(0),
                    price_known=price is not None,
                    latency_ms=int((time.monotonic() - started) * 1000),
                    fallback_used=model != agent.model,
                    status="ok" if error is None else "error",
                    error=None if error is None else f"{type(error).__name__}: {error}"[:500],
                )
            )
            if price is None and message is not None:
                await self._alert(
                    session,
                    f"💲 No price for model <b>{esc(model)}</b>: its calls are recorded at $0 "
                    "and count against no budget. Add its USD per million tokens to the config: "
                    f'<code>[pricing."{esc(model)}"]</code> with <code>input</code> and '
                    "<code>output</code>.",
                    f"price-unknown:{model}:{utcnow():%Y-%m-%d}",
                )

    async def _key_rejected(self, profile: str, status: int) -> None:
        log.error("Anthropic rejected the key for profile %s (%d)", profile, status)
        feed = self.config.feed("alerts")
        if feed is None:
            return
        async with self.db.session() as session:
            await outbox.enqueue(
                session,
                outbox.Destination(feed.chat_id, feed.topic, "alerts"),
                f"🔑 Anthropic rejected the key for profile <b>{esc(profile)}</b> ({status}). "
                "Agents using it cannot run until the key is fixed.",
                dedup_key=f"key-rejected:{profile}:{utcnow():%Y-%m-%d}",
            )

    # -- budgets --------------------------------------------------------------------------

    async def _check_budget(self, agent: AgentConfig) -> None:
        """Refuse the call (BudgetExceeded) when the agent's or the fleet's month is spent;
        warn `alerts` once at 80%."""
        fleet_limit = self.config.budget.fleet_usd_month
        now = utcnow()
        since = spend.month_start(now)
        async with self.db.session() as session:
            seen = await spend.standing(session, agent.id, since, fleet=fleet_limit is not None)
        limit = spend.effective_budget(seen.override, agent.budget_usd_month)
        spent, fleet_spent = seen.spent, seen.fleet_spent
        month = since.date()
        fleet = Decimal(str(fleet_limit)) if fleet_limit is not None else None
        if limit is not None and spent >= limit:
            await self._stop(agent, month, spent, limit)
        if fleet is not None and fleet_spent >= fleet:
            await self._stop_fleet(agent, month, fleet_spent, fleet)
        if limit is not None and spent >= limit * WARN_AT:
            await self._warn(agent.id, month, spent, limit)
        if fleet is not None and fleet_spent >= fleet * WARN_AT:
            await self._warn(None, month, fleet_spent, fleet)

    async def _warn(
        self, agent_id: str | None, month: date, spent: Decimal, limit: Decimal
    ) -> None:
        key = f"budget-warn:{agent_id or '*fleet'}:{month:%Y-%m}:{limit:.2f}"
        if key in self._warned:
            return
        who = f"<b>{esc(agent_id)}</b> has" if agent_id else "The fleet has"
        share = percent(spent, limit) if limit else "all"
        async with self.db.session() as session:
            await self._alert(
                session,
                f"⚠️ {who} used {share} of its monthly budget: {usd(spent)} of {usd(limit)} in "
                f"{month:%B %Y}. At 100% it is paused.",
                key,
            )
        self._warned.add(key)

    async def _stop(
        self, agent: AgentConfig, month: date, spent: Decimal, limit: Decimal
    ) -> NoReturn:
        step = Decimal(str(self.config.budget.raise_step_usd))
        reason = f"monthly budget used up: {usd(spent)} of {usd(limit)} in {month:%Y-%m}"
        async with self.db.claim() as session:
            await agent_state.pause(session, agent.id, by=spend.BUDGET_ACTOR, reason=reason)
            approval, new = await spend.request_raise(
                session, agent.id, month=month, budget=limit, spent=spent, step=step
            )
            if new:
                button = {
                    "text": f"Raise budget by {usd(step)}",
                    "callback_data": RaiseBudget(approval=approval.id).pack(),
                }
                await self._alert(
                    session,
                    f"🛑 <b>{esc(agent.id)}</b> used up its monthly budget: {usd(spent)} of "
                    f"{usd(limit)} in {month:%B %Y}. It is paused and calls no model until "
                    f"the budget is raised (owner: the button, or /budget {esc(agent.id)} "
                    "&lt;usd&gt;).",
                    f"budget-stop:{approval.id}",
                    buttons=[[button]],
                )
        log.warning("%s: %s; paused", agent.id, reason)
        raise BudgetExceeded(f"{reason}; paused until the budget is raised", alerted=True)

    async def _stop_fleet(
        self, agent: AgentConfig, month: date, spent: Decimal, limit: Decimal
    ) -> NoReturn:
        reason = f"fleet budget used up: {usd(spent)} of {usd(limit)} in {month:%Y-%m}"
        async with self.db.claim() as session:
            await agent_state.pause(session, agent.id, by=spend.BUDGET_ACTOR, reason=reason)
            await self._alert(
                session,
                f"🛑 The fleet used up its monthly budget: {usd(spent)} of {usd(limit)} in "
                f"{month:%B %Y}. Each agent is paused when it next calls a model. To go on, "
                "raise <code>fleet_usd_month</code> under <code>[budget]</code> in the config, "
                "restart, and /resume the agents.",
                f"budget-stop:*fleet:{month:%Y-%m}:{limit:.2f}",
            )
        log.warning("%s: %s; paused", agent.id, reason)
        raise BudgetExceeded(f"{reason}; paused", alerted=True)

    async def _alert(
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


def _retry_after(err: anthropic.APIStatusError) -> timedelta:
    header = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        seconds = None
    return timedelta(seconds=seconds) if seconds and seconds > 0 else DEFAULT_COOLDOWN
