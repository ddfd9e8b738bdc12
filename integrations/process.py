"""Running a command: from the config (deploys, rollbacks, check probes and recoveries) or an
agent's run_command (an argv list, never a shell line; head and tail of its output kept).

One way to run them: in its own process group; the timeout is on the command's exit, not on
its output closing, since a deploy that starts a service leaves a child holding stdout; the
output kept is the LAST `keep` bytes (the end says what went wrong); reading stops shortly after
the command exits; only a real timeout (or cancellation) kills the group.

Environment: the command gets the fleet's environment WITHOUT the fleet's own secrets. Removed
are every variable whose value is one of `secrets` (the caller passes the config's secret
values), the TELEGRAM_* and ANTHROPIC_* variables, and CREDENTIALS_DIRECTORY (systemd's
folder of the fleet's secret files). Everything else (PATH, HOME, LANG, ...) is kept; a
command that needs a secret names it in its command line (`${DEPLOY_TOKEN}`) or reads its own
file. An agent's command gets less: `minimal_environment` (PATH, HOME, LANG and the names
its `exec.env` lists).

Output: with `redact` (bot.redact.Redactor), every configured secret in the output is replaced
before anyone sees it (an alert, an incident title, a deploy report); when the output was cut,
the characters at the cut (EDGE) are dropped too, since they may hold part of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KEEP = 1_000_000  # bytes of output kept: the last ones
EDGE = 256  # characters dropped at a cut when redacting: the longest secret part we expect
DRAIN = 1.5  # seconds of reading after the command exited, for output still in the pipe
_FLEET_ONLY = ("TELEGRAM_", "ANTHROPIC_")
_FLEET_NAMES = frozenset({"CREDENTIALS_DIRECTORY"})


class CommandError(Exception):
    """The command could not be started (a bad command line, a missing program)."""


@dataclass(frozen=True)
class Finished:
    exit_code: int | None  # None: timed out, killed with its process group
    output: str  # stdout and stderr together: the first `head` and the last `keep` bytes
    cut: int = 0  # bytes left out between the head and the tail


# What an agent's command gets of the fleet's environment (run_command): these, and only the
# names its `exec.env` lists.
BASE_NAMES = ("PATH", "HOME", "LANG")


def minimal_environment(names: Iterable[str] = (), secrets: Iterable[str] = ()) -> dict[str, str]:
    """PATH, HOME, LANG and `names` from the fleet's environment, never a fleet secret (a
    variable whose value is one of `secrets`, or a TELEGRAM_* / ANTHROPIC_* one)."""
    hidden = {s for s in secrets if s}
    env: dict[str, str] = {}
    for name in (*BASE_NAMES, *names):
        value = os.environ.get(name)
        if value is None or value in hidden or name.startswith(_FLEET_ONLY):
            continue
        if name in _FLEET_NAMES:
            continue
        env[name] = value
    return env


def environment(
    secrets: Iterable[str] = (), extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The fleet's environment without its own secrets (see the module's docstring)."""
    hidden = {s for s in secrets if s}
    env = {
        name: value
        for name, value in os.environ.items()
        if value not in hidden and not name.startswith(_FLEET_ONLY) and name not in _FLEET_NAMES
    }
    env.update(extra or {})
    return env


async def run(
    line: str | Sequence[str],
    *,
    shell: bool,
    limit: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    keep: int = KEEP,
    drain: float = DRAIN,
    head: int = 0,
    redact: Callable[[str], str] | None = None,
    stdin: bytes | None = None,
    log: Path | None = None,
    started: Callable[[int], None] | None = None,
) -> Finished:
    """Run `line` (through the shell if `shell`, else split like a shell would and run
    directly; a list is an argv, run as it is) with `env` (default: `environment()`), for at
    most `limit` seconds. The output kept is the first `head` bytes and the last `keep`.
    `stdin` is written to the command's standard input (then closed); with `log`, all of the
    output is also appended to that file as it comes (a coding CLI's run log); `started` is
    told the process id (the group's id: `kill(pid)` stops the command and its children).
    Raises CommandError when it cannot start."""
    environ = dict(env) if env is not None else environment()
    if not isinstance(line, str):
        argv = list(line)
        if not argv:
            raise CommandError("the argv is empty")
        line = shlex.join(argv)
        shell = False
    else:
        argv = []
    try:
        if shell:
            process = await asyncio.create_subprocess_shell(
                line,
                cwd=cwd,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        else:
            try:
                argv = argv or shlex.split(line)
            except ValueError as err:
                raise CommandError(f"cannot parse the command line: {err}") from err
            if not argv:
                raise CommandError("the command line is empty")
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as err:
        words = line.split()
        raise CommandError(
            f"cannot start {words[0] if words else line!r}: {err.strerror}"
        ) from err
    if started is not None:
        started(process.pid)
    first = bytearray()
    buffer = bytearray()
    dropped = 0
    sink = log.open("ab") if log is not None else None

    async def feed() -> None:
        assert process.stdin is not None
        # A command that exits without reading all of its input is not an error here.
        with contextlib.suppress(OSError):
            process.stdin.write(stdin or b"")
            await process.stdin.drain()
        process.stdin.close()

    async def read() -> None:
        nonlocal dropped
        assert process.stdout is not None
        # Written alongside the reading: a command may answer before it read all its input.
        feeder = asyncio.ensure_future(feed()) if stdin is not None else None
        while chunk := await process.stdout.read(65536):
            if sink is not None:
                sink.write(chunk)
                sink.flush()
            if len(first) < head:
                taken = chunk[: head - len(first)]
                first.extend(taken)
                chunk = chunk[len(taken) :]
            buffer.extend(chunk)
            if len(buffer) > keep:
                dropped += len(buffer) - keep
                del buffer[: len(buffer) - keep]
        if feeder is not None:
            await feeder

    reader = asyncio.create_task(read())
    try:
        try:
            code: int | None = await asyncio.wait_for(_exit(process), limit)
        except TimeoutError:
            kill(process.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_exit(process), 5)
            code = None
        # A child the command left running (a started service) may hold the pipe open for
        # good: read what is there, then stop listening instead of waiting for it.
        await asyncio.wait({reader}, timeout=drain)
    except asyncio.CancelledError:
        # Shutdown cut the command off: stop its processes too, so that what is reported as
        # interrupted really stopped.
        kill(process.pid)
        raise
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        # Closes the pipe the lingering child may still hold (no "unclosed transport").
        transport = getattr(process, "_transport", None)
        if transport is not None:
            transport.close()
        if sink is not None:
            sink.close()
    if not dropped:
        text = (first + buffer).decode("utf-8", "replace")
    else:
        start = first.decode("utf-8", "replace")
        tail = buffer.decode("utf-8", "replace")
        if redact is not None:
            # The characters at the cut may hold part of a secret the redactor cannot see.
            start = start[:-EDGE] if len(start) > EDGE else ""
            tail = tail[EDGE:]
        text = start + f"\n[... {dropped} bytes of output cut ...]\n" + tail if head else tail
    if redact is not None:
        text = redact(text)
    return Finished(code, text, dropped)


async def _exit(process: asyncio.subprocess.Process) -> int:
    """The exit code, once the process itself exited. `Process.wait()` also waits for its
    pipes to close (Python 3.11), which a child left running may never do; the return code is
    set as soon as the process ends, so it is looked at instead."""
    while process.returncode is None:  # noqa: ASYNC110 (no event exists to wait on)
        await asyncio.sleep(0.05)
    return process.returncode


def kill(pid: int) -> None:
    """Kill the command and everything it started (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
