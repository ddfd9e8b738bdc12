"""Approvals and deploys end to end: the real `fleet run` against the local Bot API server,
a deploy command that is a real process, and a local HTTP server to verify against."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents import tools
from bot.middlewares import NOT_ON_MESSAGE
from storage import tasks
from tests.botapi_server import BotAPIServer, Call
from tests.fleet import (
    FEED_CHAT,
    OPERATOR,
    OWNER,
    TOKEN,
    VIEWER,
    FleetProcess,
    ask,
    fleet_env,
    press,
    query,
    request_action,
    wait_query,
    write_config,
)
from tests.inproc import Fleet, InProcessFleet
from tests.test_approvals import GATED_SCRIPT, SECOND_OWNER, Env, Site, load_env, tool_context


@pytest.fixture
def config(tmp_path: Path, botapi: BotAPIServer, site: Site) -> Path:
    """The fleet with Dee as a second owner and the deploy target `site`: its command writes
    "v2" once the test writes tmp_path/release, its rollback "v1"."""
    script = tmp_path / "gated.py"
    script.write_text(GATED_SCRIPT, encoding="utf-8")
    state, runs, gate = tmp_path / "state", tmp_path / "runs.log", tmp_path / "release"
    args = f"{state} {{}} {runs} {gate}"
    extra = f"""
[[people]]
telegram_id = {SECOND_OWNER}
name = "Dee"
role = "owner"

[[deploys]]
id = "site"
command = "{sys.executable} {script} {args.format("v2")}"
rollback = "{sys.executable} {script} {args.format("v1")}"
verify = ["{site.url}"]
verify_text = "site"
verify_attempts = 2
verify_interval = "1s"
"""
    return write_config(tmp_path, botapi.base_url, extra=extra)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with Site(tmp_path / "state") as server:
        yield server


async def ask_in_reply(botapi: BotAPIServer, user: int, text: str, to: Call) -> str:
    """Send `text` as `user` in reply to the bot's message `to`; returns the bot's next
    message to that chat."""
    chat_id = to.params["chat_id"]
    after = botapi.mark()
    botapi.push_message(
        user,
        text,
        chat_id=None if chat_id == user else chat_id,
        reply_to=to.result["message_id"],
    )
    [sent] = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == chat_id, after=after, timeout=15
    )
    return str(sent.params["text"])


async def start_fleet(config: Path, botapi: BotAPIServer, *, real: bool = False) -> Fleet:
    """The fleet in the test's process; `real`: a `fleet run` process (to kill -9)."""
    fleet = FleetProcess(config) if real else InProcessFleet(config)
    await fleet.start()
    await botapi.wait_until_polling(timeout=30)
    return fleet


async def stop_cleanly(fleet: Fleet) -> None:
    """SIGTERM, as a service manager stops the fleet: it must exit 0, with no traceback."""
    assert await fleet.stop() == 0
    assert "Traceback" not in fleet.log


@pytest.fixture
async def env(config: Path, site: Site, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    """The fleet's configuration and database, for a test to fill in before it starts the fleet."""
    for name, value in fleet_env().items():
        monkeypatch.setenv(name, value)
    environment = await load_env(config, site)
    yield environment
    await environment.db.dispose()


def to_feed(call: Call) -> bool:
    return bool(call.params.get("chat_id") == FEED_CHAT)


async def posted_approval(
    botapi: BotAPIServer, approval_id: int, chat_id: int = FEED_CHAT
) -> Call:
    """The approval's message in the feed (or a private copy in `chat_id`)."""
    [call] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: (
            c.params["chat_id"] == chat_id and f"Approval #{approval_id}</b>" in c.params["text"]
        ),
        timeout=15,
    )
    return call


