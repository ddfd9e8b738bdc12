"""Costs and budgets through the real gateway: the local Anthropic server answers with scripted
usage blocks, the gateway records usage rows in a real SQLite database, and budgets stop it.

The end-to-end half runs the real `fleet run`: a budget stop in a run, the "Raise budget"
button (owner only) and /budget.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from agents.gateway import BudgetExceeded, Gateway
from bot.config import AgentConfig, Config, load_config
from storage import approvals, budget_requests, inbox, usage
from storage.approval_kinds import Kinds
from storage.approval_policy import ApprovalPolicy
from storage.db import Database
from storage.models import AgentState, Approval, Outbox, Usage
from tests.anthropic_server import AnthropicServer, Request, text, tool_use
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    ALERTS_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    OWNER,
    VIEWER,
    ask,
    execute,
    press,
    query,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet

KEY = "sk-ant-budget-test"
MILLION = Decimal(1_000_000)
# (input, output, 5-minute cache write, cache read, 1-hour cache write) USD per million tokens,
# as the gateway must price them.
SONNET = (Decimal(3), Decimal(15), Decimal("3.75"), Decimal("0.3"), Decimal(6))  # 1.25x/0.1x/2x
# [pricing."test-model"]; its 1-hour write price is not configured: 2x input.
CUSTOM = (Decimal("0.8"), Decimal(4), Decimal(1), Decimal("0.08"), Decimal("1.6"))


@dataclass
class Env:
    config: Config
    db: Database
    gateway: Gateway
    server: AnthropicServer

    def agent(self, agent_id: str) -> AgentConfig:
        return next(a for a in self.config.agents if a.id == agent_id)

    async def call(self, agent_id: str) -> Decimal:
        reply = await self.gateway.create(
            self.agent(agent_id),
            run_id=None,
            purpose="turn",
            system="You are a test.",
            messages=[{"role": "user", "content": "hello"}],
        )
        return reply.cost_usd

    async def alerts(self) -> list[Outbox]:
        await self.gateway.flush()
        async with self.db.session() as session:
            found = await session.execute(
                select(Outbox).where(Outbox.feed == "alerts").order_by(Outbox.id)
            )
            return list(found.scalars())


def write_gateway_config(tmp_path: Path, base_url: str, agents: str, extra: str = "") -> Config:
    (tmp_path / "ws").mkdir(exist_ok=True)
    path = tmp_path / "fleet.toml"
    path.write_text(
        f"""
[telegram]
token = "123456:gateway-test"

[database]
url = "sqlite+aiosqlite:///{tmp_path / "fleet.db"}"

[[people]]
telegram_id = 1
name = "Ana"
role = "owner"

[feeds]
alerts = {{ chat_id = -100, topic = 3 }}

[anthropic]
base_url = "{base_url}"
[anthropic.profiles.primary]
api_key = "{KEY}"

[pricing."test-model"]
input = 0.8
output = 4
cache_write = 1
cache_read = 0.08

