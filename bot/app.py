"""Assembles and runs the process: `fleet run`.

A little over 400 lines: the assembly is the one place that knows every part (what is built,
in which order, what each node runs and what only the leader runs, and the order of shutdown),
and reads best as one sequence; each part's own work lives in its module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import time
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.exceptions import TelegramAPIError, TelegramUnauthorizedError
from aiogram.types import BotCommand, BotCommandScopeChat, BotCommandScopeDefault
from sqlalchemy.engine import URL, make_url

from agents import coding_queue
from agents.commands import ExecWorker
from agents.gateway import Gateway
from agents.heartbeats import heartbeat_seconds
from agents.pipelines import PipelineWorker
from agents.runtime import Runtime
from agents.triage import Triage
from bot.alerting import Alerting
from bot.config import Config, Role
from bot.config_watch import ConfigWatch, save_last_good
from bot.leader import Leadership, lead, prune_ledgers
from bot.middlewares import (
    AuthMiddleware,
    CleanText,
    DbSessionMiddleware,
    InFlight,
    PressedButtonCheck,
    RoleMiddleware,
)
from bot.node import keep_node_alive, register_node, with_role
from bot.pacing import MARGIN, Pacer
from bot.poller_lock import AdvisoryLock, LockHeld, poller_lock
from bot.polling import PollingSupervisor, PollMonitor, TelegramTokenRejected
from bot.redact import Redactor
from bot.scheduler import JobFailed, Scheduler
from bot.sender import Sender
from bot.telegram import make_bot
from bot.update_ledger import Receiver, UpdateLedger
from bot.views.text import esc
from bot.watchdog import Watchdog
from bot.web.server import WebServer, WebState
from handlers import get_routers
from handlers.registry import commands_for
from integrations.deploy import DeployWorker
from integrations.publish import PublishWorker
from storage import budget_requests, deploys, incident_gates, nodes, outbox, publications
from storage import exec as exec_runs
from storage.approval_kinds import Kinds, Told
from storage.approval_policy import ApprovalPolicy
from storage.approval_sweep import sweep as sweep_approvals
from storage.db import Database
from storage.status import SummaryCache

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_LOCKED = 3
EXIT_TOKEN = 4

SHUTDOWN_GRACE = 10.0
TRIAGE_TICK_SECONDS = 60  # snoozes wake and the daily digest goes out within a minute


def approval_kinds(config: Config) -> Kinds:
    """What a settled approval does, each kind's effect given by the module that owns it."""
    budgets = {agent.id: agent.budget_usd_month for agent in config.agents}
    return Kinds(
        [
            deploys.DEPLOY,
            budget_requests.BudgetKind(budgets),
            incident_gates.INCIDENT_P0,
            exec_runs.EXEC,
            publications.PUBLISH,
            Told("action"),
        ]
    )


def shared_by_nodes(db: Database) -> bool:
    """Several `fleet run` may share this database (PostgreSQL): updates go through the
    update ledger (bot.update_ledger), which a single SQLite process does without."""
    return not db.is_sqlite


def make_dispatcher(
    config: Config, db: Database, in_flight: InFlight, **services: object
) -> Dispatcher:
    """Handlers receive `config`, `db`, `routers` and each of `services` by naming them. The
    routers are built afresh (see handlers.registry.Routes), so one process may assemble more
    than one Dispatcher (the in-process fleets of the tests do)."""
    routers = get_routers()
    dp = Dispatcher()
    dp.workflow_data.update(config=config, db=db, routers=routers, **services)
    dp.update.outer_middleware(in_flight)
    if shared_by_nodes(db):
        # The ledger takes each update in its session, before AuthMiddleware may refuse it: a
        # refused update is handled too, and must not be handled again after a takeover.
        dp.update.outer_middleware(DbSessionMiddleware())
        dp.update.outer_middleware(UpdateLedger(config.node.name))
        dp.update.outer_middleware(AuthMiddleware())
    else:
        # One process owns a SQLite database: no takeover to survive, so no ledger, and a
        # stranger's update is dropped before it costs a session.
        dp.update.outer_middleware(AuthMiddleware())
        dp.update.outer_middleware(DbSessionMiddleware())
    dp.message.outer_middleware(CleanText())
    dp.message.middleware(RoleMiddleware())
    dp.callback_query.middleware(PressedButtonCheck())
    dp.callback_query.middleware(RoleMiddleware())
    dp.include_routers(*routers)
    return dp


