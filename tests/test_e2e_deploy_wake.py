"""An agent's deploy end to end (the real `fleet run`, the local Bot API and Messages API servers,
a real deploy process): the agent is woken once, by the deploy's report and not by the
approval; a second request for the same target while one is pending or running is refused,
naming it; the approval message shows each step as it runs."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.anthropic_server import AnthropicServer, text, tool_use
from tests.botapi_server import BotAPIServer
from tests.fleet import (
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    OWNER,
    ask,
    press,
    query,
    wait_query,
    write_config,
)
from tests.inproc import InProcessFleet
from tests.test_approvals import GATED_SCRIPT, Site
from tests.test_e2e_review import AGENTS, CODER

DEPLOYER = AGENTS.replace(
    'authority = ["comment", "subtask"]', 'authority = ["comment", "request_deploy"]'
)


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer(valid_keys={ANTHROPIC_KEY}) as server:
        yield server


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with Site(tmp_path / "state") as server:
        yield server


def coder_runs(config: Path) -> list[tuple[int, str]]:
    return query(
        config, "SELECT id, status FROM runs WHERE agent_id = 'coder' AND turns > 0 ORDER BY id"
    )


async def test_the_requester_is_woken_once_by_the_report_and_a_second_request_is_refused(
    tmp_path: Path, botapi: BotAPIServer, anthropic: AnthropicServer, site: Site
) -> None:
    script = tmp_path / "gated.py"
    script.write_text(GATED_SCRIPT, encoding="utf-8")
    state, runs, gate = tmp_path / "state", tmp_path / "runs.log", tmp_path / "release"
    args = f"{state} v2 {runs} {gate}"
    config = write_config(
        tmp_path,
        botapi.base_url,
        anthropic_base=anthropic.base_url,
        agents=DEPLOYER,
        extra=f"""
[[deploys]]
id = "site"
command = "{sys.executable} {script} {args}"
verify = ["{site.url}"]
verify_text = "site"
""",
    )
    deploy = {"target": "site", "ref": "v2", "reason": "ship the fix"}
    anthropic.script(
        tool_use("request_deploy", deploy),
        tool_use("request_deploy", {**deploy, "ref": "v3"}),  # another one at once: refused
        text("Waiting for the deploy's report."),
        model=CODER,
    )
    fleet = InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    botapi.push_message(OPERATOR, "/assign coder Ship the login fix")
    [posted] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == FEED_CHAT and "Approval #1</b>" in c.params["text"],
        timeout=30,
    )
    await wait_query(config, "SELECT status FROM runs WHERE turns > 0", [("succeeded",)])
    refusal = anthropic.requests_for(model=CODER)[2].body["messages"][-1]["content"][0]
    assert refusal["is_error"] is True
    assert refusal["content"] == (
        "refused: approval #1 for a deploy of site is pending; "
        "wait for its report instead of asking again"
    )
    assert await ask(botapi, OPERATOR, "/deploy site") == (
        "Not requested: approval #1 for a deploy of site is pending. Wait for its report."
    )

    # Approved: the agent is not woken by the decision; the deploy runs.
    anthropic.script(text("The deploy is verified; closing up."), model=CODER)
    message_id = posted.result["message_id"]
    assert await press(botapi, OWNER, "ap:y:1", message_id) == "Approved #1: the deploy is queued."
    await wait_query(config, "SELECT status FROM deploy_runs", [("running",)])
    await botapi.wait_for_call(
        "editMessageText",
        lambda c: c.params["message_id"] == message_id and "⏳ command…" in c.params["text"],
        timeout=15,
    )
    assert (await ask(botapi, OPERATOR, "/deploy site")).startswith(
        "Not requested: deploy run #1 of site (approval #1) is running."
    )
    await asyncio.sleep(1.5)  # a wake by the approval would have started a run by now
    assert len(coder_runs(config)) == 1
    assert query(
        config, "SELECT count(*) FROM runs WHERE agent_id = 'coder' AND status = 'queued'"
    ) == [(0,)]

    # The report wakes it, once; its prompt holds the report.
    released = time.monotonic()
    gate.write_text("go")
    await botapi.wait_for_call(
        "editMessageText",
        lambda c: c.params["message_id"] == message_id and "✅ verify" in c.params["text"],
        timeout=30,
    )
    await wait_query(config, "SELECT status FROM deploy_runs", [("succeeded",)])
    deadline = time.monotonic() + 20
    while len(anthropic.requests_for(model=CODER)) < 4:
        assert time.monotonic() < deadline, "the report did not wake the agent"
        await asyncio.sleep(0.05)
    woken = anthropic.requests_for(model=CODER)[3]
    assert woken.at > released
    assert "Deploy run #1 of site at v2: ✅ verified" in str(woken.body["messages"][0]["content"])
    await wait_query(
        config,
        "SELECT status FROM runs WHERE agent_id = 'coder' AND turns > 0 ORDER BY id",
        [("succeeded",), ("succeeded",)],
    )
    await asyncio.sleep(1.0)
    assert len(coder_runs(config)) == 2
    assert len(anthropic.requests_for(model=CODER)) == 4
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log
