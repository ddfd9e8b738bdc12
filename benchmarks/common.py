"""The harness the benchmarks share: the error for "could not measure", statistics, timing,
the bookkeeping of the processes a benchmark starts (from /proc), py-spy, and `main()`'s tail.

A benchmark runs as `python benchmarks/NAME.py`, so it imports this module as `common`, before
the project: importing it puts the repository root on `sys.path` (for the project and `tests/`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fleet import ANTHROPIC_KEY, TOKEN  # noqa: E402

STOP_TIMEOUT = 20.0
PY_SPY = Path(sys.executable).parent / "py-spy"


class BenchmarkError(Exception):
    """The benchmark could not measure (a process died, replies never came, a sanity check
    failed ...)."""


# ---- statistics and timing ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Cost:
    """CPU and wall time per operation, in microseconds."""

    name: str
    count: int
    cpu_us: float
    wall_us: float


async def measure(name: str, count: int, op: Callable[[int], Awaitable[object]]) -> Cost:
    """Await `op(i)` for i in range(count); CPU is this process's, every thread included."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        await op(i)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Cost(name, count, cpu * 1e6 / count, wall * 1e6 / count)


def machine(load_before: float) -> dict[str, Any]:
    """What the numbers depend on besides the code: CPUs, the load before the run, Python."""
    return {"cpus": os.cpu_count(), "load_before": load_before, "python": sys.version.split()[0]}


def test_keys_in_env() -> None:
    """The test token and API key, for `load_config`'s `${...}` in this process."""
    os.environ["TELEGRAM_BOT_TOKEN"] = TOKEN
    os.environ["ANTHROPIC_API_KEY"] = ANTHROPIC_KEY


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---- processes started by a benchmark ----------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of the process, in MB (MiB)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def check_alive(proc: asyncio.subprocess.Process | None, name: str, log: Path) -> None:
    if proc is not None and proc.returncode is not None:
        raise BenchmarkError(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")


async def stop_process(proc: asyncio.subprocess.Process | None, name: str) -> int | None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; the exit code (None: never started)."""
    if proc is None:
        return None
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            print(f"{name} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode


def terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()


def cancel_on_sigterm() -> None:
    """SIGTERM cancels the run like Ctrl-C does, so what it started is stopped on the way out."""
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)


# ---- py-spy ------------------------------------------------------------------------------------


def add_py_spy(parser: argparse.ArgumentParser, what: str) -> None:
    """`--py-spy OUT`: `what` says what is profiled and how."""
    parser.add_argument(
        "--py-spy",
        metavar="OUT",
        help=f"{what} (OUT.svg flamegraph, OUT.json speedscope, OUT.txt collapsed stacks); "
        "needs `pip install py-spy`",
    )


async def py_spy_record(
    pid: int, out: Path, *options: str, seconds: float = 600
) -> asyncio.subprocess.Process:
    """Start `py-spy record` on `pid`; it writes `out` when it gets SIGINT or time is up."""
    return await asyncio.create_subprocess_exec(
        str(PY_SPY),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--nonblocking",
        *options,
        "--format",
        {".json": "speedscope", ".txt": "raw"}.get(out.suffix, "flamegraph"),
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


# ---- main() ------------------------------------------------------------------------------------


def parser_for(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of the script's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0])


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse; a `--py-spy` output becomes an absolute path, once py-spy is known installed."""
    args = parser.parse_args(argv)
    if getattr(args, "py_spy", None):
        if not PY_SPY.exists():
            parser.error(f"--py-spy needs {PY_SPY}: pip install py-spy")
        args.py_spy = Path(args.py_spy).resolve()
    return args


def run(
    benchmark: Coroutine[Any, Any, dict[str, Any]],
    print_table: Callable[[dict[str, Any]], None],
    *,
    as_json: bool,
    interrupted: str | None = None,
    gc_freeze: bool = True,
) -> int:
    """Run the benchmark and print its results; the exit code. 0 whether or not the targets
    pass (it is a report), 1 when it could not measure; 130 when interrupted, if
    `interrupted` says what was cleaned up (else the interruption propagates)."""
    if gc_freeze:
        # This process is the measuring instrument. Imports leave many objects for the
        # collector (aiogram alone ~200k): a full collection takes 100-200 ms and would land
        # in whatever is being timed. Move them out of its sight.
        gc.collect()
        gc.freeze()
    try:
        results = asyncio.run(benchmark)
    except BenchmarkError as err:
        print(f"benchmark failed: {err}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        if interrupted is None:
            raise
        print(f"benchmark interrupted; {interrupted}", file=sys.stderr)
        return 130
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0
