"""Git for coding agents: a checkout of the agent's repo on a branch of its own per task,
and what a run changed in it (commits, diff stat, the branch on the remote).

Every command is an argv run through integrations.process (its own process group, a time
limit), never a shell line: branch names come from task titles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from integrations import process

LIMIT = 300.0  # seconds for one git command (a clone of a big repo)
BASE_KEY = "fleet.base"  # where a checkout remembers the commit its branch started from


class GitError(Exception):
    pass


@dataclass
class Evidence:
    branch: str
    commits: list[str] = field(default_factory=list)  # "<short sha> <subject>", newest first
    diff_stat: str = ""
    pushed: bool | None = None  # None: no remote to ask
    remote_sha: str | None = None


def slug(title: str, limit: int = 40) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return words[:limit].rstrip("-") or "task"


def branch_name(task_id: int, title: str) -> str:
    return f"fleet/{task_id}-{slug(title)}"


async def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    env = process.environment(extra={"GIT_TERMINAL_PROMPT": "0"})
    try:
        done = await process.run(["git", *args], shell=False, limit=LIMIT, cwd=cwd, env=env)
    except process.CommandError as err:
        raise GitError(str(err)) from err
    if check and done.exit_code != 0:
        why = "timed out" if done.exit_code is None else f"exit {done.exit_code}"
        raise GitError(f"git {args[0]} failed ({why}): {done.output.strip()[-500:]}")
    return done.output


async def prepare(repo: str, checkout: Path, branch: str) -> str:
    """A clone of `repo` at `checkout` on `branch` (made from the remote's default branch the
    first time; a later run of the same task finds the checkout and its branch as they were).
    Returns the base commit the branch started from."""
    if not (checkout / ".git").exists():
        checkout.parent.mkdir(parents=True, exist_ok=True)
        await git("clone", "--quiet", repo, str(checkout))
        await git("checkout", "--quiet", "-B", branch, cwd=checkout)
        base = (await git("rev-parse", "HEAD", cwd=checkout)).strip()
        await git("config", BASE_KEY, base, cwd=checkout)
        return base
    current = (await git("rev-parse", "--abbrev-ref", "HEAD", cwd=checkout)).strip()
    if current != branch:
        await git("checkout", "--quiet", branch, cwd=checkout)
    return await base_of(checkout)


async def base_of(checkout: Path) -> str:
    return (await git("config", "--get", BASE_KEY, cwd=checkout)).strip()


async def evidence(checkout: Path, branch: str, base: str) -> Evidence:
    """Commits on `branch` since `base`, the diff stat, and whether the remote has the branch
    at its tip (`git ls-remote`), when the checkout has a remote."""
    found = Evidence(branch=branch)
    log = await git("log", "--format=%h %s", f"{base}..{branch}", cwd=checkout)
    found.commits = [line for line in log.splitlines() if line.strip()]
    if found.commits:
        stat = await git("diff", "--shortstat", f"{base}..{branch}", cwd=checkout)
        found.diff_stat = stat.strip()
    remotes = (await git("remote", cwd=checkout)).split()
    if "origin" in remotes:
        listed = await git("ls-remote", "origin", f"refs/heads/{branch}", cwd=checkout)
        tip = (await git("rev-parse", branch, cwd=checkout)).strip()
        first = listed.split()
        found.remote_sha = first[0] if first else None
        found.pushed = found.remote_sha == tip
    return found