async def test_an_owner_who_asks_for_a_deploy_in_private_decides_it_there(
    tmp_path: Path, botapi: BotAPIServer, config: Path
) -> None:
    fleet = await start_fleet(config, botapi)
    # An operator may not decide a deploy: the request goes to the feed only.
    reply = await ask(botapi, OPERATOR, "/deploy site v2")
    assert reply.endswith("posted to the approvals feed.")
    await posted_approval(botapi, 1)
    # One deploy of a target at a time: the owner settles the first request before asking.
    assert (await ask(botapi, OWNER, "/reject 1 not this one")).startswith("Rejected #1")

    # An owner may: her private chat gets the request with its buttons too.
    after = botapi.mark()
    botapi.push_message(OWNER, "/deploy site v3")
    sent = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OWNER, after=after, count=2, timeout=15
    )
    [confirmation] = [c for c in sent if "requested" in c.params["text"]]
    assert confirmation.params["text"].endswith(
        "You may decide it here too: the request is posted in this chat as well."
    )
    [copy] = [c for c in sent if "Approval #2</b>" in c.params["text"]]
    [row] = copy.params["reply_markup"]["inline_keyboard"]
    assert [b["callback_data"] for b in row] == ["ap:y:2", "ap:n:2", "ap:d:2"]
    posted = await posted_approval(botapi, 2)

    # A press there is checked like one in the group, answered, and both messages show it.
    assert await press(botapi, OPERATOR, "ap:y:2", copy.result["message_id"]) == (
        "Deploys need an owner."
    )
    answer = await press(botapi, OWNER, "ap:y:2", copy.result["message_id"], chat_id=OWNER)
    assert answer == "Approved #2: the deploy is queued."
    shown = [(OWNER, copy.result["message_id"]), (FEED_CHAT, posted.result["message_id"])]
    edits = await botapi.wait_for_call(
        "editMessageText",
        lambda c: (
            (c.params["chat_id"], c.params["message_id"]) in shown
            and "✅ Approved by Ana" in c.params["text"]
        ),
        count=2,
        timeout=15,
    )
    assert sorted((c.params["chat_id"], c.params["message_id"]) for c in edits) == sorted(shown)
    (tmp_path / "release").write_text("go")
    await wait_query(
        config, "SELECT approval_id, status FROM deploy_runs", [(2, "succeeded")], timeout=30
    )
    await stop_cleanly(fleet)


