"""Which commands an agent's run_command may run: the agent's `exec` policy and its exec rules.

Patterns are globs (fnmatch, case-sensitive) over the argv joined by single spaces: "git status"
names exactly that, "pytest *" any pytest with arguments. deny wins, then an exec rule (an
"always allow" a person granted for this exact argv), then allow, then ask; a command that no
pattern names is asked.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.config import ExecPolicy

Verdict = Literal["allow", "ask", "deny"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    why: str  # the pattern or rule that decided, for the record


def joined(argv: Sequence[str]) -> str:
    return " ".join(argv)


def _first(patterns: Sequence[str], line: str) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(line, p)), None)


def decide(
    policy: ExecPolicy, argv: Sequence[str], rules: Sequence[tuple[int, Sequence[str]]] = ()
) -> Decision:
    """The verdict for `argv`. `rules`: the agent's live exec rules as (id, argv)."""
    line = joined(argv)
    denied = _first(policy.deny, line)
    if denied is not None:
        return Decision("deny", f'deny pattern "{denied}"')
    for rule_id, allowed in rules:
        if list(allowed) == list(argv):
            return Decision("allow", f"rule #{rule_id}")
    allowed_by = _first(policy.allow, line)
    if allowed_by is not None:
        return Decision("allow", f'allow pattern "{allowed_by}"')
    asked = _first(policy.ask, line)
    if asked is not None:
        return Decision("ask", f'ask pattern "{asked}"')
    return Decision("ask", "no pattern names it")
