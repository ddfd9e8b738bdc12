"""The one way to call a model: key profiles, a failover chain, cooldowns, monthly budgets, and
a usage row with its cost for every call.

The SDK's own retries are off (`max_retries=0`): it would retry 429 and 5xx on the same key and
model, while the gateway moves on to the next (model, profile) pair at once. Errors are decided
on `APIStatusError.status_code`, since exception classes differ between SDK versions: 429 cools
the pair down; 5xx and network errors move on; 401/403 mark the profile rejected until its key
changes (one alert per key; the key is not called again); 400/404 end the call as a
configuration error (`GatewayError.permanent`). Error texts are redacted (bot.redact): a proxy
may repeat the key in its message.

Budgets are checked before each call against the month-to-date spend, read from the usage rows
once per agent and month and then kept in memory (see `storage.usage`): at 80% of the
agent's (or the fleet's) month the `alerts` feed is warned once; at 100% no call is made, the
agent is paused, and `alerts` gets a stop with a "Raise budget" button for the owner. One call
can cross the line, never two. The 80% warning is also checked as each call's usage is recorded,
so a run whose last call crosses it is warned about at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from agents.prices import price_of
from bot.config import AgentConfig, Config, Price
from bot.redact import Redactor
from bot.views.budget import RaiseBudget
from bot.views.text import esc, percent, usd
from storage import agents as agent_state
from storage import inbox, outbox
from storage import usage as spend
from storage.db import Database
from storage.models import utcnow

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
CACHE_WRITE_FACTOR = Decimal("1.25")  # 5-minute cache writes
CACHE_WRITE_1H_FACTOR = Decimal(2)  # 1-hour cache writes
CACHE_READ_FACTOR = Decimal("0.1")
DEFAULT_COOLDOWN = timedelta(seconds=30)
WARN_AT = Decimal("0.8")  # share of a budget at which `alerts` is warned
USAGE_WRITE_DELAY = 0.1  # seconds a usage row may wait to be written with others


class GatewayError(Exception):
    """No model answered. With `retry_at`, every pair was rate-limited: try again then.
    `alerted`: the gateway has told the `alerts` feed already; callers need not repeat it.
    `permanent`: see below."""

    def __init__(
        self,
        message: str,
        *,
        retry_at: datetime | None = None,
        alerted: bool = False,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        self.alerted = alerted
        # A configuration problem (no key, every key rejected, an invalid model): trying
        # again without a config change makes the same call fail the same way.
        self.permanent = permanent


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


def cost_of(price: Price, usage: Any) -> Decimal:
    """USD for one call, from the API's usage block. Cache writes are priced by their cache's
    lifetime: the usage block's `cache_creation` says how many went to the 1-hour cache."""
    input_price = Decimal(str(price.input))
    write_5m = _per_token(price.cache_write, input_price * CACHE_WRITE_FACTOR)
    write_1h = _per_token(price.cache_write_1h, input_price * CACHE_WRITE_1H_FACTOR)
    read = _per_token(price.cache_read, input_price * CACHE_READ_FACTOR)
    writes = cache_writes(usage)
    total = (
        Decimal(usage.input_tokens) * input_price
        + Decimal(usage.output_tokens) * Decimal(str(price.output))
        + Decimal(writes[0] - writes[1]) * write_5m
        + Decimal(writes[1]) * write_1h
        + Decimal(getattr(usage, "cache_read_input_tokens", 0) or 0) * read
    )
    return total / MILLION


def cache_writes(usage: Any) -> tuple[int, int]:
    """(all cache-write tokens, those written to the 1-hour cache) of a usage block."""
    total = getattr(usage, "cache_creation_input_tokens", 0) or 0
    breakdown = getattr(usage, "cache_creation", None)
    one_hour = (getattr(breakdown, "ephemeral_1h_input_tokens", 0) or 0) if breakdown else 0
    return total, min(one_hour, total)


def _per_token(configured: float | None, default: Decimal) -> Decimal:
    return Decimal(str(configured)) if configured is not None else default


@dataclass
class _Ledger:
    """An agent's budget override and spend for one month, kept between calls."""

    month: datetime
    override: Decimal | None
    spent: Decimal


