"""Running a command from the config (deploys, rollbacks, check probes and recoveries).

One way to run them: in its own process group; the timeout is on the command's exit, not on
its output closing, since a deploy that starts a service leaves a child holding stdout; the
output kept is the LAST `keep` bytes (the end says what went wrong); reading stops shortly after
the command exits; only a real timeout (or cancellation) kills the group.

Environment: the command gets the fleet's environment WITHOUT the fleet's own secrets. Removed
are every variable whose value is one of `secrets` (the caller passes the config's secret
values), the TELEGRAM_* and ANTHROPIC_* variables, and CREDENTIALS_DIRECTORY (systemd's
folder of the fleet's secret files). Everything else (PATH, HOME, LANG, ...) is kept; a
command that needs a secret names it in its command line (`${DEPLOY_TOKEN}`) or reads its own
file.

Output: with `redact` (bot.redact.Redactor), every configured secret in the output is replaced
before anyone sees it (an alert, an incident title, a deploy report); when the output was cut to
its last `keep` bytes, the first, cut line is dropped too, since it may hold the tail of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

KEEP = 1_000_000  # bytes of output kept: the last ones
DRAIN = 1.5  # seconds of reading after the command exited, for output still in the pipe
_FLEET_ONLY = ("TELEGRAM_", "ANTHROPIC_")
_FLEET_NAMES = frozenset({"CREDENTIALS_DIRECTORY"})


class CommandError(Exception):
    """The command could not be started (a bad command line, a missing program)."""


@dataclass(frozen=True)
class Finished:
    exit_code: int | None  # None: timed out, killed with its process group
    output: str  # stdout and stderr together, the last `keep` bytes


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
    line: str,
    *,
    shell: bool,
    limit: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    keep: int = KEEP,
    drain: float = DRAIN,
    redact: Callable[[str], str] | None = None,
) -> Finished:
    """Run `line` (through the shell if `shell`, else split like a shell would and run
    directly) with `env` (default: `environment()`), for at most `limit` seconds. Raises
    CommandError when it cannot start."""
    environ = dict(env) if env is not None else environment()
    try:
        if shell:
            process = await asyncio.create_subprocess_shell(
                line,
                cwd=cwd,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        else:
            try:
                argv = shlex.split(line)
            except ValueError as err:
                raise CommandError(f"cannot parse the command line: {err}") from err
            if not argv:
                raise CommandError("the command line is empty")
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as err:
        words = line.split()
        raise CommandError(
            f"cannot start {words[0] if words else line!r}: {err.strerror}"
        ) from err
    buffer = bytearray()
    cut = False

    async def read() -> None:
        nonlocal cut
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            buffer.extend(chunk)
            if len(buffer) > keep:
                del buffer[: len(buffer) - keep]
                cut = True

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
    output = buffer.decode("utf-8", "replace")
    if redact is not None:
        if cut:
            output = output.partition("\n")[2]
        output = redact(output)
    return Finished(code, output)


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
