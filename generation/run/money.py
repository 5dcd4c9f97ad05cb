"""What a run costs in money: each priced stage's tokens at its price, and the run's total.

A stage is priced by its `price:` (`PriceConfig`): the provider's list price per million prompt (input)
and completion (output) tokens, as the providers publish them (https://developers.openai.com/api/docs/pricing).
A stage that sends provider batches (`send: batch`) pays `batch_discount` of it on both: OpenAI's Batch API
and Anthropic's Message Batches API bill half the price of input and output tokens; some providers bill
another share (Kimi's batches cost 60 %: https://platform.kimi.ai/docs/pricing/batch). Only the tokens a
server was asked for are paid: the stage's counters (`StageStats`) add no token for a reply the request
cache answers, so a cached reply costs nothing. A provider's own discount on input it has cached is not
known here: those tokens are priced in full, so the amount is the most the provider bills.

Several currencies in one run (one provider's model in USD, another's in EUR) are kept apart: nothing here
knows an exchange rate, so the run's total is one amount per currency, never a sum across currencies.

Everything here is pure arithmetic and text; `run/stats.py` (stats.json, the bars), `run/dry_run.py` (the
most a run can cost) and the dataset card (`builders/assemble.py`) use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from bft.generation.config import StageConfig
from bft.generation.errors import ConfigError

PER = 1_000_000  # prices are per million tokens
AMOUNT_DIGITS = 9  # decimals of an amount kept in stats.json: far below a cent, yet no float noise


@dataclass(frozen=True)
class Price:
    """A stage's list price per million tokens, and whether it pays the batch share of it."""

    input: float
    output: float
    currency: str = "USD"
    batch: bool = False
    batch_discount: float = 0.5

    @property
    def paid_share(self) -> float:
        """The fraction of the list price the stage pays: `batch_discount` when it sends batches."""
        return self.batch_discount if self.batch else 1.0

    def cost(self, input_tokens: int, output_tokens: int) -> Cost:
        """What `input_tokens` prompt and `output_tokens` completion tokens cost at this price."""
        amount = (input_tokens * self.input + output_tokens * self.output) * self.paid_share / PER
        return Cost(input_tokens, output_tokens, amount, self.currency, self.batch, self)

    @classmethod
    def from_dict(cls, cost: dict) -> Price:
        """The price a stats.json `cost` entry (`Cost.as_dict`) was computed at."""
        listed = cost["price_per_million"]
        return cls(listed["input"], listed["output"], cost["currency"], cost["batch"], listed["batch_discount"])


@dataclass(frozen=True)
class Cost:
    """What a stage's tokens cost: the tokens paid for, the amount and its currency."""

    input_tokens: int
    output_tokens: int
    amount: float
    currency: str
    batch: bool
    price: Price

    def as_dict(self) -> dict:
        """The stats.json `cost` entry of a stage, with the list price it was computed at."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "amount": round(self.amount, AMOUNT_DIGITS),
            "currency": self.currency,
            "batch": self.batch,
            "price_per_million": {
                "input": self.price.input,
                "output": self.price.output,
                "batch_discount": self.price.batch_discount,
            },
        }


def stage_price(name: str, stage: StageConfig) -> Price | None:
    """Stage `name`'s price from its settings; None when it has no `price:` (not priced). A negative price,
    a batch discount outside (0, 1] or no currency is refused, named, before anything is counted at it."""
    price = stage.price
    if price is None:
        return None
    for what, value in (("input", price.input), ("output", price.output)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name}.price.{what} is {value}: a price per million tokens is a number >= 0")
    if not 0 < price.batch_discount <= 1:
        raise ConfigError(
            f"{name}.price.batch_discount is {price.batch_discount}: the fraction of the price a batch request "
            "costs, in (0, 1] (0.5: half price)"
        )
    if not price.currency.strip():
        raise ConfigError(f"{name}.price.currency is empty: name the currency the prices are in (USD, EUR, ...)")
    return Price(price.input, price.output, price.currency.strip(), stage.send == "batch", price.batch_discount)


def per_currency(costs: Iterable[Cost]) -> dict[str, float]:
    """The amounts summed per currency, in the order the currencies first come (never across currencies)."""
    summed: dict[str, float] = {}
    for cost in costs:
        summed[cost.currency] = summed.get(cost.currency, 0.0) + cost.amount
    return summed


def money(amount: float, currency: str, up: bool = False) -> str:
    """An amount and its currency, compact (`12.34 USD`, `0.0042 USD`; see `figure`)."""
    return f"{figure(amount, up)} {currency}"


def figure(amount: float, up: bool = False) -> str:
    """An amount, compact: cents from 1 up (`12.34`), two significant digits below (`0.0042`). `up` rounds
    up, so that a bound stays a bound once printed."""
    if amount == 0:
        return "0"
    places = 2 if amount >= 1 else min(max(2, 1 - math.floor(math.log10(amount))), AMOUNT_DIGITS)
    rounded = Decimal(repr(amount)).quantize(Decimal(1).scaleb(-places), ROUND_CEILING if up else ROUND_HALF_EVEN)
    return f"{rounded:,.{places}f}"


def money_total(amounts: dict[str, float], up: bool = False) -> str:
    """A total per currency as one text: `1.20 USD + 0.30 EUR`."""
    return " + ".join(money(amount, currency, up) for currency, amount in amounts.items())


def cost_line(costs: dict[str, Cost]) -> str:
    """What the run cost, one line (the dataset card's): per priced stage, then the total per currency."""
    if not costs:
        return ""
    stages = ", ".join(f"{name} {_paid_for(cost)}" for name, cost in costs.items())
    return f"{money_total(per_currency(costs.values()))} in all: {stages}; replies the request cache answered cost nothing."


def _paid_for(cost: Cost) -> str:
    """A stage's amount and the tokens it paid for: `0.0020 USD (1,000 prompt and 500 completion tokens)`."""
    batch = f", as a batch at {cost.price.paid_share:g} of the price" if cost.batch else ""
    tokens = f"{cost.input_tokens:,} prompt and {cost.output_tokens:,} completion tokens"
    return f"{money(cost.amount, cost.currency)} ({tokens}{batch})"
