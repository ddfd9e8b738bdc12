"""How fast a Stop press ends a run in flight.

Run from the repository root::

    python benchmarks/stop.py [--rounds 5]

It starts the local Bot API and Messages API servers (tests/) and the real `fleet run`, with an
agent whose every model reply takes 2 s and asks for another tool call (it would loop until
`max_turns`). Each round assigns it a task, waits until a model call is in flight, presses the
Stop button on the run's line in the activity feed, and measures:

- **answer**: the press to the answer of the callback query (the stop request committed);
- **last request**: the last model request the server received, relative to the press (≤ 0:
  none came after it; the target is ≤ 1 s);
- **cancelled**: the press to the run's row saying `cancelled` (the model call abandoned).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the repository root on sys.path)

from tests.anthropic_server import AnthropicServer, tool_use
from tests.botapi_server import BotAPIServer
from tests.fleet import (
    ACTIVITY_TOPIC,
    ANTHROPIC_KEY,
    FEED_CHAT,
    OPERATOR,
    TOKEN,
    FleetProcess,
    query,
    write_config,
)

AGENTS = """
[[agents]]
id = "hub"
hub = true
workspace = "workspaces/hub"
model = "claude-sonnet-4-6"

[[agents]]
id = "coder"
reports_to = "hub"
workspace = "workspaces/coder"
model = "claude-haiku-4-5"
authority = ["comment"]
"""


async def until(done: Callable[[], bool]) -> None:
    """Poll `done` (state in another process or server: nothing to wait on) for 30 s."""
    async with asyncio.timeout(30):
        while not done():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def one_round(
    n: int, fleet: FleetProcess, botapi: BotAPIServer, anthropic: AnthropicServer
) -> tuple[float, float, float]:
    anthropic.script(
        *(tool_use("comment", {"text": f"step {i}"}, delay=2.0) for i in range(10)),
        model="claude-haiku-4-5",
    )
    before = len(anthropic.requests)
    after = botapi.mark()
    botapi.push_message(OPERATOR, f"/assign coder Loop {n}")
    [line] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params.get("message_thread_id") == ACTIVITY_TOPIC and "reply_markup" in c.params
        ),
        after=after,
        timeout=30,
    )
    await until(lambda: len(anthropic.requests) > before)  # a model call is in flight
    await asyncio.sleep(0.5)
    data = line.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    run_id = int(data.rsplit(":", 1)[1])
    pressed = time.monotonic()
    mark = botapi.mark()
    query_id = botapi.push_callback(
        OPERATOR, data, message_id=line.result["message_id"], chat_id=FEED_CHAT
    )
    [answer] = await botapi.wait_for_call(
        "answerCallbackQuery",
        lambda c: c.params["callback_query_id"] == query_id,
        after=mark,
        timeout=30,
    )
    await until(
        lambda: (
            query(fleet.config, "SELECT status FROM runs WHERE id = ?", run_id) == [("cancelled",)]
        )
    )
    cancelled = time.monotonic() - pressed
    await asyncio.sleep(2.5)  # a request that would still come
    last = max(r.at for r in anthropic.requests) - pressed
    anthropic.reset()
    return answer.at - pressed, last, cancelled


async def benchmark(rounds: int) -> int:
    with tempfile.TemporaryDirectory() as folder:
        async with (
            BotAPIServer(TOKEN) as botapi,
            AnthropicServer(valid_keys={ANTHROPIC_KEY}) as anthropic,
        ):
            config = write_config(
                Path(folder), botapi.base_url, anthropic_base=anthropic.base_url, agents=AGENTS
            )
            fleet = FleetProcess(config)
            await fleet.start()
            try:
                await botapi.wait_until_polling(timeout=60)
                results = [await one_round(n, fleet, botapi, anthropic) for n in range(rounds)]
            finally:
                await fleet.stop()
    print(f"{'round':>5} {'answer s':>9} {'last request s':>15} {'cancelled s':>12}")
    for n, (answer, last, cancelled) in enumerate(results):
        print(f"{n:>5} {answer:>9.3f} {last:>15.3f} {cancelled:>12.3f}")
    worst = max(last for _, last, _ in results)
    print(
        f"median answer {statistics.median(r[0] for r in results):.3f} s, "
        f"median cancelled {statistics.median(r[2] for r in results):.3f} s, "
        f"latest model request {worst:+.3f} s after the press (target ≤ 1 s)"
    )
    return 0 if worst <= 1.0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    return asyncio.run(benchmark(parser.parse_args().rounds))


if __name__ == "__main__":
    sys.exit(main())
