"""Model state shared by several nodes (issue 16, item 4), on SQLite and PostgreSQL.

Each "node" is its own `Database` (its own engine and pool, as a separate `fleet run` would
have) and its own `Gateway`, all on one database, calling the local Anthropic server: a 429
or a 401 seen by one node is respected by the others, and concurrent calls for one agent
cannot pass its budget together (each reserves its worst case under a lock first).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from agents.gateway import BudgetExceeded, Gateway, GatewayError, Reply
from agents.prices import MAX_CONTEXT, cost_of, input_bound, worst_case
from bot.config import AgentConfig, Config, Price, load_config
from storage import budget_holds
from storage.db import Database
from storage.models import Approval, BudgetHold, Outbox, Usage, utcnow
from tests import pg
from tests.anthropic_server import AnthropicServer, error, text
from tests.fleet import ANTHROPIC_KEY, TOKEN, write_config
from tests.test_migrations import upgrade_sync

MODEL = "claude-sonnet-4-6"  # $3 / $15 per million tokens
SECONDARY_KEY = "sk-ant-test-secondary-5e4d3c"
BAD_KEY = "sk-ant-test-revoked-1a2b3c"
NO_TELEGRAM = "http://127.0.0.1:9"
NODES = 3

AGENTS = f"""
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "{MODEL}"

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "{MODEL}"
profiles = ["primary", "secondary"]
budget_usd_month = 5

