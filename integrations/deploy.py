"""Deploys: run a target's command, verify it against the real world, roll back on failure.

The worker executes the deploy runs that approved deploy approvals queue (storage/deploys.py):
one at a time per target, different targets side by side. A run: the command (no shell unless
the target says `shell = true`; run by integrations.process: a timeout on its exit, the last
output kept, secrets redacted, the fleet's own secrets not in its environment), then
verification (each URL must answer an expected status, and text if configured, within a
timeout, retried). On failure the rollback command runs and verification runs again. The report
says every step, its duration, the last 20 lines of output, and whether the target is verified
or rolled back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from bot.config import Config, DeployConfig
from bot.redact import Redactor
from bot.views import deploy as views
from integrations import claim_loop, process
from storage import approvals, deploys, nodes
from storage.approval_policy import ApprovalPolicy
from storage.db import Database
from storage.models import DeployRun
from storage.statuses import DeployStatus

log = logging.getLogger(__name__)

TAIL_LINES = 20
MAX_BODY = 1_000_000  # bytes of a verification answer searched for the expected text


class DeployError(Exception):
    """A step of a deploy could not run (bad command line, missing program)."""


@dataclass
class Step:
    name: str  # command | verify | rollback | verify-after-rollback
    ok: bool
    seconds: float
    detail: str


@dataclass
class Outcome:
    status: str  # succeeded | rolled_back | failed
    steps: list[Step]
    output: str  # every command's output, redacted


StepShow = Callable[[list[Step], str | None], Awaitable[None]]


def target_of(config: Config, target_id: str) -> DeployConfig | None:
    return next((d for d in config.deploys if d.id == target_id), None)


def shown_command(config: Config, target: DeployConfig) -> str:
    """The target's command as people may see it in an approval: as written in the config
    ("${DEPLOY_TOKEN}", not its value), any other known secret redacted."""
    return Redactor(config.secret_values()).redact(config.unexpand(target.command))


class DeployWorker:
    """Executes pending deploy runs until stopped. Run one per process (the poller-lock
    holder); `recover` first, so runs a crash left `running` are reported, not re-run."""

    def __init__(
        self,
        config: Config,
        db: Database,
        *,
        idle_poll: float = 5.0,
        placement: nodes.Placement | None = None,
    ) -> None:
        """`placement`: this node; it leaves the targets whose `on` names another node to
        that node."""
        self.config = config
        self.db = db
        self.idle_poll = idle_poll
        self.elsewhere = placement.deploys_elsewhere if placement is not None else frozenset()
        self.node, self.recovers = nodes.Placement.claims(placement)
        self.redactor = Redactor(config.secret_values())
        self.approval_policy = ApprovalPolicy.from_config(config)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def recover(self) -> list[int]:
        async with self.db.claim() as session:
            interrupted = await deploys.interrupt_running(session, node=self.recovers)
        for run_id in interrupted:
            log.warning(
                "deploy run #%d was interrupted by a restart; reported, not re-run", run_id
            )
        return interrupted

    async def run(self, stop: asyncio.Event) -> None:
        """Start every run that may start (targets run side by side, each one at a time),
        until `stop`. Cancelled (shutdown past its grace), it cancels the runs in progress,
        which kills their commands; the next start reports them interrupted."""
        await self.recover()
        await claim_loop.run_claimed(
            "deploy",
            stop=stop,
            wake=self._wake,
            idle_poll=self.idle_poll,
            claim=self._claim,
            carry_out=self._carry_out,
            name=lambda run: f"deploy-{run.id}",
            after_each=self.wake,  # its target is free: a run queued behind it may start
        )

    async def run_once(self) -> bool:
        """Claim and carry out one pending run, waiting for it; False when there was none."""
        run = await self._claim()
        if run is None:
            return False
        await self._carry_out(run)
        return True

    async def _claim(self) -> DeployRun | None:
        async with self.db.claim() as session:
            return await deploys.claim_next(session, exclude=self.elsewhere, node=self.node)

    async def _carry_out(self, run: DeployRun) -> None:
        target = target_of(self.config, run.target)
        if target is None:
            outcome = Outcome(
                DeployStatus.FAILED,
                [Step("command", False, 0.0, f'no deploy target "{run.target}" in the config')],
                "",
            )
        else:
            log.info("deploy run #%d of %s starting", run.id, run.target)

            async def show(steps: list[Step], running: str | None) -> None:
                await self._show(run, steps, running)

            outcome = await self.execute(target, run.ref, show=show)
        tail = "\n".join(outcome.output.splitlines()[-TAIL_LINES:])
        async with self.db.claim() as session:
            if run.approval_id is not None:
                await approvals.show_progress(
                    session,
                    run.approval_id,
                    views.progress(run, outcome.steps, None),
                    f"deploy:{run.id}:steps:end",
                    policy=self.approval_policy,
                )
            await deploys.finish(
                session,
                run.id,
                outcome.status,
                steps=[asdict(step) for step in outcome.steps],
                output_tail=tail,
                report=views.report(run, outcome.status, outcome.steps, tail),
                note=views.note(run, outcome.status, outcome.steps, tail),
            )
        log.info("deploy run #%d of %s: %s", run.id, run.target, outcome.status)

    async def _show(self, run: DeployRun, steps: list[Step], running: str | None) -> None:
        """The approval message shows the deploy's steps as they run."""
        if run.approval_id is None:
            return
        try:
            # claim(): it reads the approval before it writes (see Database.claim).
            async with self.db.claim() as session:
                await approvals.show_progress(
                    session,
                    run.approval_id,
                    views.progress(run, steps, running),
                    f"deploy:{run.id}:steps:{len(steps)}:{running or ''}",
                    policy=self.approval_policy,
                )
        except Exception:  # showing progress must never stop a deploy
            log.exception("deploy run #%d: could not show its progress", run.id)

    async def execute(
        self, target: DeployConfig, ref: str | None, *, show: StepShow | None = None
    ) -> Outcome:
        steps: list[Step] = []
        output: list[str] = []

        async def phase(name: str) -> None:
            if show is not None:
                await show(steps, name)

        await phase("command")
        ok = await self._command("command", target.command, target, ref, steps, output)
        if ok:
            await phase("verify")
            ok = await self._verify("verify", target, steps)
        if ok:
            return Outcome(DeployStatus.SUCCEEDED, steps, "\n".join(output))
        if not target.rollback:
            return Outcome(DeployStatus.FAILED, steps, "\n".join(output))
        await phase("rollback")
        rolled = await self._command("rollback", target.rollback, target, ref, steps, output)
        if rolled:
            await phase("verify-after-rollback")
            rolled = await self._verify("verify-after-rollback", target, steps)
        status = DeployStatus.ROLLED_BACK if rolled else DeployStatus.FAILED
        return Outcome(status, steps, "\n".join(output))

    async def _command(
        self,
        name: str,
        line: str,
        target: DeployConfig,
        ref: str | None,
        steps: list[Step],
        output: list[str],
    ) -> bool:
        started = time.monotonic()
        timeout = target.timeout.total_seconds()
        try:
            code, text = await run_command(
                line,
                shell=target.shell,
                cwd=self.config.path.parent,
                env={"FLEET_DEPLOY_TARGET": target.id, "FLEET_DEPLOY_REF": ref or ""},
                limit=timeout,
                secrets=self.config.own_secrets(),
                redact=self.redactor.redact,
            )
        except DeployError as err:
            steps.append(Step(name, False, time.monotonic() - started, str(err)))
            return False
        text = self.redactor.redact(text)
        output.append(text.rstrip("\n"))
        seconds = time.monotonic() - started
        if code is None:
            steps.append(Step(name, False, seconds, f"timed out after {timeout:.0f} s; killed"))
            return False
        steps.append(Step(name, code == 0, seconds, f"exit code {code}"))
        return code == 0

    async def _verify(self, name: str, target: DeployConfig, steps: list[Step]) -> bool:
        started = time.monotonic()
        if not target.verify:
            steps.append(Step(name, True, 0.0, "no verification URLs configured"))
            return True
        problems = await verify(
            target.verify,
            statuses=target.verify_status,
            text=target.verify_text,
            each=target.verify_timeout.total_seconds(),
            attempts=target.verify_attempts,
            interval=target.verify_interval.total_seconds(),
        )
        seconds = time.monotonic() - started
        if problems:
            steps.append(Step(name, False, seconds, self.redactor.redact("; ".join(problems))))
            return False
        steps.append(
            Step(name, True, seconds, f"{len(target.verify)} URL(s) answered as expected")
        )
        return True