async def test_an_owner_approves_a_deploy_which_runs_once_and_is_verified(
    tmp_path: Path, botapi: BotAPIServer, config: Path
) -> None:
    fleet = await start_fleet(config, botapi)

    reply = await ask(botapi, OPERATOR, "/deploy site v2")
    assert reply == (
        "Deploy of <b>site</b> at v2 requested: approval #1, posted to the approvals feed."
    )
    posted = await posted_approval(botapi, 1)
    message_id = posted.result["message_id"]
    assert (
        "deploy site at v2" in posted.params["text"]
        and "Requested by Ben" in posted.params["text"]
    )
    [row] = posted.params["reply_markup"]["inline_keyboard"]
    approve, reject, details = (button["callback_data"] for button in row)
    assert (approve, reject, details) == ("ap:y:1", "ap:n:1", "ap:d:1")

    # Refused presses change nothing.
    viewer = await press(botapi, VIEWER, approve, message_id)
    assert viewer == "This action needs the operator role; you are viewer."
    assert await press(botapi, OPERATOR, approve, message_id) == "Deploys need an owner."
    forgeries = ("ap:y:zz", "ap:y:424242", "ap:", "ap:y:1:extra", "ap:x:1", "ap:d:99999999999")
    for forged in (*forgeries, "ap:n:-1", "ap:y:" + "9" * 40):
        answer = await press(botapi, OWNER, forged, message_id)
        assert answer == NOT_ON_MESSAGE, forged
    assert f"refused a press with data 'ap:y:zz' that is not on message {message_id}" in fleet.log
    shown = await press(botapi, VIEWER, details, message_id)
    assert shown.startswith("#1 deploy: deploy site at v2 · pending · requested by Ben")
    assert query(config, "SELECT status FROM approvals") == [("pending",)]
    assert query(config, "SELECT count(*) FROM deploy_runs") == [(0,)]

    # Two owners press at the same instant: one decision, one deploy.
    after = botapi.mark()
    ids = [
        botapi.push_callback(user, approve, message_id=message_id, chat_id=FEED_CHAT)
        for user in (OWNER, SECOND_OWNER)
    ]
    answers = await botapi.wait_for_call(
        "answerCallbackQuery",
        lambda c: c.params["callback_query_id"] in ids,
        after=after,
        count=2,
        timeout=15,
    )
    refused, approved = sorted(str(a.params["text"]) for a in answers)
    assert approved == "Approved #1: the deploy is queued."
    assert refused.startswith("Already approved by ")
    [(decider,)] = query(config, "SELECT decided_by FROM approvals")
    assert decider in (f"person:{OWNER}", f"person:{SECOND_OWNER}")

    # The message shows the decision, without buttons, and only what still applies: no one
    # decides any more and the deadline is gone. Times say their zone (Europe/Amsterdam).
    assert "Decides: an owner" in posted.params["text"]
    assert re.search(r"Deadline: (\d+ \w{3} )?\d\d:\d\d CES?T", posted.params["text"])
    [edit] = await botapi.wait_for_call(
        "editMessageText",
        lambda c: c.params["message_id"] == message_id and "✅ Approved by" in c.params["text"],
        timeout=15,
    )
    assert "Decides:" not in edit.params["text"] and "Deadline:" not in edit.params["text"]
    assert re.search(r"✅ Approved by \w+ at \d\d:\d\d CES?T", edit.params["text"])
    edited = botapi.message(FEED_CHAT, message_id)
    assert edited is not None and not edited.get("reply_markup")

    # The deploy is in progress (waiting for its gate); commands are answered meanwhile.
    await wait_query(config, "SELECT status FROM deploy_runs", [("running",)])
    assert await ask(botapi, OPERATOR, "/approvals") == "No approvals are pending."
    (tmp_path / "release").write_text("go")
    [report] = await botapi.wait_for_call(
        "sendMessage", lambda c: to_feed(c) and "Deploy run #1" in c.params["text"], timeout=30
    )
    assert "of site at v2: ✅ verified" in report.params["text"]
    assert report.params["reply_parameters"]["message_id"] == message_id
    assert query(config, "SELECT status FROM deploy_runs") == [("succeeded",)]
    assert (tmp_path / "runs.log").read_text().split() == ["v2"]

    audit = await ask(botapi, OPERATOR, "/audit")
    assert "#1 request by Ben: deploy site at v2" in audit
    assert "#1 decision by " in audit and "run #1 site succeeded (approval #1" in audit
    assert await ask(botapi, VIEWER, "/audit") == "/audit needs the operator role; you are viewer."
    await stop_cleanly(fleet)
    assert TOKEN not in fleet.log


