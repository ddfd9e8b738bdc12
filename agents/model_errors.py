"""What a model call raises when no model answered: the errors of the gateway, in a module of
their own so that the gateway's parts (failover, budget) and its callers share them."""

from __future__ import annotations

from datetime import datetime


class GatewayError(Exception):
    """No model answered. With `retry_at`, every pair was rate-limited: try again then.
    `alerted`: the gateway has told the `alerts` feed already; callers need not repeat it.
    `permanent`: see below."""

    def __init__(
        self,
        message: str,
        *,
        retry_at: datetime | None = None,
        alerted: bool = False,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        self.alerted = alerted
        # A configuration problem (no key, every key rejected, an invalid model): trying
        # again without a config change makes the same call fail the same way.
        self.permanent = permanent


class BudgetExceeded(GatewayError):
    """The agent's or the fleet's monthly budget is used up: no call was made, the agent is
    paused, and `alerts` has the stop (raise the budget, then the agent runs again)."""