{agents}
{extra}
""",
        encoding="utf-8",
    )
    return load_config(path)


def agent_table(
    agent_id: str, model: str, *, hub: bool = False, budget: float | None = None
) -> str:
    lines = ["[[agents]]", f'id = "{agent_id}"', 'workspace = "ws"', f'model = "{model}"']
    lines.append("hub = true" if hub else 'reports_to = "hub"')
    if budget is not None:
        lines.append(f"budget_usd_month = {budget}")
    return "\n".join(lines) + "\n"


@pytest.fixture
async def server() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={KEY}) as fake:
        yield fake


async def open_env(config: Config, server: AnthropicServer) -> Env:
    db = Database(config.database.url)
    await db.migrate()
    return Env(config, db, Gateway(config, db), server)


async def close_env(env: Env) -> None:
    await env.gateway.close()
    await env.db.dispose()


def usage_block(rng: random.Random, scale: int = 1) -> dict[str, Any]:
    """A usage block as the API sends it; a third of the cache writes go to the 1-hour
    cache, broken down in `cache_creation` as the API does."""
    five_min = rng.choice([0, rng.randint(1, 60_000) // scale])
    one_hour = rng.choice([0, 0, rng.randint(1, 60_000) // scale])
    return {
        "input_tokens": rng.randint(1, 200_000) // scale,
        "output_tokens": rng.randint(1, 8_000) // scale,
        "cache_creation_input_tokens": five_min + one_hour,
        "cache_creation": {
            "ephemeral_5m_input_tokens": five_min,
            "ephemeral_1h_input_tokens": one_hour,
        },
        "cache_read_input_tokens": rng.choice([0, rng.randint(1, 150_000) // scale]),
    }


def hand_cost(block: dict[str, Any], prices: tuple[Decimal, ...]) -> Decimal:
    one_hour = block.get("cache_creation", {}).get("ephemeral_1h_input_tokens", 0)
    tokens = (
        block["input_tokens"],
        block["output_tokens"],
        block["cache_creation_input_tokens"] - one_hour,
        block["cache_read_input_tokens"],
        one_hour,
    )
    return sum((Decimal(n) * p for n, p in zip(tokens, prices, strict=True)), Decimal(0)) / MILLION


async def test_recorded_costs_match_a_hand_computation_across_1000_calls(
    tmp_path: Path, server: AnthropicServer
) -> None:
    agents = agent_table("hub", "claude-sonnet-4-6", hub=True) + agent_table("coder", "test-model")
    env = await open_env(write_gateway_config(tmp_path, server.base_url, agents), server)
    try:
        rng = random.Random(20261125)
        plan: list[tuple[str, dict[str, Any]]] = []
        for i in range(1000):
            plan.append(("hub" if i % 3 else "coder", usage_block(rng)))
        server.script(*(text("ok", usage=block) for _, block in plan))
        returned = [await env.call(agent_id) for agent_id, _ in plan]
        await env.gateway.flush()

        expected = {"hub": Decimal(0), "coder": Decimal(0)}
        costs = []
        for agent_id, block in plan:
            cost = hand_cost(block, SONNET if agent_id == "hub" else CUSTOM)
            expected[agent_id] += cost
            costs.append(cost)
        assert returned == costs  # the gateway's own figure is exact
        async with env.db.session() as session:
            rows = list((await session.execute(select(Usage).order_by(Usage.id))).scalars())
            table = {row.agent: row for row in await usage.month_table(session, usage.month_of())}
            since = usage.month_start()
            by_agent = await usage.spend_since(session, since)
            fleet = await usage.fleet_spend_since(session, since)
        assert len(rows) == 1000
        for row, (agent_id, block), cost in zip(rows, plan, costs, strict=True):
            assert row.agent_id == agent_id and row.status == "ok" and row.price_known
            assert (row.input_tokens, row.output_tokens) == (
                block["input_tokens"],
                block["output_tokens"],
            )
            assert row.cache_write_tokens == block["cache_creation_input_tokens"]
            assert (
                row.cache_write_1h_tokens == block["cache_creation"]["ephemeral_1h_input_tokens"]
            )
            assert row.cache_read_tokens == block["cache_read_input_tokens"]
            assert abs(row.cost_usd - cost) <= Decimal("0.000001")  # stored to the micro-dollar
        for agent_id, total in expected.items():
            calls = sum(1 for a, _ in plan if a == agent_id)
            assert table[agent_id].calls == calls
            assert table[agent_id].input == sum(
                b["input_tokens"] for a, b in plan if a == agent_id
            )
            assert table[agent_id].usd.quantize(usage.CENT) == total.quantize(usage.CENT)
            assert abs(table[agent_id].usd - total) < Decimal("0.001")
            assert abs(by_agent[agent_id] - total) < Decimal("0.001")
        assert abs(fleet - sum(expected.values())) < Decimal("0.001")
        assert await env.alerts() == []  # no budget, no unknown price: nothing to say
    finally:
        await close_env(env)


async def test_a_budget_of_one_dollar_is_exceeded_by_at_most_one_call(
    tmp_path: Path, server: AnthropicServer
) -> None:
    agents = agent_table("hub", "claude-sonnet-4-6", hub=True) + agent_table(
        "coder", "claude-sonnet-4-6", budget=1.0
    )
    env = await open_env(write_gateway_config(tmp_path, server.base_url, agents), server)
    try:
        rng = random.Random(7)
        server.script(*(text("ok", usage=usage_block(rng, scale=8)) for _ in range(200)))
        costs: list[Decimal] = []
        with pytest.raises(BudgetExceeded) as stopped:
            while True:
                costs.append(await env.call("coder"))
                warned = any(a.dedup_key.startswith("budget-warn:") for a in await env.alerts())
                # Warned as soon as the recorded spend reaches 80% (issue 18.13: checked
                # when the usage is recorded, not only before the next call), not before.
                assert warned == (sum(costs) >= Decimal("0.8"))
        assert stopped.value.alerted
        assert "monthly budget used up" in str(stopped.value)
        spent = sum(costs, Decimal(0))
        assert spent >= 1
        assert spent - costs[-1] < 1  # the last call started under the budget...
        assert spent - 1 < max(costs)  # ...so it is overshot by less than one call
        requests = len(server.requests)
        assert requests == len(costs)

        # Further calls are refused without reaching the server, and say so once.
        for _ in range(3):
            with pytest.raises(BudgetExceeded):
                await env.call("coder")
        assert len(server.requests) == requests
        assert await env.call("hub") > 0  # other agents are not held up

        alerts = await env.alerts()
        warnings = [a for a in alerts if a.dedup_key.startswith("budget-warn:")]
        stops = [a for a in alerts if a.dedup_key.startswith("budget-stop:")]
        assert len(warnings) == 1 and len(stops) == 1
        assert "<b>coder</b> has used" in warnings[0].text and "of $1.00" in warnings[0].text
        assert (warnings[0].chat_id, warnings[0].topic) == (-100, 3)
        assert "<b>coder</b> used up its monthly budget" in stops[0].text
        assert stops[0].buttons is not None
        [[button]] = stops[0].buttons
        async with env.db.session() as session:
            state = await session.get(AgentState, "coder")
            [approval] = (await session.execute(select(Approval))).scalars()
            [notice] = await inbox.unread(session, "hub")
        assert state is not None and state.paused and state.paused_by == usage.BUDGET_ACTOR
        # The hub, which routes work, is told once not to send any to the paused agent.
        assert (notice.kind, notice.dedup_key) == (
            "oversight",
            f"oversight:budget-stop:{approval.id}",
        )
        assert notice.body.startswith("coder is paused: monthly budget used up")
        assert approval.kind == "budget" and approval.status == "pending"
        assert approval.payload["agent"] == "coder" and approval.approvers == {"role": "owner"}
        assert button == {"text": "Raise budget by $10.00", "callback_data": f"bud:{approval.id}"}

        # The owner's raise: $11 now, the agent runs again; a second raise changes nothing.
        policy = ApprovalPolicy(people={1: ("Ana", "owner")})
        kinds = Kinds([budget_requests.BudgetKind({"coder": 1.0})])
        async with env.db.claim() as session:
            raised = await approvals.decide(
                session,
                approval.id,
                policy=policy,
                kinds=kinds,
                person_id=1,
                person_name="Ana",
                vote="approve",
            )
        assert isinstance(raised.effect, budget_requests.BudgetChange)
        assert raised.effect.won and raised.effect.resumed
        assert raised.effect.budget == Decimal(11)
        async with env.db.claim() as session:
            again = await approvals.decide(
                session,
                approval.id,
                policy=policy,
                kinds=kinds,
                person_id=1,
                person_name="Ana",
                vote="approve",
            )
        assert not again.won and again.approval is not None
        assert again.approval.decided_by == "person:1"
        assert await env.call("coder") > 0
        assert len(server.requests) == requests + 2
    finally:
        await close_env(env)


async def test_the_fleet_budget_stops_every_agent(tmp_path: Path, server: AnthropicServer) -> None:
    agents = agent_table("hub", "claude-sonnet-4-6", hub=True) + agent_table(
        "coder", "claude-sonnet-4-6"
    )
    config = write_gateway_config(
        tmp_path, server.base_url, agents, "[budget]\nfleet_usd_month = 0.5\n"
    )
    env = await open_env(config, server)
    try:
        block = {"input_tokens": 50_000, "output_tokens": 1_000}  # $0.165 a call
        server.script(*(text("ok", usage=block) for _ in range(10)))
        calls = 0
        with pytest.raises(BudgetExceeded, match="fleet budget used up"):
            while True:
                await env.call("hub" if calls % 2 else "coder")
                calls += 1
        assert calls == 4  # 0.495 < 0.5 before the fourth; 0.66 after it
        with pytest.raises(BudgetExceeded):
            await env.call("hub")
        assert len(server.requests) == calls
        alerts = await env.alerts()
        assert [a.dedup_key.split(":")[0] for a in alerts] == ["budget-warn", "budget-stop"]
        assert "The fleet used up its monthly budget: $0.66 of $0.50" in alerts[1].text
        assert alerts[1].buttons is None
        async with env.db.session() as session:
            paused = (
                await session.execute(select(AgentState.agent_id).where(AgentState.paused))
            ).scalars()
            assert sorted(paused) == ["coder", "hub"]
    finally:
        await close_env(env)


async def test_an_unknown_price_is_recorded_and_alerted_once_a_day(
    tmp_path: Path, server: AnthropicServer
) -> None:
    agents = agent_table("hub", "mystery-model-9", hub=True, budget=0.01)
    env = await open_env(write_gateway_config(tmp_path, server.base_url, agents), server)
    try:
        server.script(*(text("ok", usage={"input_tokens": 1_000_000}) for _ in range(3)))
        for _ in range(3):
            assert await env.call("hub") == 0  # not blocked, not priced
        await env.gateway.flush()
        async with env.db.session() as session:
            rows = list((await session.execute(select(Usage))).scalars())
        assert [(r.price_known, r.cost_usd) for r in rows] == [(False, Decimal(0))] * 3
        [alert] = await env.alerts()
        assert alert.dedup_key == f"price-unknown:mystery-model-9:{datetime.now(UTC):%Y-%m-%d}"
        assert '[pricing."mystery-model-9"]' in alert.text
    finally:
        await close_env(env)


# -- end to end ------------------------------------------------------------------------------

E2E_AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-sonnet-4-6"
authority = ["comment"]
budget_usd_month = 1
"""