[[agents]]
id = "revoked"
reports_to = "hub"
workspace = "workspaces/revoked"
model = "{MODEL}"
profiles = ["backup", "primary"]
"""

# A request of some 8,000 bytes answered with 2,000 input and 4,000 output tokens: $0.066 a
# call. Its worst case (every byte an input token at the 1-hour cache-write price, and
# 4,096 output tokens) is $0.11.
PROMPT = "Fix the login page. " * 400
CALL_COST = Decimal("0.066")
USAGE = {"input_tokens": 2_000, "output_tokens": 4_000}


@dataclass
class Node:
    db: Database
    gateway: Gateway


@dataclass
class Fleet:
    server: AnthropicServer
    config: Config
    nodes: list[Node]

    def agent(self, agent_id: str) -> AgentConfig:
        return next(a for a in self.config.agents if a.id == agent_id)

    async def call(self, node: int, agent_id: str = "coder") -> Reply:
        return await self.nodes[node].gateway.create(
            self.agent(agent_id),
            run_id=None,
            purpose="turn",
            system="You are coder.",
            messages=[{"role": "user", "content": PROMPT}],
        )

    async def flush(self) -> None:
        for node in self.nodes:
            await node.gateway.flush()

    @property
    def db(self) -> Database:
        return self.nodes[0].db


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
        return
    async with pg.temporary_database("model_state") as url:
        yield url


@pytest.fixture
def extra() -> str:
    """More config (a test parametrizes it to add a [budget] table)."""
    return ""


@pytest.fixture
async def fleet(
    tmp_path: Path, database_url: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Fleet]:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY, SECONDARY_KEY}) as server:
        path = write_config(
            tmp_path,
            NO_TELEGRAM,
            database_url=database_url,
            anthropic_base=server.base_url,
            agents=AGENTS,
            profiles={"secondary": SECONDARY_KEY, "backup": BAD_KEY},
            extra=extra,
        )
        config = load_config(path)
        nodes: list[Node] = []
        for _ in range(NODES):
            db = Database(database_url)
            nodes.append(Node(db, Gateway(config, db)))
        await nodes[0].db.migrate()
        try:
            yield Fleet(server, config, nodes)
        finally:
            for node in nodes:
                await node.gateway.close()
                await node.db.dispose()


async def spent(fleet: Fleet, agent_id: str = "coder") -> Decimal:
    async with fleet.db.session() as session:
        total = await session.execute(
            select(func.sum(Usage.cost_usd)).where(Usage.agent_id == agent_id)
        )
        return Decimal(str(total.scalar_one() or 0))


# -- budgets: exact across nodes --------------------------------------------------------------


async def spend_before(fleet: Fleet, agent_id: str, usd: Decimal) -> None:
    fleet.nodes[0].gateway.record_external(
        fleet.agent(agent_id),
        None,
        purpose="turn",
        model=MODEL,
        profile="primary",
        input_tokens=0,
        output_tokens=0,
        cost=usd,
    )
    await fleet.flush()


# $1 left of coder's $5; and less than a call's cost left, where calls that read the budget
# at once without the lock would all pass it.
@pytest.mark.parametrize("left", [Decimal(1), Decimal("0.05")])
async def test_three_nodes_calling_at_once_with_one_dollar_left_overshoot_by_at_most_one_call(
    fleet: Fleet, left: Decimal
) -> None:
    await spend_before(fleet, "coder", Decimal(5) - left)
    # Slow answers, so that the calls of the three nodes are in flight together.
    fleet.server.script(*(text("ok", usage=USAGE, delay=0.3) for _ in range(60)))

    async def one(i: int) -> Decimal | None:
        try:
            return (await fleet.call(i % NODES)).cost_usd
        except BudgetExceeded:
            return None

    results = await asyncio.gather(*(one(i) for i in range(60)))
    await fleet.flush()

    made = [cost for cost in results if cost is not None]
    assert made and all(cost == CALL_COST for cost in made)
    assert len(fleet.server.requests) == len(made)  # a refused call reaches no server
    total = await spent(fleet)
    assert total == Decimal(5) - left + sum(made, Decimal(0))
    assert total <= Decimal(5) + CALL_COST  # at most one call past the budget
    # (How far short of the budget it ends depends on how many worst-case holds were in
    # flight when the last calls asked: timing, so not asserted.)
    async with fleet.db.session() as session:
        holds = (await session.execute(select(func.count()).select_from(BudgetHold))).scalar()
        approvals = list((await session.execute(select(Approval))).scalars())
        stops = (
            await session.execute(
                select(func.count())
                .select_from(Outbox)
                .where(Outbox.dedup_key.like("budget-stop:%"))
            )
        ).scalar()
    assert holds == 0  # every hold was released with its call's usage row
    # The nodes that found the budget used up made one stop between them.
    assert [a.kind for a in approvals] == ["budget"]
    assert stops == 1


@pytest.mark.parametrize("extra", ["[budget]\nfleet_usd_month = 1\n"])
async def test_the_fleet_budget_holds_across_nodes_and_agents(fleet: Fleet) -> None:
    await spend_before(fleet, "hub", Decimal("0.95"))  # $0.05 of the fleet's $1 left
    fleet.server.script(*(text("ok", usage=USAGE, delay=0.3) for _ in range(40)))

    async def one(i: int) -> Decimal | None:
        try:
            return (await fleet.call(i % NODES, "hub" if i % 2 else "coder")).cost_usd
        except BudgetExceeded as err:
            assert "fleet budget used up" in str(err)
            return None

    results = await asyncio.gather(*(one(i) for i in range(40)))
    await fleet.flush()
    made = [cost for cost in results if cost is not None]
    assert len(fleet.server.requests) == len(made)
    total = await spent(fleet, "coder") + await spent(fleet, "hub")
    assert total == Decimal("0.95") + sum(made, Decimal(0))
    assert made and total <= Decimal(1) + CALL_COST


async def test_a_hold_left_by_a_crash_counts_until_it_expires(fleet: Fleet) -> None:
    fleet.server.script(text("ok", usage=USAGE), text("ok", usage=USAGE))
    now = utcnow()
    async with fleet.db.session() as session:
        # A node died during a call: its $10 hold was never released.
        await budget_holds.hold(session, "coder", Decimal(10), now + timedelta(seconds=1.5))
    with pytest.raises(BudgetExceeded, match="monthly budget used up"):
        await fleet.call(1)
    assert fleet.server.requests == []
    await asyncio.sleep(max(0.0, (now + timedelta(seconds=1.6) - utcnow()).total_seconds()))
    # Expired: the budget is free again, and the next release deletes the hold.
    assert (await fleet.call(2)).cost_usd == CALL_COST
    await fleet.flush()
    async with fleet.db.session() as session:
        assert (await session.execute(select(func.count()).select_from(BudgetHold))).scalar() == 0


# -- cooldowns and rejected keys: seen by every node -------------------------------------------


async def test_a_429_seen_by_one_node_keeps_the_others_off_that_profile_until_it_cools(
    fleet: Fleet,
) -> None:
    fleet.server.script(error(429, retry_after=2), api_key=ANTHROPIC_KEY)
    fleet.server.script(*(text("ok") for _ in range(3)), api_key=SECONDARY_KEY)
    before = utcnow()
    a = await fleet.call(0)
    assert (a.profile, [r.api_key for r in fleet.server.requests]) == (
        "secondary",
        [ANTHROPIC_KEY, SECONDARY_KEY],
    )

    # Node b never saw the 429, yet goes straight to the secondary key.
    b = await fleet.call(1)
    assert b.profile == "secondary"
    assert [r.api_key for r in fleet.server.requests[2:]] == [SECONDARY_KEY]

    # Once the cooldown ends, b uses the primary key again.
    fleet.server.script(text("back"), api_key=ANTHROPIC_KEY)
    until = fleet.nodes[0].gateway.cooling_until((MODEL, "primary"))
    assert until is not None and until >= before + timedelta(seconds=2)
    await asyncio.sleep(max(0.0, (until - utcnow()).total_seconds()) + 0.1)
    again = await fleet.call(1)
    assert again.profile == "primary"
    assert [r.api_key for r in fleet.server.requests[3:]] == [ANTHROPIC_KEY]


async def test_every_pair_cooling_on_another_node_defers_without_a_request(fleet: Fleet) -> None:
    fleet.server.script(error(429, retry_after=30), api_key=ANTHROPIC_KEY)
    fleet.server.script(error(429, retry_after=20), api_key=SECONDARY_KEY)
    with pytest.raises(GatewayError) as on_a:
        await fleet.call(0)
    assert on_a.value.retry_at is not None
    with pytest.raises(GatewayError) as on_b:
        await fleet.call(2)
    assert on_b.value.retry_at == on_a.value.retry_at
    assert len(fleet.server.requests) == 2


async def test_a_key_rejected_on_one_node_is_not_called_by_the_others(fleet: Fleet) -> None:
    fleet.server.script(*(text("ok") for _ in range(2)), api_key=ANTHROPIC_KEY)
    a = await fleet.call(0, "revoked")
    assert a.profile == "primary"
    assert [r.api_key for r in fleet.server.requests] == [BAD_KEY, ANTHROPIC_KEY]

    b = await fleet.call(1, "revoked")
    assert b.profile == "primary"
    assert [r.api_key for r in fleet.server.requests[2:]] == [ANTHROPIC_KEY]
    async with fleet.db.session() as session:
        alerts = list(
            (
                await session.execute(
                    select(Outbox.text).where(Outbox.dedup_key.like("key-rejected:%"))
                )
            ).scalars()
        )
    assert len(alerts) == 1 and "profile <b>backup</b> (401)" in alerts[0]
    assert all(BAD_KEY not in alert for alert in alerts)


# -- the worst case a hold reserves ------------------------------------------------------------


def test_the_worst_case_is_never_below_the_real_cost() -> None:
    rng = random.Random(20261204)
    price = Price(input=3.0, output=15.0)
    custom = Price(input=0.8, output=4.0, cache_write=1.0, cache_read=0.08)
    for _ in range(500):
        content = "x" * rng.randint(1, 50_000)
        max_tokens = rng.randint(1, 64_000)
        bound = input_bound("You are coder.", [{"role": "user", "content": content}], None)
        assert bound >= len(content)
        # However the input splits between plain, cached and cache-written tokens.
        one_hour = rng.randint(0, bound)
        five_min = rng.randint(0, bound - one_hour)
        read = rng.randint(0, bound - one_hour - five_min)
        usage = SimpleNamespace(
            input_tokens=bound - one_hour - five_min - read,
            output_tokens=rng.randint(0, max_tokens),
            cache_creation_input_tokens=one_hour + five_min,
            cache_creation=SimpleNamespace(ephemeral_1h_input_tokens=one_hour),
            cache_read_input_tokens=read,
        )
        for p in (price, custom):
            assert cost_of(p, usage) <= worst_case(p, bound, max_tokens)


def test_the_input_bound_counts_the_blocks_of_earlier_replies_and_is_capped() -> None:
    from anthropic.types import TextBlock

    block = TextBlock(type="text", text="y" * 10_000, citations=None)
    messages = [{"role": "assistant", "content": [block]}, {"role": "user", "content": "go"}]
    assert input_bound("", messages, None) > 10_000
    assert input_bound("z" * (MAX_CONTEXT + 10), [], None) == MAX_CONTEXT


# -- the upgrade keeps the keys rejected before it ----------------------------------------------


def test_keys_rejected_before_the_upgrade_stay_rejected(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    upgrade_sync(f"sqlite:///{path}", "0016_pipelines")
    with closing(sqlite3.connect(path)) as conn, conn:
        for key in ("key-rejected:backup:0123456789abcdef", "price-unknown:m:2026-12-01"):
            conn.execute(
                "INSERT INTO outbox (chat_id, text, dedup_key, status, attempts,"
                " next_attempt_at, parts_sent, sent_message_ids, created_at)"
                " VALUES (-1, 'alert', ?, 'sent', 1, '2026-12-01 10:00:00', 1, '[]',"
                " '2026-12-01 10:00:00')",
                (key,),
            )
    upgrade_sync(f"sqlite:///{path}", "head")
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT profile, model, rejected_key FROM profile_state").fetchall()
    assert rows == [("backup", "", "0123456789abcdef")]
