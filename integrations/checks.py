"""Health check probes (http, tcp, command) and the recovery command.

A probe never raises for the thing it checks being down: it returns a `Probe` saying what it
saw. Commands come from the owner's config file and run through the shell, by
integrations.process (own process group, killed as a group on timeout, not waiting for a
child left running; the fleet's own secrets not in their environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from bot.config import CheckConfig, duration_text
from integrations import process

OUTPUT_TAIL = 500


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str
    latency_ms: int = 0


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None: killed on timeout
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        head = "timed out" if self.exit_code is None else f"exit {self.exit_code}"
        tail = self.output.strip()[-OUTPUT_TAIL:]
        return f"{head}: {tail}" if tail else head


async def probe(
    check: CheckConfig,
    secrets: Sequence[str] = (),
    redact: Callable[[str], str] | None = None,
) -> Probe:
    """Probe `check`; a command probe runs without the fleet's own `secrets` in its
    environment, and its output passes through `redact` (bot.redact.Redactor)."""
    timeout = check.timeout.total_seconds()
    if check.http:
        return await probe_http(check, timeout)
    if check.tcp:
        return await probe_tcp(check.tcp, timeout)
    assert check.command is not None
    result = await run_command(check.command, timeout, secrets, redact)
    return Probe(result.ok, result.describe())


async def probe_http(check: CheckConfig, seconds: float) -> Probe:
    assert check.http is not None
    started = time.monotonic()
    try:
        client_timeout = aiohttp.ClientTimeout(total=seconds)
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as http,
            http.get(check.http, allow_redirects=False) as response,
        ):
            body = await response.text(errors="replace") if check.expect_text else ""
            status = response.status
    except TimeoutError:
        return Probe(False, f"no answer within {seconds:g} s")
    except aiohttp.ClientConnectorError as err:
        reason = err.os_error.strerror or type(err.os_error).__name__
        return Probe(False, f"cannot connect to {err.host}:{err.port}: {reason}")
    except aiohttp.ClientError as err:
        return Probe(False, f"{type(err).__name__}: {err}"[:300])
    latency_ms = int((time.monotonic() - started) * 1000)
    if status not in check.expect_status:
        expected = ", ".join(map(str, check.expect_status))
        return Probe(False, f"HTTP {status} (expected {expected})", latency_ms)
    if check.expect_text and check.expect_text not in body:
        return Probe(False, f"HTTP {status} without {check.expect_text!r}", latency_ms)
    if check.max_latency and latency_ms / 1000 > check.max_latency.total_seconds():
        limit = duration_text(check.max_latency)
        return Probe(False, f"HTTP {status} in {latency_ms} ms (limit {limit})")
    return Probe(True, f"HTTP {status} in {latency_ms} ms", latency_ms)


async def probe_tcp(target: str, seconds: float) -> Probe:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return Probe(False, f"{target!r} is not host:port")
    started = time.monotonic()
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), seconds
        )
    except TimeoutError:
        return Probe(False, f"no connection within {seconds:g} s")
    except OSError as err:
        return Probe(False, f"cannot connect: {err.strerror or err}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    latency_ms = int((time.monotonic() - started) * 1000)
    return Probe(True, f"connected in {latency_ms} ms", latency_ms)


async def run_command(
    command: str,
    seconds: float,
    secrets: Sequence[str] = (),
    redact: Callable[[str], str] | None = None,
) -> CommandResult:
    """Run `command` through the shell (integrations.process: its own process group, killed
    on timeout; the fleet's own `secrets` kept out of its environment; its output passed
    through `redact`)."""
    try:
        done = await process.run(
            command,
            shell=True,
            limit=seconds,
            env=process.environment(secrets),
            keep=OUTPUT_TAIL * 4,
            redact=redact,
        )
    except process.CommandError as err:
        return CommandResult(127, str(err))
    if done.exit_code is None:
        return CommandResult(None, f"killed after {seconds:g} s")
    return CommandResult(done.exit_code, done.output)
