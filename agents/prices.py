"""What model calls cost: the built-in prices and the config's [pricing]. A module of its own
so that `fleet check-config` can warn about unpriced models without importing the gateway."""

from __future__ import annotations

from decimal import Decimal

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


def price_of(config: Config, model: str) -> Price | None:
    if model in config.pricing:
        return config.pricing[model]
    for prefix in sorted(DEFAULT_PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            prices = DEFAULT_PRICES[prefix]
            return Price(input=float(prices[0]), output=float(prices[1]))
    return None
