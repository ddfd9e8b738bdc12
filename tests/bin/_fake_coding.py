"""Shared body of the fake coding CLIs (tests/bin/claude, tests/bin/codex): real programs
that read the brief on stdin, make a real commit in the current checkout (pushed when it has
a remote), and print what the real CLI prints. Directives in the brief steer them:

- "FAKE:limit-<name>": this CLI reports a rate/usage limit instead of working;
- "FAKE:hang": start a child that sleeps, then sleep forever (the timeout must kill both);
- "FAKE:nocommit": answer without committing;
- "FAKE:nopush": commit but do not push.

The PID of a hanging fake and its child are written to <checkout>/.fake-pids, so tests can
check with `ps` that nothing is left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Fake CLI", "-c", "user.email=fake@example.test", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def work(name: str) -> tuple[str, bool]:
    """Reads the brief; returns (the brief, limited?). Commits unless told not to."""
    brief = sys.stdin.read()
    if f"FAKE:limit-{name}" in brief:
        return brief, True
    if "FAKE:hang" in brief:
        child = subprocess.Popen(["sleep", "600"])
        Path(".fake-pids").write_text(f"{os.getpid()} {child.pid}\n")
        while True:
            time.sleep(1)
    if "FAKE:nocommit" not in brief:
        count = len(list(Path().glob(f"{name}-*.txt")))
        path = Path(f"{name}-{count + 1}.txt")
        path.write_text(f"written by the fake {name}\n" + brief[:200])
        git("add", path.name)
        git("commit", "--quiet", "-m", f"{name}: work on the task ({path.name})")
        if git("remote").split() and "FAKE:nopush" not in brief:
            git("push", "--quiet", "origin", "HEAD")
    return brief, False
