"""How many requests one endpoint gets at once: found by measuring, shared by every stage that sends to it.

A GPU server's throughput grows with its batch up to a knee (vLLM batches up to 256 sequences by
default) and then only its queue grows; the knee moves with prompt and output lengths, replicas and
other tenants. bft does not ask users to know it. Each endpoint has one `AdaptiveLimit`, which every
stage's pool takes its slots from:

- **fixed** (`--max-concurrency N`, `max_concurrency: N`): N, and nothing else;
- **from the server's own load**, where it publishes Prometheus `/metrics` (vLLM: requests running and
  waiting, KV-cache use; SGLang: running and queued requests, token use; TGI: queue size, batch size),
  read while requests are in flight, every `LOAD_INTERVAL` seconds, or less often where a read costs the
  server more (the cheapest of the last reads at most `LOAD_COST_SHARE` of the time: vLLM's CPU build
  spends 14 ms of a core on each, which ten reads a second would take from a 2-core machine's engine):
  the limit keeps a small queue waiting at the server at all times, so its batch is always full and no
  more is piled up than that. With no queue while bft's slots are all used, the limit doubles
  (quadruples while nothing waits and the cache is under half used: the batch has room); with more than
  twice the target (a quarter of what runs, at least 4) waiting, it comes down to what runs plus the
  target; with the KV cache nearly full, or fewer than half of what bft has in flight seen at the server
  (the rest in transit), it does not grow;
- **from the replies** (hosted APIs, `transformers serve`: no metrics): completion tokens per second
  over windows of about one limit's worth of answers. While throughput keeps rising with the limit, it
  doubles (slow start), then grows by a tenth per window; a window whose throughput falls well below the
  best seen while latency grew brings it down a tenth (more requests only queued);
- **backing off**, at most once per window (a burst of refusals is one back-off): a 429 (a rate limit
  or a concurrency cap, as hosted APIs answer) takes the limit to 0.85 of the requests then in flight and
  remembers that level (a moving mean) as the server's cap, near which it grows a request per window
  only; a 503 or a timeout (a server in trouble) takes it to 0.7. A server-given `Retry-After` is the
  retry's business (the engine waits it), not the limit's.

The limit starts at `start` (8) and stays within [1, ceiling]: TGI's `/info` `max_concurrent_requests`
when known (beyond it TGI answers 429), else `CEILING`. Every change is counted; `summary()` gives the
range, the settled value, samples of (time, in flight, limit), 429s and back-offs for `stats.json`.

Waiting is by priority, then arrival: the engine gives later stages higher priority, so a document's
next request goes before a new document's first, rewritten rows appear early and journals stay small.
The waiters are futures; a freed slot is handed to the first waiter (taken on its behalf, so no newcomer
can slip in), with no locks: one event loop's state only changes between awaits. A waiter may wait on
several endpoints' limits at once (a stage's pool); whichever frees a slot first resolves it, and the
other limits skip it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass

START = 8
CEILING = 1024
LOAD_INTERVAL = 0.1  # seconds between /metrics reads while busy, at the most often
LOAD_INTERVAL_MAX = 2.0  # ... and at the least often
LOAD_COST_SHARE = 0.02  # reads take at most this share of the time: the interval is 50x the last read's
READS_REMEMBERED = 8  # the interval follows the cheapest of the last reads
LOAD_FRESH = 1.0  # a load older than this (or three intervals) is not steered by
BACKOFF = 0.7  # after a 503 or a timeout: a server in trouble
RATE_LIMIT_BACKOFF = 0.85  # after a 429: a cap reached, not a server in trouble
SAMPLES = 12  # (time, in flight, limit) samples kept for stats.json, spread over the run


@dataclass
class ServerLoad:
    """What a server's /metrics says of its own load (summed over its series)."""

    running: float
    waiting: float
    cache_use: float | None = None  # 0..1: vLLM KV-cache blocks, SGLang token use
    at: float = 0.0


class Waiter:
    """A request waiting for a slot; `future` resolves with the limit that freed one."""

    __slots__ = ("future", "priority")

    def __init__(self, priority: int):
        self.priority = priority
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()


