"""The watchdog as people see it: the alert `fleet watchdog --once` posts when the main
process looks down or stuck."""

from __future__ import annotations

from collections.abc import Sequence

from bot.views.text import esc


def down(problems: Sequence[str]) -> str:
    """The alert, one bullet per problem found."""
    return "🛑 <b>fleet watchdog</b>: the main process looks down or stuck\n" + "\n".join(
        f"• {esc(problem)}" for problem in problems
    )