async def test_reject_asks_for_a_reason_and_text_commands_work(
    tmp_path: Path, botapi: BotAPIServer, config: Path
) -> None:
    fleet = await start_fleet(config, botapi)

    await ask(botapi, OWNER, "/deploy site")
    posted = await posted_approval(botapi, 1)
    await posted_approval(botapi, 1, chat_id=OWNER)  # Ana may decide: a copy in her chat
    message_id = posted.result["message_id"]
    after = botapi.mark()
    assert await press(botapi, OWNER, "ap:n:1", message_id) == "Reply with the reason to reject."
    [prompt] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: to_feed(c) and "reason for rejecting" in c.params["text"],
        after=after,
    )
    assert prompt.params["text"] == (
        f'<a href="tg://user?id={OWNER}">Ana</a>: reason for rejecting approval #1? '
        "Reply to this message."
    )
    assert prompt.params["reply_markup"]["force_reply"] is True
    assert prompt.params["reply_markup"]["selective"] is True
    # Only Ana's reply to her prompt rejects: Dee's reply to it is an ordinary message (here a
    # command, answered as one; before, it was taken for a reason and refused).
    listing = await ask_in_reply(botapi, SECOND_OWNER, "/approvals", prompt)
    assert listing.startswith("Pending approvals:\n#1 deploy")
    after = botapi.mark()
    botapi.push_message(
        OWNER, "Not on a Friday", chat_id=FEED_CHAT, reply_to=prompt.result["message_id"]
    )
    [answer] = await botapi.wait_for_call(
        "sendMessage", lambda c: to_feed(c) and "#1" in c.params["text"], after=after, timeout=15
    )
    assert answer.params["text"] == "Rejected #1."
    await botapi.wait_for_call(
        "editMessageText",
        lambda c: (
            c.params["message_id"] == message_id
            and "❌ Rejected by Ana at " in c.params["text"]
            and "Not on a Friday" in c.params["text"]
        ),
        timeout=15,
    )
    assert query(config, "SELECT status, reason FROM approvals") == [
        ("rejected", "Not on a Friday")
    ]
    again = await press(botapi, SECOND_OWNER, "ap:y:1", message_id)
    assert again.startswith("Already rejected by Ana at ")

    # The text fallbacks.
    await ask(botapi, OWNER, "/deploy site")
    await posted_approval(botapi, 2)
    await posted_approval(botapi, 2, chat_id=OWNER)
    assert await ask(botapi, OWNER, "/reject 2") == "Usage: /reject &lt;id&gt; &lt;reason&gt;"
    assert await ask(botapi, OPERATOR, "/reject 2 nope") == "Deploys need an owner."
    assert await ask(botapi, VIEWER, "/approve 2") == (
        "/approve needs the operator role; you are viewer."
    )
    assert await ask(botapi, OWNER, "/approve 99") == "There is no approval #99."
    assert await ask(botapi, OWNER, "/approve 4294967296") == ("There is no approval #4294967296.")
    assert (await ask(botapi, OWNER, "/deploy nowhere")).startswith(
        'Unknown deploy target "nowhere". Targets: site.'
    )
    assert (await ask(botapi, OWNER, "/deploy site $(reboot)")).startswith(
        "$(reboot) is not a commit, tag or version"
    )
    listing = await ask(botapi, VIEWER, "/approvals")
    assert listing.startswith("Pending approvals:\n#2 deploy: deploy site (Ana, deadline ")
    assert await ask(botapi, OWNER, "/approve 2") == "Approved #2: the deploy is queued."
    (tmp_path / "release").write_text("go")
    await wait_query(config, "SELECT id, status FROM deploy_runs", [(1, "succeeded")], timeout=30)
    await stop_cleanly(fleet)


async def test_a_deploy_cut_off_by_a_crash_is_reported_interrupted_and_not_rerun(
    tmp_path: Path, botapi: BotAPIServer, config: Path
) -> None:
    fleet = await start_fleet(config, botapi, real=True)
    await ask(botapi, OWNER, "/deploy site v2")
    await posted_approval(botapi, 1)
    assert await ask(botapi, OWNER, "/approve 1") == "Approved #1: the deploy is queued."
    await wait_query(config, "SELECT status FROM deploy_runs", [("running",)])
    await fleet.kill()  # the deploy process is left waiting at its gate, never released

    again = InProcessFleet(config)
    await again.start()
    [report] = await botapi.wait_for_call(
        "sendMessage", lambda c: to_feed(c) and "was interrupted" in c.params["text"], timeout=30
    )
    assert "Deploy run #1 was interrupted" in report.params["text"]
    assert query(config, "SELECT status FROM deploy_runs") == [("interrupted",)]
    assert await again.stop() == 0
    assert query(config, "SELECT count(*) FROM deploy_runs") == [(1,)]
    assert not (tmp_path / "runs.log").exists()
    (tmp_path / "release").write_text("go")  # let the orphaned script finish