class AdaptiveLimit:
    """One endpoint's requests-in-flight limit (module docstring)."""

    def __init__(self, name: str, fixed: int | None = None, start: int = START, ceiling: int | None = None):
        self.name = name
        self.fixed = fixed
        self.ceiling = max(1, ceiling or CEILING)
        self.limit = float(fixed if fixed is not None else min(start, self.ceiling))
        self.in_flight = 0
        self.low = self.high = int(self.limit)
        self.overloads = 0  # 429 and 503 answers
        self.timeouts = 0
        self.backoffs = 0
        self.load: ServerLoad | None = None
        self.load_interval = LOAD_INTERVAL
        self._read_times: list[float] = []
        self._heap: list[tuple[int, int, Waiter]] = []
        self._compact_at = 1024
        self._order = itertools.count()
        self._slow_start = True
        self._window_start = time.monotonic()
        self._window_tokens = 0
        self._window_answers = 0
        self._window_latency = 0.0
        self._best_rate = 0.0
        self._best_latency: float | None = None
        self._backed_off_at = 0.0
        self._cap: float | None = None  # requests in flight when 429s came (a moving mean): the server's cap
        self._started = time.monotonic()
        self._samples: list[tuple[float, int, int]] = []
        self._sample_every = 0.1

    # -- slots ------------------------------------------------------------------------------------------

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    def _top(self) -> Waiter | None:
        while self._heap and self._heap[0][2].future.done():
            heapq.heappop(self._heap)
        return self._heap[0][2] if self._heap else None

    def has_room(self, priority: int = 0) -> bool:
        """A slot is free and no waiter of at least this priority was here first."""
        if self.in_flight >= self.current:
            return False
        top = self._top()
        return top is None or top.priority < priority

    def take(self) -> None:
        self.in_flight += 1
        self._sample()

    def wait(self, waiter: Waiter) -> None:
        if len(self._heap) >= self._compact_at:  # waiters served elsewhere are skipped, and dropped now and then
            self._heap = [entry for entry in self._heap if not entry[2].future.done()]
            heapq.heapify(self._heap)
            self._compact_at = max(1024, 2 * len(self._heap))
        heapq.heappush(self._heap, (-waiter.priority, next(self._order), waiter))

    def _wake(self) -> None:
        """Hand each free slot to a waiter, highest priority first: the slot is taken on its behalf (so no
        newcomer can take it meanwhile) and its future resolves with this limit."""
        while self.in_flight < self.current and (top := self._top()) is not None:
            heapq.heappop(self._heap)
            self.in_flight += 1
            top.future.set_result(self)

    def give_back(self) -> None:
        """A slot handed to a waiter that will not use it (cancelled meanwhile): to the next one."""
        self.in_flight -= 1
        self._wake()

    # -- outcomes ---------------------------------------------------------------------------------------

    def release(
        self,
        tokens: int = 0,
        latency: float = 0.0,
        overloaded: bool = False,
        timed_out: bool = False,
        rate_limited: bool = False,
    ):
        """A request ended: answered (`tokens` completion tokens after `latency` seconds), refused as
        overloaded (503; `rate_limited`: a 429), or timed out."""
        in_flight = self.in_flight
        self.in_flight -= 1
        if overloaded or timed_out or rate_limited:
            self.overloads += overloaded or rate_limited
            self.timeouts += timed_out
            self._back_off(in_flight, rate_limited)
        elif tokens or latency:
            self._answered(tokens, latency)
        self._sample()
        self._wake()

    def _set(self, value: float) -> None:
        if self.fixed is not None:
            return
        self.limit = min(float(self.ceiling), max(1.0, value))
        self.low, self.high = min(self.low, self.current), max(self.high, self.current)

    def _back_off(self, in_flight: int, rate_limited: bool) -> None:
        """Come down after a refusal: a 429 marks where the server's cap is (`_cap`: what was in flight)
        and the limit goes just under it; a 503 or a timeout (a server in trouble) takes it to `BACKOFF`
        of what was in flight. Once per window, so a burst of refusals is one back-off."""
        now = time.monotonic()
        if rate_limited:
            self._cap = in_flight if self._cap is None else 0.7 * self._cap + 0.3 * in_flight
        if self.fixed is not None or now - self._backed_off_at < self._window_seconds():
            return
        self._backed_off_at = now
        self.backoffs += 1
        self._slow_start = False
        level = min(self.limit, max(1, in_flight))
        self._set(level * (RATE_LIMIT_BACKOFF if rate_limited else BACKOFF))
        self._reset_window(now)

    def _window_seconds(self) -> float:
        if self._window_answers and self._window_latency:
            return max(0.05, self._window_latency / self._window_answers)
        return 0.5

    def _reset_window(self, now: float) -> None:
        self._window_start, self._window_tokens, self._window_answers, self._window_latency = now, 0, 0, 0.0

    def _answered(self, tokens: int, latency: float) -> None:
        self._window_tokens += tokens
        self._window_answers += 1
        self._window_latency += latency
        if self.fixed is not None or self._steered_by_load():
            return
        if self._window_answers < max(4, self.current // 2):
            return
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed <= 0:
            return
        rate = self._window_tokens / elapsed
        mean_latency = self._window_latency / self._window_answers
        busy = self.in_flight + 1 >= self.current * 0.9  # the limit was in use, not the client's supply
        if rate > self._best_rate * 1.05:
            self._best_rate = rate
            if busy:
                grown = self.limit * 2 if self._slow_start else self.limit * 1.1
                self._set(
                    grown
                    if self._cap is None
                    else min(grown, self._cap - 1)
                    if self.limit < self._cap - 1
                    else self.limit + 1
                )
        elif rate < self._best_rate * 0.8 and self._best_latency and mean_latency > self._best_latency * 1.5:
            self._slow_start = False
            self._set(self.limit * 0.9)
        else:
            self._slow_start = False
            if busy and rate >= self._best_rate * 0.97:
                self._set(self.limit + 1)  # probe on, gently
        if self._best_latency is None or mean_latency < self._best_latency:
            self._best_latency = mean_latency
        self._reset_window(now)
        self._wake()

    # -- the server's own load --------------------------------------------------------------------------

    def _steered_by_load(self) -> bool:
        fresh = max(LOAD_FRESH, 3 * self.load_interval)
        return self.load is not None and time.monotonic() - self.load.at < fresh

    def observe(self, load: ServerLoad) -> None:
        """Steer by the server's load (module docstring): keep a small queue waiting there."""
        self.load = load
        if self.fixed is not None:
            return
        target = max(4.0, load.running / 4)
        full_cache = load.cache_use is not None and load.cache_use > 0.95
        seen = load.running + load.waiting >= 0.5 * self.in_flight  # the server has what bft sent (not in transit)
        if load.waiting < target and self.in_flight >= self.current * 0.9 and seen and not full_cache:
            roomy = load.waiting == 0 and (load.cache_use is None or load.cache_use < 0.5)
            self._set(max(self.limit * (4 if roomy else 2), self.limit + target))
        elif load.waiting > 2 * target:
            # requests already queued stay queued whatever the limit: come down to what runs plus the
            # target, not below, or a queue that drains slowly would halve the limit poll after poll
            self._set(max(load.running + target, self.limit - (load.waiting - target)))
        self._wake()

    def watch(self, read_load) -> None:
        """Read the server's load with `read_load()` (an async function returning a `ServerLoad` or None)
        while requests are in flight, every `load_interval` seconds (module docstring), and steer by it."""
        self._watcher = asyncio.get_running_loop().create_task(self._watch(read_load))

    async def _watch(self, read_load) -> None:
        while True:
            await asyncio.sleep(self.load_interval)
            if self.in_flight == 0:
                continue
            began = time.monotonic()
            load = await read_load()
            # the cheapest of the last reads: one slowed by this process's own lag says nothing of the server
            self._read_times = [*self._read_times[-(READS_REMEMBERED - 1) :], time.monotonic() - began]
            spent = min(self._read_times)
            self.load_interval = min(LOAD_INTERVAL_MAX, max(LOAD_INTERVAL, spent / LOAD_COST_SHARE))
            if load is not None:
                self.observe(load)

    async def stop_watching(self) -> None:
        watcher = getattr(self, "_watcher", None)
        if watcher is not None and not watcher.done():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    # -- what stats.json shows --------------------------------------------------------------------------

    def _sample(self) -> None:
        now = time.monotonic() - self._started
        if not self._samples or now - self._samples[-1][0] >= self._sample_every:
            self._samples.append((round(now, 2), self.in_flight, self.current))
            if len(self._samples) > 4 * SAMPLES:  # keep a few, spread over the run: halve, sample half as often
                self._samples = self._samples[::2]
                self._sample_every *= 2

    def summary(self) -> dict:
        step = max(1, len(self._samples) // SAMPLES)
        return {
            "mode": "fixed" if self.fixed is not None else "auto",
            "steered_by": "fixed" if self.fixed is not None else "server /metrics" if self.load else "replies",
            "limit_low": self.low,
            "limit_high": self.high,
            "limit_settled": settled(self._samples, self.current),
            "in_flight_samples": [list(s) for s in self._samples[::step]],
            "overloaded_429_503": self.overloads,
            "timeouts": self.timeouts,
            "backoffs": self.backoffs,
        }


def settled(samples: list[tuple[float, int, int]], current: int) -> int:
    """The limit most of the run had: the median of the sampled limits (the current one without samples)."""
    limits = sorted(limit for _, in_flight, limit in samples if in_flight)
    return limits[len(limits) // 2] if limits else current


def parse_load(text: str, now: float) -> ServerLoad | None:
    """The load in a Prometheus /metrics text from vLLM, SGLang or TGI; None when none of theirs is there."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name, _, rest = line.partition("{") if "{" in line.split(" ", 1)[0] else line.partition(" ")
        value = rest.rsplit(" ", 1)[-1] if "{" in line.split(" ", 1)[0] else rest
        if name in LOAD_METRICS:
            try:
                values[name] = values.get(name, 0.0) + float(value)
            except ValueError:
                continue
    for running, waiting, cache in LOAD_FAMILIES:
        if running in values and waiting in values:
            use = next((values[c] for c in cache if c in values), None)
            return ServerLoad(values[running], values[waiting], use, now)
    return None


# (running, waiting, cache-use candidates) per server family
LOAD_FAMILIES = (
    (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    ("sglang:num_running_reqs", "sglang:num_queue_reqs", ("sglang:token_usage",)),
    ("tgi_batch_current_size", "tgi_queue_size", ()),
)
LOAD_METRICS = {name for family in LOAD_FAMILIES for name in (family[0], family[1], *family[2])}