async def insert_spend(config: Path, agent: str, usd: str, when: datetime | None = None) -> None:
    moment = (when or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S.%f")
    await execute(
        config,
        "INSERT INTO usage (agent_id, purpose, model, profile, input_tokens, output_tokens, "
        "cache_write_tokens, cache_read_tokens, cost_usd, price_known, latency_ms, "
        "fallback_used, status, created_at) VALUES "
        "(?, 'turn', 'claude-sonnet-4-6', 'primary', 1000, 100, 0, 0, ?, 1, 5, 0, 'ok', ?)",
        agent,
        usd,
        moment,
    )


def asked_by(anthropic: AnthropicServer, agent: str) -> list[Request]:
    """The model calls made for one agent's turns (its system prompt names it)."""
    return [r for r in anthropic.requests if f'agent "{agent}"' in str(r.body.get("system"))]


async def stop_edited(botapi: BotAPIServer, message_id: int) -> None:
    """Wait for the budget stop to be edited (through the outbox) to say how it was settled."""
    await botapi.wait_for_call(
        "editMessageText", lambda c: c.params["message_id"] == message_id, timeout=15
    )


def to_feed(call: Call) -> bool:
    return bool(call.params.get("chat_id") == FEED_CHAT)


async def test_a_budget_stop_in_a_run_and_the_owners_raise(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}) as anthropic:
        config = write_config(
            tmp_path, botapi.base_url, anthropic_base=anthropic.base_url, agents=E2E_AGENTS
        )
        fleet = InProcessFleet(config)
        await fleet.start()
        await botapi.wait_until_polling(timeout=30)
        await insert_spend(config, "coder", "0.95")  # past 80% already, under 100%
        anthropic.default = text("Noted.")  # the hub, told that coder is paused
        anthropic.script(
            tool_use("comment", {"text": "Started."}, usage={"input_tokens": 20_000}),
        )
        botapi.push_message(OPERATOR, "/assign coder Tidy the docs")
        # One call at $0.95 spent ($0.06 more), then the next is refused: the run fails.
        [stop] = await botapi.wait_for_call(
            "sendMessage", lambda c: to_feed(c) and "used up" in c.params["text"], timeout=30
        )
        assert stop.params["message_thread_id"] == ALERTS_TOPIC
        assert "<b>coder</b> used up its monthly budget: $1.01 of $1.00" in stop.params["text"]
        [[button]] = stop.params["reply_markup"]["inline_keyboard"]
        assert button["text"] == "Raise budget by $10.00"
        await wait_query(
            config,
            "SELECT agent_id, status, outcome LIKE '%monthly budget used up%' FROM runs "
            "WHERE status != 'skipped' ORDER BY id",
            [("coder", "failed", 1), ("hub", "succeeded", 0)],
        )
        assert query(config, "SELECT paused, paused_by FROM agent_state") == [(1, "system:budget")]
        # One call for coder (the next was refused unsent), one for the hub reading its notice.
        assert len(anthropic.requests) == 2
        assert "coder is paused" in str(anthropic.requests[1].body["messages"])
        feed = [c.params["text"] for c in botapi.calls_of("sendMessage") if to_feed(c)]
        assert sum("has used" in t for t in feed) == 1  # the 80% warning, once
        assert not any("❌" in t for t in feed)  # the stop says it all: no second alert
        message_id = stop.result["message_id"]

        # Viewers and operators cannot raise it; the owner can, once.
        refusal = await press(botapi, VIEWER, button["callback_data"], message_id)
        assert refusal == "This action needs the owner role; you are viewer."
        refusal = await press(botapi, OPERATOR, button["callback_data"], message_id)
        assert refusal == "This action needs the owner role; you are operator."
        assert query(config, "SELECT budget_usd_month FROM agent_state") == [(None,)]

        anthropic.script(tool_use("comment", {"text": "Carrying on."}), text("Done for now."))
        answer = await press(botapi, OWNER, button["callback_data"], message_id)
        assert answer == "Budget of coder raised to $11.00"
        await stop_edited(botapi, message_id)
        shown = botapi.message(FEED_CHAT, message_id)
        assert shown is not None
        assert "✅ Raised to $11.00 by Ana at " in shown["text"]
        assert "coder resumed" in shown["text"]
        assert not shown.get("reply_markup")  # the button is gone
        assert query(config, "SELECT paused, budget_usd_month FROM agent_state") == [(0, 11)]
        # Resumed and woken: the task is worked on again.
        await wait_query(
            config,
            "SELECT count(*) FROM runs WHERE status = 'succeeded' AND agent_id = 'coder'",
            [(1,)],
            timeout=30,
        )

        again = await press(botapi, OWNER, button["callback_data"], message_id)
        assert again.startswith("Already settled: raised by $10.00 by Ana at ")
        assert query(config, "SELECT budget_usd_month FROM agent_state") == [(11,)]
        assert await fleet.stop() == 0
        assert "Traceback" not in fleet.log


