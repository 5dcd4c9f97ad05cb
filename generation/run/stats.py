"""A run's figures: counters per stage and the whole run's wall time, as `stats.json` holds them.

One typed object (`RunStats`) is written by both executors and read by everything that reports on a
run: the summary `bft generate` prints, the generation card, `bft build`'s card and its data report.
`stats.json` is `{STAGE: {counters}, ..., "wall_seconds": S}`, stages in run order, `prepare` first.
A priced stage (`price:`) also holds its `cost` (`run/money.py`) from the tokens it was charged for, and
the run its total per currency under `cost`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bft.generation.layout import OUTPUT_CONFIG_NAMES, PREPARE, STATS_FILE
from bft.generation.records import KEPT, StageRecord
from bft.generation.run.money import AMOUNT_DIGITS, Cost, Price, per_currency

ENDPOINTS_KEY = "endpoints"  # stats.json: per endpoint, its limit of requests in flight over the run
SERVERS_KEY = "servers"  # stats.json: per server bft started (`run/servers.py`), what it ran and how it started
COST_KEY = "cost"  # stats.json: what the run cost, per currency (`run/money.py`)
SLOW_ANSWER_SECONDS = 10.0  # a server answering slower than this is named on the bar


@dataclass
class StageStats:
    """Counters for one stage, written to `stats.json`."""

    entered: int = 0
    kept: int = 0
    rejected: int = 0
    rejected_by_reason: Counter = field(default_factory=Counter)
    requests: int = 0
    cache_hits: int = 0  # requests answered by the request cache (not sent, not in `requests`)
    cache_misses: int = 0  # requests the cache did not hold, sent (retries not counted again)
    retries_by_cause: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of completion_tokens: reasoning models' thinking, where the server says
    truncated: int = 0
    endpoint_events: Counter = field(default_factory=Counter)
    resumed: int = 0
    retried_from_previous_run: int = 0  # transient failures of an earlier run, sent again by this one
    # a `send: batch` stage's provider batches (`run/batching.py`), stats.json's `batches`
    batches_submitted: int = 0
    batch_items: int = 0  # requests sent in those batches (also in `requests`)
    batches_resumed: int = 0  # batches an earlier run submitted that this one waited on (its ledger's)
    batch_items_resumed: int = 0
    batches_failed: int = 0  # batches that failed as a whole: every item sent again
    batch_items_failed: Counter = field(default_factory=Counter)  # items back without a reply, by kind
    first_start: float | None = None
    last_end: float | None = None
    answer_seconds: float | None = None  # a moving mean of how long the server takes to answer (not saved)
    price: Price | None = None  # the stage's price (`run/money.py`); None: not priced

    @property
    def seconds(self) -> float:
        """Wall time from this stage's first request to its last answer (requests overlap)."""
        return (self.last_end - self.first_start) if self.first_start is not None and self.last_end else 0.0

    def cost(self) -> Cost | None:
        """What the stage's tokens cost at its price (None when not priced). The token counters hold only
        replies a server gave (a reply the request cache answered adds none), so cached replies cost nothing."""
        return self.price.cost(self.prompt_tokens, self.completion_tokens) if self.price is not None else None

    def timed(self, begun: float, ended: float) -> None:
        self.first_start = begun if self.first_start is None else min(self.first_start, begun)
        self.last_end = ended if self.last_end is None else max(self.last_end, ended)

    def answered_in(self, seconds: float) -> None:
        """Note one request's time to answer (the bars name a slow server from it)."""
        self.answer_seconds = seconds if self.answer_seconds is None else 0.8 * self.answer_seconds + 0.2 * seconds

    def count(self, record: StageRecord) -> None:
        self.count_outcome(record.status, record.reason)

    def count_outcome(self, status: str, reason: str | None) -> None:
        self.entered += 1
        if status == KEPT:
            self.kept += 1
        else:
            self.rejected += 1
            self.rejected_by_reason[reason] += 1

    def add(self, counts: dict) -> None:
        """Add the counters of another engine's `as_dict()` (a Ray block's) to these; times are not added."""
        self.entered += counts["entered"]
        self.kept += counts["kept"]
        self.rejected += counts["rejected"]
        self.rejected_by_reason.update(counts["rejected_by_reason"])
        self.requests += counts["requests"]
        self.cache_hits += counts.get("cache_hits", 0)
        self.cache_misses += counts.get("cache_misses", 0)
        self.retries_by_cause.update(counts["retries_by_cause"])
        self.prompt_tokens += counts["prompt_tokens"]
        self.completion_tokens += counts["completion_tokens"]
        self.reasoning_tokens += counts.get("reasoning_tokens", 0)
        self.truncated += counts["truncated_to_fit"]
        self.endpoint_events.update(counts["endpoint_events"])
        self.resumed += counts["resumed_from_journal"]
        self.retried_from_previous_run += counts.get("retried_from_previous_run", 0)
        self.add_batches(counts.get("batches") or {})
        if self.price is None and counts.get("cost"):  # a block's (or stats.json's) price comes with its counts
            self.price = Price.from_dict(counts["cost"])

    @classmethod
    def from_dict(cls, counts: dict) -> StageStats:
        """The counters `as_dict` wrote (a `stats.json` entry), its wall time included."""
        stats = cls()
        stats.add(counts)
        if counts.get("seconds"):
            stats.timed(0.0, counts["seconds"])
        return stats

    def as_dict(self) -> dict:
        counts = {
            "entered": self.entered,
            "kept": self.kept,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "retries_by_cause": dict(sorted(self.retries_by_cause.items())),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "truncated_to_fit": self.truncated,
            "endpoint_events": dict(sorted(self.endpoint_events.items())),
            "resumed_from_journal": self.resumed,
            "retried_from_previous_run": self.retried_from_previous_run,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.requests / self.seconds, 2) if self.seconds else None,
            "completion_tokens_per_second": round(self.completion_tokens / self.seconds, 2) if self.seconds else None,
        }
        cost = self.cost()
        if cost is not None:
            counts["cost"] = cost.as_dict()
        if self.batches_submitted or self.batches_resumed:
            counts["batches"] = self.batch_counts()
        return counts

    def batch_counts(self) -> dict:
        """stats.json's `batches` of a stage sent by batch: batches submitted, resumed and failed, their items,
        and the items that came back without a reply, by kind (expired, canceled, errored, refused)."""
        return {
            "submitted": self.batches_submitted,
            "items": self.batch_items,
            "resumed": self.batches_resumed,
            "resumed_items": self.batch_items_resumed,
            "failed": self.batches_failed,
            "failed_items": dict(sorted(self.batch_items_failed.items())),
        }

    def add_batches(self, batches: dict) -> None:
        """Add a `batch_counts()` (of stats.json, or another engine's) to these."""
        self.batches_submitted += batches.get("submitted", 0)
        self.batch_items += batches.get("items", 0)
        self.batches_resumed += batches.get("resumed", 0)
        self.batch_items_resumed += batches.get("resumed_items", 0)
        self.batches_failed += batches.get("failed", 0)
        self.batch_items_failed.update(batches.get("failed_items") or {})

    def progress_postfix(self) -> dict:
        """What the progress bar shows beside done/total, rate and ETA: the figures `stats.json` will hold
        (rates over the stage's own time), and what is slow, named."""
        seconds = self.seconds
        postfix = {
            "req/s": f"{self.requests / seconds:.1f}" if seconds > 0 else "-",
            "tok/s": f"{self.completion_tokens / seconds:.0f}" if seconds > 0 else "-",
            "retries": sum(self.retries_by_cause.values()),
            "rejected": self.rejected,
        }
        if self.cache_hits or self.cache_misses:
            postfix["cache"] = f"{self.cache_hits} hit/{self.cache_misses} miss"
        if self.answer_seconds is not None and self.answer_seconds >= SLOW_ANSWER_SECONDS:
            postfix["slow"] = f"server answering in {self.answer_seconds:.0f} s"
        return postfix