async def register_commands(bot: Bot, config: Config, routers: list[Router]) -> None:
    """Each person sees the commands of their role in Telegram's menu; strangers see few."""

    def menu(role: Role) -> list[BotCommand]:
        return [
            BotCommand(command=spec.name, description=spec.help[:256])
            for spec in commands_for(routers, role)
        ]

    await bot.set_my_commands(
        [c for c in menu(Role.viewer) if c.command in {"start", "help", "whoami"}],
        scope=BotCommandScopeDefault(),
    )
    for person in config.people:
        try:
            await bot.set_my_commands(
                menu(person.role), scope=BotCommandScopeChat(chat_id=person.telegram_id)
            )
        except TelegramAPIError as err:
            # Telegram refuses a chat scope until the person has opened a chat with the bot.
            log.info("command menu for %s not set yet: %s", person.name, err.message)


def startup_summary(config: Config) -> str:
    """The one line that says what started: the config, the database without credentials,
    and what the fleet runs."""
    url = make_url(config.database.url)
    if url.get_backend_name() != "sqlite":
        # No user, password or query (a password may hide there too).
        url = URL.create(url.drivername, host=url.host, port=url.port, database=url.database)
    database = url.render_as_string(hide_password=True)
    feeds = ", ".join(name for name, _ in config.feeds.items()) or "none"

    def count(items: list[Any], one: str, many: str) -> str:
        return f"{len(items)} {one if len(items) == 1 else many}"

    return (
        f"started: config {config.path.resolve()}, database {database}, "
        f"{count(config.agents, 'agent', 'agents')}, {count(config.checks, 'check', 'checks')}, "
        f"{count(config.mailboxes, 'mailbox', 'mailboxes')}, feeds: {feeds}"
    )


async def run_fleet(config: Config, *, stop: asyncio.Event | None = None) -> int:
    """`fleet run`: until SIGINT or SIGTERM. With `stop`, until it is set instead, and
    without the process-wide settings (signal handlers, a frozen garbage collector): the
    tests run fleets inside their own process this way (tests/inproc.py)."""
    db = Database(config.database.url)
    db.redact_with(Redactor(config.secret_values()))
    lock = poller_lock(
        db, config.telegram.token.get_secret_value(), config.sqlite_path(), config.path
    )
    # On PostgreSQL a second node starts as a standby and takes the lock when it is free
    # (bot.leader); on SQLite a second process refuses to start.
    shared = lock if isinstance(lock, AdvisoryLock) else None
    if shared is None:
        try:
            await lock.acquire()
        except LockHeld as err:
            log.error("%s", err)
            await db.dispose()
            return EXIT_LOCKED
    try:
        await db.migrate()
        try:
            # Every node starts as a standby on PostgreSQL; the lock makes one the leader.
            role = nodes.NodeRole.STANDBY if shared is not None else nodes.NodeRole.LEADER
            placement = await register_node(config, db, role)
        except nodes.NodeNameTaken as err:
            log.error("%s", err)
            return EXIT_LOCKED
        log.info("%s", startup_summary(config))
        renewer = asyncio.create_task(keep_node_alive(config, db, placement.node), name="node")
        leadership = Leadership(
            shared, node=config.node.name, takeover=config.node.leader_takeover.total_seconds()
        )
        try:
            return await _serve(config, db, leadership, placement, stop)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            with contextlib.suppress(Exception):  # a dead database must not hide the exit
                async with db.session() as session:
                    await nodes.stop(session, placement.node)
    finally:
        await lock.release()
        await db.dispose()