class Gateway:
    def __init__(self, config: Config, db: Database) -> None:
        self.config = config
        self.db = db
        self._clients: dict[str, anthropic.AsyncAnthropic] = {}
        self._cooldown: dict[tuple[str, str], datetime] = {}
        self._rejected: dict[str, str] = {}  # profile -> digest of the key Anthropic rejected
        self._recalled: set[str] = set()  # profiles whose earlier rejection was looked up
        self.redact = Redactor(config.secret_values())
        self._warned: set[str] = set()  # budget warnings queued by this process
        # Month-to-date spend, read from the usage rows once per agent and month, then added
        # to after each call: a budget check costs no query. Only `fleet run` calls models
        # (one process per bot token), so nothing else adds spend behind its back.
        self._ledgers: dict[str, _Ledger] = {}
        self._fleet_spent: tuple[datetime, Decimal] | None = None
        db.on_commit(spend.BUDGET_TOPIC, self._forget_budgets)
        # Usage rows are written in batches off the call's path (see `flush`).
        self._unwritten: list[dict[str, Any]] = []
        self._unpriced: set[str] = set()
        self._spent_by: set[str] = set()  # agents whose spend grew since the last flush
        self._write_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None

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
                raise GatewayError(_no_key(profile)) from err
            if not client.api_key and not client.auth_token:
                # The SDK would raise a TypeError at the first request instead.
                raise GatewayError(_no_key(profile))
            self._clients[profile] = client
        return client

    async def close(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("usage rows of %d call(s) could not be written", len(self._unwritten))
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
        await self._recall_rejections(agent)
        problems: list[str] = []
        transient = False  # a problem that may go away by itself (429, 5xx, network)
        pairs = [pair for pair in self.pairs(agent) if not self._is_rejected(pair[1])]
        cooling = [self._cooldown.get(pair) for pair in pairs]
        now = utcnow()
        if pairs and all(until is not None and until > now for until in cooling):
            retry_at = min(until for until in cooling if until is not None)
            raise GatewayError("every model and key is rate-limited", retry_at=retry_at)
        for model, profile in self.pairs(agent):
            if self._is_rejected(profile):
                problems.append(f"the key of profile {profile} was rejected; fix its api_key")
                continue
            until = self._cooldown.get((model, profile))
            if until is not None and until > utcnow():
                problems.append(f"{model}@{profile} cooling down")
                transient = True
                continue
            try:
                client = self._client(profile)
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
                    self._cooldown[(model, profile)] = utcnow() + _retry_after(err)
                    problems.append(f"{model}@{profile} rate-limited (429)")
                    transient = True
                    continue
                if status in (401, 403):
                    # Calling it again cannot help until the key changes: the next profile
                    # is tried at once, and this one is left alone until then.
                    await self._key_rejected(profile, status)
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
            fallback = model != agent.model
            return Reply(
                message=message,
                model=model,
                profile=profile,
                fallback_used=fallback,
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
                cost_usd=cost,
            )
        detail = self.redact("; ".join(dict.fromkeys(problems)))
        pairs = [pair for pair in self.pairs(agent) if not self._is_rejected(pair[1])]
        cooling = [self._cooldown.get(pair) for pair in pairs]
        if pairs and all(until is not None and until > utcnow() for until in cooling):
            # Every pair is rate-limited (some just now): come back when the first cools down.
            retry_at = min(until for until in cooling if until is not None)
            raise GatewayError("every model and key is rate-limited: " + detail, retry_at=retry_at)
        if not transient:
            raise GatewayError(
                "no model can answer until the configuration is fixed: " + detail,
                permanent=True,
            )
        raise GatewayError("no model answered: " + detail)

    def _key_of(self, profile: str) -> str:
        configured = self.config.anthropic.profiles.get(profile)
        key = configured.api_key.get_secret_value() if configured else ""
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    async def _recall_rejections(self, agent: AgentConfig) -> None:
        """A key rejected before a restart is still rejected: its alert (keyed by the key's
        digest) says so. Looked up once per profile and process."""
        for profile in agent.profiles:
            if profile in self._recalled:
                continue
            self._recalled.add(profile)
            key = self._key_of(profile)
            async with self.db.session() as session:
                if await outbox.latest(session, f"key-rejected:{profile}:{key}") is not None:
                    self._rejected[profile] = key

    def _is_rejected(self, profile: str) -> bool:
        """Anthropic rejected this profile's key (401/403), and the key has not changed."""
        return self._rejected.get(profile) == self._key_of(profile)

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
        """Queue the usage row of one call (see `flush`) and count its cost against the
        month's budgets. Returns the cost."""
        price = price_of(self.config, model)
        usage = message.usage if message is not None else None
        cost = cost_of(price, usage) if price is not None and usage is not None else Decimal(0)
        writes = cache_writes(usage) if usage is not None else (0, 0)
        self._unwritten.append(
            {
                "agent_id": agent.id,
                "run_id": run_id,
                "purpose": purpose,
                "model": model,
                "profile": profile,
                "input_tokens": usage.input_tokens if usage else 0,
                "output_tokens": usage.output_tokens if usage else 0,
                "cache_write_tokens": writes[0],
                "cache_write_1h_tokens": writes[1],
                "cache_read_tokens": (usage.cache_read_input_tokens or 0) if usage else 0,
                "cost_usd": cost,
                "price_known": price is not None,
                "latency_ms": int((time.monotonic() - started) * 1000),
                "fallback_used": model != agent.model,
                "status": "ok" if error is None else "error",
                "error": None
                if error is None
                else self.redact(f"{type(error).__name__}: {error}")[:500],
                "created_at": utcnow(),
            }
        )
        if price is None and message is not None:
            self._unpriced.add(model)
        if cost:
            self._add_spend(agent.id, cost)
            self._spent_by.add(agent.id)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_behind())
        return cost

    # -- process agents: coding CLIs ------------------------------------------------------

    async def check_budget(self, agent: AgentConfig) -> None:
        """What a model call checks first (BudgetExceeded when the month is spent, the 80%
        warning), for a process agent before it starts a CLI."""
        await self._check_budget(agent)

    def cooling_until(self, key: tuple[str, str]) -> datetime | None:
        """When the (model or CLI, profile) pair stops cooling down; None if it is not."""
        until = self._cooldown.get(key)
        return until if until is not None and until > utcnow() else None

    def cool_down(self, key: tuple[str, str], until: datetime) -> None:
        self._cooldown[key] = until

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
        self._unwritten.append(
            {
                "agent_id": agent.id,
                "run_id": run_id,
                "purpose": purpose,
                "model": model[:64],
                "profile": profile[:32],
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_write_tokens": cache_write_tokens,
                "cache_write_1h_tokens": 0,
                "cache_read_tokens": cache_read_tokens,
                "cost_usd": cost or Decimal(0),
                "price_known": known,
                "latency_ms": latency_ms,
                "fallback_used": False,
                "status": "ok" if error is None else "error",
                "error": None if error is None else error[:500],
                "created_at": utcnow(),
            }
        )
        if not known and (input_tokens or output_tokens):
            self._unpriced.add(model)
        if cost:
            self._add_spend(agent.id, cost)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_behind())
        return cost or Decimal(0)

    async def flush(self) -> None:
        """Write the queued usage rows. A call's row is written right after the call returns,
        in a batch with any others, instead of in the call's path; a run flushes before it
        is recorded as finished, and so does shutdown. A process killed in between loses the
        rows of its last `USAGE_WRITE_DELAY` of calls, never a finished run's."""
        async with self._write_lock:
            while self._unwritten or self._unpriced:
                rows, self._unwritten = self._unwritten, []
                unpriced, self._unpriced = self._unpriced, set()
                try:
                    async with self.db.session() as session:
                        if rows:
                            await spend.record(session, rows)
                        for model in sorted(unpriced):
                            await self._alert_unpriced(session, model)
                except BaseException:
                    self._unwritten[:0] = rows
                    self._unpriced |= unpriced
                    raise
        await self._warn_crossed()

    async def _warn_crossed(self) -> None:
        """The 80% warning for spend just recorded: a run whose last call crosses the line
        may be followed by no call for days, so the check before a call is not enough."""
        agents, self._spent_by = self._spent_by, set()
        since = spend.month_start(utcnow())
        month = since.date()
        for agent_id in sorted(agents):
            agent = next((a for a in self.config.agents if a.id == agent_id), None)
            ledger = self._ledgers.get(agent_id)
            if agent is None or ledger is None or ledger.month != since:
                continue
            limit = spend.effective_budget(ledger.override, agent.budget_usd_month)
            if limit is not None and ledger.spent >= limit * WARN_AT:
                await self._warn(agent_id, month, ledger.spent, limit)
        fleet_limit = self.config.budget.fleet_usd_month
        if agents and fleet_limit is not None and self._fleet_spent is not None:
            fleet = Decimal(str(fleet_limit))
            if self._fleet_spent[0] == since and self._fleet_spent[1] >= fleet * WARN_AT:
                await self._warn(None, month, self._fleet_spent[1], fleet)

    async def _write_behind(self) -> None:
        # A short wait gathers the rows of concurrent and back-to-back calls into one INSERT.
        await asyncio.sleep(USAGE_WRITE_DELAY)
        try:
            await self.flush()
        except Exception:
            log.exception(
                "writing usage rows failed; %d kept for the next try", len(self._unwritten)
            )

    async def _alert_unpriced(self, session: AsyncSession, model: str) -> None:
        await self._alert(
            session,
            f"💲 No price for model <b>{esc(model)}</b>: its calls are recorded at $0 "
            "and count against no budget. Add its USD per million tokens to the config: "
            f'<code>[pricing."{esc(model)}"]</code> with <code>input</code> and '
            "<code>output</code>.",
            f"price-unknown:{model}:{utcnow():%Y-%m-%d}",
        )

    async def _key_rejected(self, profile: str, status: int) -> None:
        """Mark `profile` rejected until its key changes (a new config); one alert per key."""
        key = self._key_of(profile)
        self._rejected[profile] = key
        log.error("Anthropic rejected the key for profile %s (%d)", profile, status)
        async with self.db.session() as session:
            await self._alert(
                session,
                f"🔑 Anthropic rejected the key for profile <b>{esc(profile)}</b> ({status}). "
                "It is not used again until its key changes in the config (then restart); "
                "agents go on with their other profiles, if any.",
                f"key-rejected:{profile}:{key}",
            )

    # -- budgets --------------------------------------------------------------------------

    async def _check_budget(self, agent: AgentConfig) -> None:
        """Refuse the call (BudgetExceeded) when the agent's or the fleet's month is spent;
        warn `alerts` once at 80%."""
        fleet_limit = self.config.budget.fleet_usd_month
        since = spend.month_start(utcnow())
        ledger = await self._ledger(agent.id, since, fleet=fleet_limit is not None)
        limit = spend.effective_budget(ledger.override, agent.budget_usd_month)
        spent = ledger.spent
        fleet_spent = self._fleet_spent[1] if self._fleet_spent else Decimal(0)
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

    async def _ledger(self, agent_id: str, since: datetime, *, fleet: bool) -> _Ledger:
        ledger = self._ledgers.get(agent_id)
        fleet_known = not fleet or (
            self._fleet_spent is not None and self._fleet_spent[0] == since
        )
        if ledger is not None and ledger.month == since and fleet_known:
            return ledger
        await self.flush()  # the sums must include every call made so far
        async with self.db.session() as session:
            seen = await spend.standing(session, agent_id, since, fleet=fleet)
        ledger = _Ledger(since, seen.override, seen.spent)
        self._ledgers[agent_id] = ledger
        if fleet:
            self._fleet_spent = (since, seen.fleet_spent)
        return ledger

    def _add_spend(self, agent_id: str, cost: Decimal) -> None:
        since = spend.month_start(utcnow())
        ledger = self._ledgers.get(agent_id)
        if ledger is not None and ledger.month == since:
            ledger.spent += cost
        if self._fleet_spent is not None and self._fleet_spent[0] == since:
            self._fleet_spent = (since, self._fleet_spent[1] + cost)

    def _forget_budgets(self) -> None:
        """A budget changed (/budget, a raise): read overrides and spend again at the next
        call."""
        self._ledgers.clear()
        self._fleet_spent = None

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
                await self._tell_hub(
                    session,
                    agent.id,
                    f"{agent.id} is paused: {reason}. Do not assign it work until an owner "
                    "raises its budget.",
                    f"oversight:budget-stop:{approval.id}",
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
            await self._tell_hub(
                session,
                agent.id,
                f"The fleet is paused agent by agent: {reason}. No agent can call a model "
                "until the fleet budget is raised.",
                f"oversight:budget-stop:*fleet:{month:%Y-%m}:{limit:.2f}",
            )
        log.warning("%s: %s; paused", agent.id, reason)
        raise BudgetExceeded(f"{reason}; paused", alerted=True)

    async def _tell_hub(self, session: AsyncSession, agent_id: str, body: str, key: str) -> None:
        """An oversight notice for the hub, which routes work and must stop sending it to a
        paused agent. None when the paused agent is the hub itself: it reads nothing now."""
        hub = self.config.hub
        if hub is not None and hub.id != agent_id:
            await inbox.oversight(session, hub.id, body, key)

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


def _no_key(profile: str) -> str:
    return (
        f"no API key for profile {profile}: set ANTHROPIC_API_KEY or "
        f"[anthropic.profiles.{profile}]"
    )


def _retry_after(err: anthropic.APIStatusError) -> timedelta:
    header = err.response.headers.get("retry-after") if err.response is not None else None
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        seconds = None
    return timedelta(seconds=seconds) if seconds and seconds > 0 else DEFAULT_COOLDOWN
