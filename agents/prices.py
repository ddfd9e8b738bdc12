"""What model calls cost: the built-in prices and the config's [pricing], the cost of a call
from its usage block, and the most a call can cost (what a budget hold reserves). A module of
its own so that `fleet check-config` can warn about unpriced models without importing the
gateway."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from bot.config import Config, Price

# USD per million tokens (input, output) by model-name prefix; `[pricing]` in the config wins.
DEFAULT_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "claude-opus-4-5": (Decimal(5), Decimal(25)),
    "claude-opus-4-6": (Decimal(5), Decimal(25)),
    "claude-opus-4": (Decimal(15), Decimal(75)),
    "claude-sonnet-4": (Decimal(3), Decimal(15)),
    "claude-3-7-sonnet": (Decimal(3), Decimal(15)),
    "claude-haiku-4": (Decimal(1), Decimal(5)),
    "claude-3-5-haiku": (Decimal("0.8"), Decimal(4)),
}

MILLION = Decimal(1_000_000)
CACHE_WRITE_FACTOR = Decimal("1.25")  # 5-minute cache writes
CACHE_WRITE_1H_FACTOR = Decimal(2)  # 1-hour cache writes
CACHE_READ_FACTOR = Decimal("0.1")
# No model reads more than this many input tokens in one call: the cap of an input estimate.
MAX_CONTEXT = 1_000_000


def price_of(config: Config, model: str) -> Price | None:
    if model in config.pricing:
        return config.pricing[model]
    for prefix in sorted(DEFAULT_PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            prices = DEFAULT_PRICES[prefix]
            return Price(input=float(prices[0]), output=float(prices[1]))
    return None


def cost_of(price: Price, usage: Any) -> Decimal:
    """USD for one call, from the API's usage block. Cache writes are priced by their cache's
    lifetime: the usage block's `cache_creation` says how many went to the 1-hour cache."""
    input_price = Decimal(str(price.input))
    write_5m = _per_token(price.cache_write, input_price * CACHE_WRITE_FACTOR)
    write_1h = _per_token(price.cache_write_1h, input_price * CACHE_WRITE_1H_FACTOR)
    read = _per_token(price.cache_read, input_price * CACHE_READ_FACTOR)
    writes = cache_writes(usage)
    total = (
        Decimal(usage.input_tokens) * input_price
        + Decimal(usage.output_tokens) * Decimal(str(price.output))
        + Decimal(writes[0] - writes[1]) * write_5m
        + Decimal(writes[1]) * write_1h
        + Decimal(getattr(usage, "cache_read_input_tokens", 0) or 0) * read
    )
    return total / MILLION


def cache_writes(usage: Any) -> tuple[int, int]:
    """(all cache-write tokens, those written to the 1-hour cache) of a usage block."""
    total = getattr(usage, "cache_creation_input_tokens", 0) or 0
    breakdown = getattr(usage, "cache_creation", None)
    one_hour = (getattr(breakdown, "ephemeral_1h_input_tokens", 0) or 0) if breakdown else 0
    return total, min(one_hour, total)


def input_bound(system: str, messages: list[Any], tools: list[dict[str, Any]] | None) -> int:
    """At least the input tokens of a request: its bytes (a token is never shorter than one
    byte), capped at the largest context a model has."""
    body = json.dumps([system, messages, tools or []], ensure_ascii=False, default=_plain)
    return min(len(body.encode()), MAX_CONTEXT)


def _plain(value: Any) -> Any:
    """A content block of an earlier reply (an SDK model) as the JSON it is sent as."""
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else str(value)


def worst_case(price: Price, input_tokens: int, max_tokens: int) -> Decimal:
    """The most a call can cost: every input token at the dearest input price (a 1-hour
    cache write, the dearest of the input prices), and `max_tokens` of output."""
    input_price = Decimal(str(price.input))
    dearest = max(
        input_price,
        _per_token(price.cache_write, input_price * CACHE_WRITE_FACTOR),
        _per_token(price.cache_write_1h, input_price * CACHE_WRITE_1H_FACTOR),
    )
    output = Decimal(max_tokens) * Decimal(str(price.output))
    return (Decimal(input_tokens) * dearest + output) / MILLION


def _per_token(configured: float | None, default: Decimal) -> Decimal:
    return Decimal(str(configured)) if configured is not None else default