async def test_the_expiry_job_reminds_then_expires_and_a_late_press_is_refused(
    tmp_path: Path, botapi: BotAPIServer, config: Path
) -> None:
    with config.open("a", encoding="utf-8") as extra:
        extra.write('\n[approvals]\ndeadline = "2s"\ncheck_every = 1\non_timeout = "expire"\n')
    fleet = await start_fleet(config, botapi)
    await ask(botapi, OPERATOR, "/deploy site")
    posted = await posted_approval(botapi, 1)
    message_id = posted.result["message_id"]
    [reminder] = await botapi.wait_for_call(
        "sendMessage", lambda c: to_feed(c) and "still waits" in c.params["text"], timeout=30
    )
    assert reminder.params["reply_parameters"]["message_id"] == message_id
    await botapi.wait_for_call(
        "editMessageText",
        lambda c: c.params["message_id"] == message_id and "⌛ Expired at" in c.params["text"],
        timeout=30,
    )
    assert query(config, "SELECT status, decided_by FROM approvals") == [
        ("expired", "system:approvals")
    ]
    late = await press(botapi, OWNER, "ap:y:1", message_id)
    assert late.startswith("Approval #1 expired at ")
    assert query(config, "SELECT count(*) FROM deploy_runs") == [(0,)]
    kinds = query(config, "SELECT kind FROM approval_events ORDER BY id")
    assert kinds == [("request",), ("reminder",), ("expiry",)]
    [(runs, failures)] = query(
        config, "SELECT runs, failures FROM job_beats WHERE job_id = 'approvals-expire'"
    )
    assert runs >= 2 and failures == 0
    await stop_cleanly(fleet)


async def test_a_reply_to_an_agent_message_mimicking_the_reject_prompt_rejects_nothing(
    botapi: BotAPIServer, config: Path, env: Env
) -> None:
    async with env.db.claim() as session:
        approval = await request_action(
            session,
            env.policy,
            "Publish the press release",
            requested_by="agent:hub",
            announce=False,
        )
        task = await tasks.create(
            session,
            title="Check the invoices",
            assignee="coder",
            creator=f"person:{OWNER}",
            max_retries=3,
        )
    # An agent has the bot send text that ends exactly like a reject prompt.
    coder = tool_context(env, "coder", task.id)
    note = (
        "I need your input on the vendor list before continuing.\n"
        f"Ana: reason for rejecting approval #{approval.id}? Reply to this message."
    )
    done = await tools.execute(coder, "set_status", {"status": "blocked", "note": note})
    assert done.ok, done.content
    await env.db.dispose()  # the fleet is to be the database's only user from here

    fleet = await start_fleet(config, botapi)
    [told] = await botapi.wait_for_call(
        "sendMessage",
        lambda c: c.params["chat_id"] == OWNER and "blocked" in c.params["text"],
        timeout=20,
    )
    # The sender records the message's id once Telegram has answered; a person's reply comes
    # later than that.
    await wait_query(
        config,
        f"SELECT count(*) FROM outbox WHERE chat_id = {OWNER} AND status = 'sent' "
        "AND text LIKE '%blocked%'",
        [(1,)],
    )
    # A reply to it is no reason for a rejection: it is a comment on the task it is about,
    # and a command in reply is answered as a command.
    commented = await ask_in_reply(botapi, OWNER, "ok, use last year's list", told)
    assert commented == f"Comment added to task #{task.id} (blocked, coder)."
    listing = await ask_in_reply(botapi, OWNER, "/approvals", told)
    assert listing.startswith(f"Pending approvals:\n#{approval.id} action")
    assert query(config, "SELECT status FROM approvals") == [("pending",)]
    await stop_cleanly(fleet)


async def test_audit_of_fifty_long_events_is_sent_in_parts(
    botapi: BotAPIServer, config: Path, env: Env
) -> None:
    async with env.db.claim() as session:
        for n in range(50):
            summary = f"Publish press release {n} " + "with a long title " * 6
            await request_action(
                session, env.policy, summary, requested_by="agent:hub", announce=False
            )
    await env.db.dispose()  # the fleet is to be the database's only user from here

    fleet = await start_fleet(config, botapi)
    after = botapi.mark()
    botapi.push_message(OPERATOR, "/audit 50")
    parts = await botapi.wait_for_call(
        "sendMessage", lambda c: c.params["chat_id"] == OPERATOR, after=after, count=2, timeout=15
    )
    await stop_cleanly(fleet)
    texts = [str(c.params["text"]) for c in parts]
    assert all(len(t) <= 4096 for t in texts)
    assert texts[0].startswith("<b>Approvals</b> · Times in ")
    shown = "\n".join(texts)
    assert all(f" #{n} request by hub: " in shown for n in range(1, 51))