async def _serve(
    config: Config,
    db: Database,
    leadership: Leadership,
    placement: nodes.Placement,
    stop_when: asyncio.Event | None,
) -> int:
    receiver = Receiver(db, config.node.name) if shared_by_nodes(db) else None
    monitor = PollMonitor(before_poll=leadership.alive, on_updates=receiver)
    pacer = Pacer(config.telegram.messages_per_second, margin=MARGIN)
    bot = make_bot(config, monitor, pacer)
    in_flight = InFlight()
    sender = Sender(bot, db, pacer=pacer)
    gateway = Gateway(config, db)
    runtime = Runtime(config, db, gateway, placement=placement)
    triage = Triage(config, db, gateway)
    scheduler = Scheduler(
        db,
        leading=lambda: leadership.is_leader,
        node=config.node.name,
        # A slot missed while no node led falls within the takeover and a long poll.
        catch_up=max(60.0, 2 * leadership.takeover + config.telegram.polling_timeout),
    )
    approval_policy = ApprovalPolicy.from_config(config)
    kinds = approval_kinds(config)
    dp = make_dispatcher(
        config,
        db,
        in_flight,
        approval_policy=approval_policy,
        approval_kinds=kinds,
        poll_monitor=monitor,
        sender=sender,
        org=runtime.org,
        status_cache=SummaryCache(db),
        job_intervals=scheduler.intervals,  # filled below; /status counts the jobs in it
        triage=triage,
    )
    own_process = stop_when is None
    stop = asyncio.Event() if stop_when is None else stop_when
    loop = asyncio.get_running_loop()
    if own_process:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    db.on_commit("outbox", sender.wake)
    deployer = DeployWorker(config, db, placement=placement)
    db.on_commit("deploys", deployer.wake)
    executor = ExecWorker(config, db, placement=placement)
    db.on_commit("exec", executor.wake)
    publisher = PublishWorker(config, db, placement=placement)
    db.on_commit("publish", publisher.wake)

    async def on_stall(silent: float) -> None:
        await alert(
            db,
            config,
            f"⚠️ Telegram polling stalled: no completed poll for {silent:.0f} s. "
            "Polling was restarted.",
            dedup_key=f"poll-stall:{int(time.time() // 300)}",
        )

    supervisor = PollingSupervisor(
        dp, bot, monitor, polling_timeout=config.telegram.polling_timeout, on_stall=on_stall
    )

    async def poll_beat() -> None:
        # Since this node leads: a standby that just took over has not polled before.
        last = max(monitor.last_poll_monotonic or 0.0, leadership.since)
        if time.monotonic() - last > supervisor.stall_after:
            raise JobFailed("no completed getUpdates within three polling timeouts")

    scheduler.every("telegram-poll", config.telegram.polling_timeout, poll_beat)
    scheduler.every("runs-prune", 3600, runtime.prune)
    scheduler.every("ledgers-prune", 3600, functools.partial(prune_ledgers, db))
    add_health_jobs(config, db, scheduler, placement)

    async def expire_approvals() -> None:
        async with db.claim() as session:
            await sweep_approvals(session, approval_policy, kinds)

    scheduler.every("approvals-expire", config.approvals.check_every, expire_approvals)
    for agent in config.agents:
        if agent.heartbeat or agent.cron:
            scheduler.agent_heartbeat(
                agent.id,
                functools.partial(runtime.heartbeat, agent.id),
                every=heartbeat_seconds(agent),
                cron=agent.cron,
                tz=config.tz,
            )
        if agent.queue is not None:
            scheduler.cron(
                f"queue:{agent.id}",
                agent.queue.cron,
                config.tz,
                functools.partial(coding_queue.nightly, config, db, agent.id),
            )
    for mailbox in config.mailboxes:
        scheduler.every(
            f"triage:{mailbox.id}",
            int(mailbox.every.total_seconds()),
            functools.partial(triage.job, mailbox.id),
        )
    if config.mailboxes:
        scheduler.every("triage-digest", TRIAGE_TICK_SECONDS, triage.tick)
    try:
        me = await bot.get_me()
    except TelegramUnauthorizedError:
        log.error("Telegram rejected the bot token (401 Unauthorized): check telegram.token")
        await bot.session.close()
        return EXIT_TOKEN
    except Exception as err:  # noqa: BLE001 - network: polling retries on its own
        log.warning("cannot reach Telegram yet (%s); polling will keep trying", err)
        me = None
    if me is not None:
        log.info("bot @%s (id %d) starting", me.username, me.id)

    web_server = None
    if config.web.listen:
        web_server = WebServer(
            config,
            db,
            WebState(
                poll_monitor=monitor,
                rate_limited=lambda: sender.rate_limited,
                next_runs=lambda: {j.id: j.next_run_time for j in scheduler.scheduler.get_jobs()},
            ),
        )
        try:
            await web_server.start()
        except OSError as err:
            # The fleet runs without its page rather than not at all; the log says why.
            log.error("web: cannot listen on %s: %s", config.web.listen, err)
            web_server = None
    # The process's long-lived objects are all built now. Freezing them keeps the garbage
    # collector from walking ~400k objects (pauses of 200+ ms) on every full collection.
    if own_process:
        gc.collect()
        gc.freeze()
    await scheduler.register(fleet_wide=False)
    scheduler.start()
    wakes_task = asyncio.create_task(db.relay_wakes(stop), name="wake-relay")
    runtime_task = asyncio.create_task(runtime.run(stop), name="run-worker")
    deploy_task = asyncio.create_task(deployer.run(stop), name="deploy-worker")
    exec_task = asyncio.create_task(executor.run(stop), name="exec-worker")
    publish_task = asyncio.create_task(publisher.run(stop), name="publish-worker")
    pipeline_task = asyncio.create_task(
        PipelineWorker(config, db).run(stop), name="pipeline-worker"
    )

    async def announce() -> None:
        if me is not None:  # the menu is the leader's to set, each time a node leads
            try:
                await register_commands(bot, config, dp["routers"])
            except TelegramAPIError as err:
                log.warning("could not register the command menu: %s", err)

    code = EXIT_OK
    try:
        await leadership.run(
            stop,
            with_role(
                db,
                placement.node,
                functools.partial(lead, scheduler, sender, supervisor, on_lead=announce),
            ),
        )
    except TelegramTokenRejected:
        log.error("Telegram rejected the bot token (401 Unauthorized): check telegram.token")
        code = EXIT_TOKEN
    finally:
        log.info("shutting down: finishing %d update(s) in flight", in_flight.count)
        stop.set()
        if not await in_flight.drain(SHUTDOWN_GRACE):
            log.warning("shutdown: updates still in flight after %.0f s", SHUTDOWN_GRACE)
        await scheduler.shutdown(SHUTDOWN_GRACE)
        if web_server is not None:
            await web_server.stop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            # Runs in flight get their grace period; the rest go back to the queue.
            await asyncio.wait_for(runtime_task, config.runtime.shutdown_grace_seconds + 5)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            # A deploy still running after the grace is cut off; the next start reports it
            # as interrupted and does not re-run it.
            await asyncio.wait_for(deploy_task, SHUTDOWN_GRACE)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            # The same for an approved command: reported interrupted at the next start.
            await asyncio.wait_for(exec_task, SHUTDOWN_GRACE)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            # A webhook call cut off here is reported unknown at the next start.
            await asyncio.wait_for(publish_task, SHUTDOWN_GRACE)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(pipeline_task, SHUTDOWN_GRACE)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(wakes_task, SHUTDOWN_GRACE)
        await triage.close()
        await gateway.close()
        await bot.session.close()
        if own_process:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        log.info("stopped")
    return code