async def run_command(
    line: str,
    *,
    shell: bool,
    cwd: Path,
    env: dict[str, str],
    limit: float,
    secrets: Sequence[str] = (),
    redact: Callable[[str], str] | None = None,
) -> tuple[int | None, str]:
    """Run `line` (split like a shell would, but without one unless `shell`) with `env` added
    to the fleet's environment less its own `secrets` (integrations.process); returns the exit
    code (None: timed out and killed, with its whole process group) and the last output."""
    try:
        done = await process.run(
            line,
            shell=shell,
            limit=limit,
            cwd=cwd,
            env=process.environment(secrets, env),
            redact=redact,
        )
    except process.CommandError as err:
        raise DeployError(str(err)) from err
    return done.exit_code, done.output


async def verify(
    urls: list[str],
    *,
    statuses: list[int],
    text: str | None,
    each: float,
    attempts: int,
    interval: float,
) -> list[str]:
    """Check every URL, retrying the failing ones; returns the problems left (empty: verified)."""
    left = list(urls)
    problems: dict[str, str] = {}
    client_timeout = aiohttp.ClientTimeout(total=each)
    async with aiohttp.ClientSession(timeout=client_timeout) as client:
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(interval)
            for url in list(left):
                problem = await _check(client, url, statuses, text)
                if problem is None:
                    left.remove(url)
                    problems.pop(url, None)
                else:
                    problems[url] = problem
            if not left:
                return []
    return [f"{url}: {problems[url]} (after {attempts} attempt(s))" for url in left]


async def _check(
    client: aiohttp.ClientSession, url: str, statuses: list[int], text: str | None
) -> str | None:
    try:
        async with client.get(url, allow_redirects=False) as response:
            # Enough of the body to find the expected text; a huge page is not read whole.
            body = (await response.content.read(MAX_BODY)).decode("utf-8", "replace")
            if response.status not in statuses:
                return f"status {response.status}, expected {' or '.join(map(str, statuses))}"
            if text is not None and text not in body:
                return f"status {response.status} but the text {text!r} is missing"
            return None
    except TimeoutError:
        return "no answer in time"
    except aiohttp.ClientError as err:
        return f"{type(err).__name__}: {err}"