@dataclass
class RunStats:
    """Every stage's counters (prepare first, then the run's stages in order) and the run's wall time."""

    stages: dict[str, StageStats]
    wall_seconds: float = 0.0
    endpoints: dict[str, dict] = field(default_factory=dict)  # each endpoint's limit (`AdaptiveLimit.summary`)
    servers: dict[str, dict] = field(default_factory=dict)  # the servers bft started (`RunServers.facts`)

    @classmethod
    def empty(cls, names: list[str]) -> RunStats:
        return cls({name: StageStats() for name in names})

    def to_json(self) -> dict:
        data: dict = {name: stats.as_dict() for name, stats in self.stages.items()}
        data["wall_seconds"] = round(self.wall_seconds, 3)
        if self.endpoints:
            data[ENDPOINTS_KEY] = self.endpoints
        if self.servers:
            data[SERVERS_KEY] = self.servers
        if costs := self.costs():
            data[COST_KEY] = {
                currency: round(amount, AMOUNT_DIGITS) for currency, amount in per_currency(costs.values()).items()
            }
        return data

    def costs(self) -> dict[str, Cost]:
        """What each priced stage cost, in run order (none when no stage is priced)."""
        return {name: cost for name, stats in self.stages.items() if (cost := stats.cost()) is not None}

    @classmethod
    def from_json(cls, data: dict) -> RunStats:
        stages = {name: StageStats.from_dict(counts) for name, counts in stage_counts(data).items()}
        return cls(
            stages,
            float(data.get("wall_seconds") or 0.0),
            dict(data.get(ENDPOINTS_KEY) or {}),
            dict(data.get(SERVERS_KEY) or {}),
        )

    def write(self, out: Path) -> None:
        (out / STATS_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, out: Path) -> RunStats:
        return cls.from_json(json.loads((out / STATS_FILE).read_text(encoding="utf-8")))

    @property
    def documents_in(self) -> int:
        return self.stages[PREPARE].entered if PREPARE in self.stages else 0

    def merge(self, other: dict[str, dict]) -> None:
        """Add the per-stage counters of another engine (a Ray block's `done.json`); times are not added."""
        for name, counts in stage_counts(other).items():
            self.stages.setdefault(name, StageStats()).add(counts)

    def rejects(self) -> list[dict]:
        """Per stage with rejects: its reasons and counts (the cards' rejects table)."""
        return [
            {"name": name, "reasons": dict(sorted(stats.rejected_by_reason.items()))}
            for name, stats in self.stages.items()
            if stats.rejected_by_reason
        ]

    def stage_table(self, provenance: dict[str, dict]) -> list[dict]:
        """The cards' per-stage table: counts, and model, prompt and sampling from a provenance entry
        per stage (`Provenance` as a dict)."""
        table = []
        for name in OUTPUT_CONFIG_NAMES:
            if name not in self.stages:
                continue
            entry, counts = provenance.get(name) or {}, self.stages[name]
            sampling = json.loads(entry["sampling"]) if entry.get("sampling") else {}
            table.append(
                {
                    "name": name,
                    "template": entry.get("template") or "-",
                    "sha": entry.get("template_sha256") or "",
                    "model": entry.get("model_id") or "unknown",
                    "revision": entry.get("model_revision"),
                    "mode": entry.get("mode") or "-",
                    "prefill": entry.get("prefill"),
                    "sampling": f"T={sampling['temperature']}, p={sampling['top_p']}, max {sampling['max_tokens']}"
                    if sampling
                    else "-",
                    "entered": counts.entered,
                    "kept": counts.kept,
                    "rejected": counts.rejected,
                }
            )
        return table


def stage_counts(data: dict) -> dict[str, dict]:
    """The per-stage entries of a `stats.json` mapping (not its wall time, `endpoints`, `servers` or `cost`)."""
    return {
        name: counts
        for name, counts in data.items()
        if isinstance(counts, dict) and name not in (ENDPOINTS_KEY, SERVERS_KEY, COST_KEY)
    }