async def alert(db: Database, config: Config, text: str, *, dedup_key: str) -> None:
    """Queue a message for the alerts feed (or only log it when no alerts feed is set)."""
    feed = config.feed("alerts")
    if feed is None:
        log.warning("no alerts feed configured; alert not posted: %s", text)
        return
    async with db.session() as session:
        await outbox.enqueue(
            session,
            outbox.Destination(feed.chat_id, feed.topic, "alerts"),
            esc(text),
            dedup_key=dedup_key,
        )


def add_health_jobs(
    config: Config, db: Database, scheduler: Scheduler, placement: nodes.Placement | None = None
) -> None:
    """Checks (`check:<id>`; not those whose `on` names another node), the alerts feed
    (`alerts`), the `watchdog` and `config-watch`. Saves the running config as
    last-known-good first."""
    alerting = Alerting(config, db)
    if config.feed("alerts") is None:
        log.warning(
            "no alerts feed configured: incidents are recorded (see /incidents), not posted"
        )
    elsewhere = placement.checks_elsewhere if placement is not None else frozenset()
    for check in config.checks:
        if check.id in elsewhere:
            continue
        # On every node that may run it (a standby too): each slot runs once, on the node
        # that claims it.
        scheduler.every(
            f"check:{check.id}",
            check.every.total_seconds(),
            functools.partial(alerting.run_check, check),
            everywhere=True,
        )
    scheduler.every("alerts", alerting.flush_every(), alerting.flush)
    watchdog = Watchdog(config, db, scheduler.intervals)
    scheduler.every("watchdog", config.watchdog.every.total_seconds(), watchdog.run)
    try:
        loaded = save_last_good(config)
    except OSError as err:
        log.warning("could not save the last-known-good config: %s", err)
        return
    watch = ConfigWatch(config, db, loaded)
    scheduler.every("config-watch", config.watchdog.config_poll.total_seconds(), watch.run)