async def test_budget_command_sets_a_budget_and_settles_a_pending_stop(
    tmp_path: Path, botapi: BotAPIServer
) -> None:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}) as anthropic:
        config = write_config(
            tmp_path, botapi.base_url, anthropic_base=anthropic.base_url, agents=E2E_AGENTS
        )
        fleet = InProcessFleet(config)
        await fleet.start()
        await botapi.wait_until_polling(timeout=30)
        await insert_spend(config, "coder", "1.50")  # over budget before any call
        anthropic.default = text("Noted.")  # the hub, told that coder is paused; later coder
        botapi.push_message(OPERATOR, "/assign coder Write the changelog")
        [stop] = await botapi.wait_for_call(
            "sendMessage", lambda c: to_feed(c) and "used up" in c.params["text"], timeout=30
        )
        assert asked_by(anthropic, "coder") == []  # no call was made for coder at all

        refused = await ask(botapi, OPERATOR, "/budget coder 50")
        assert refused == "/budget needs the owner role; you are operator."
        assert (await ask(botapi, OWNER, "/budget coder lots")).startswith(
            "lots is not an amount of USD"
        )
        assert (await ask(botapi, OWNER, "/budget coderr 5")).startswith('Unknown agent "coderr".')
        reply = await ask(botapi, OWNER, "/budget coder 1.25")
        assert reply == (
            "Monthly budget of <b>coder</b> set to $1.25 (this month: $1.50 of $1.25, 120%). "
            "It stays paused: this month's spend is not under that budget."
        )
        # The stop's request is settled by the command: the stop says so, without its button.
        await stop_edited(botapi, stop.result["message_id"])
        shown = botapi.message(FEED_CHAT, stop.result["message_id"])
        assert shown is not None and not shown.get("reply_markup")
        assert "✅ Settled by Ana at " in shown["text"]
        assert "(budget set to $1.25 with /budget)" in shown["text"]
        reply = await ask(botapi, OWNER, "/budget coder 50")
        assert reply == (
            "Monthly budget of <b>coder</b> set to $50.00 (this month: $1.50 of $50.00, 3%). "
            "It was paused by its budget and is resumed."
        )
        await wait_query(
            config,
            "SELECT count(*) FROM runs WHERE status = 'succeeded' AND agent_id = 'coder'",
            [(1,)],
            timeout=30,
        )
        assert len(asked_by(anthropic, "coder")) == 1
        # The stop's button is stale now, and says who settled it.
        [[button]] = stop.params["reply_markup"]["inline_keyboard"]
        answer = await press(botapi, OWNER, button["callback_data"], stop.result["message_id"])
        assert answer.startswith("Already settled: settled by Ana at ")
        assert "budget set to $1.25 with /budget" in answer
        assert query(config, "SELECT budget_usd_month, paused FROM agent_state") == [(50, 0)]
        assert await fleet.stop() == 0
        assert "Traceback" not in fleet.log
