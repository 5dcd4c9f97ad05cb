"""A stage's endpoints: requests within each endpoint's shared limit, least-busy first, dead ones out of rotation.

Each endpoint has one `AdaptiveLimit` (`limiter.py`) that every stage sending to it takes its slots
from, so the endpoint's load is counted once, not per stage. A request goes to the live endpoint whose
limit is least used (in flight / limit; ties: the one that has served fewest), so replicas of different
speeds all stay busy. A stage's requests wait with the stage's `priority` (later stages first).

An endpoint whose requests fail `dead_after` times in a row with a connection error, a timeout or a
502-504 leaves the rotation; a background probe (`/health`, or `/v1/models`) brings it back when it
answers again. The **only** live endpoint is not taken out for a run of failures while it still answers
some requests: it leaves only when nothing it was sent has succeeded for `probe_interval` seconds either
(a struggling server is backed off by its limit, not dropped; a dead one still stops the run). Requests
wait for a live endpoint, but never longer than `down_timeout` seconds with none at all: then the run
stops with an `EndpointError` instead of hanging.

Waiting uses plain futures, not `asyncio.Condition`: the pool's state only changes between awaits of one
event loop, so it needs no lock. A freed slot is handed to a waiter by the endpoint's limit; an endpoint
leaving or coming back wakes all of the pool's waiters. With a Condition, a waiter whose `wait_for` timed
out (or that the engine cancelled) had to re-acquire the Condition's lock; on Python 3.11, when many did
so at once, they could all be left waiting on a lock nobody held, and the run hung instead of stopping
(reproduced under CPU load by `test_no_live_endpoint_stops_the_run...`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from bft.generation.endpoints.client import Endpoint
from bft.generation.endpoints.failures import DOWN_CAUSES, OVERLOAD_CAUSES
from bft.generation.endpoints.limiter import AdaptiveLimit, Waiter
from bft.generation.endpoints.processes import server_exit, server_restarting
from bft.generation.errors import EndpointError, RetryableError


@dataclass(eq=False)
class Member:
    """One endpoint's place in a pool."""

    endpoint: Endpoint
    limiter: AdaptiveLimit
    served: int = 0
    failures_in_a_row: int = 0
    last_success: float = field(default_factory=time.monotonic)
    alive: bool = True
    probe: asyncio.Task | None = field(default=None, repr=False)

    def load(self) -> float:
        return self.limiter.in_flight / self.limiter.current


class EndpointPool:
    """The endpoints one stage sends to."""

    def __init__(
        self,
        stage: str,
        endpoints: list[Endpoint],
        priority: int = 0,
        dead_after: int = 3,
        probe_interval: float = 5.0,
        down_timeout: float = 600.0,
        log=None,
    ):
        if not endpoints:
            raise EndpointError(f"stage {stage} has no endpoint")
        self.stage = stage
        self.priority = priority
        self.members = [Member(e, limiter_of(e)) for e in endpoints]
        self.dead_after = dead_after
        self.probe_interval = probe_interval
        self.down_timeout = down_timeout
        self.events: Counter = Counter()  # removed / restored, for stats.json
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._waiters: deque[asyncio.Future] = deque()  # oldest first; finished ones skipped
        self._compact_at = 1024

    @property
    def endpoints(self) -> list[Endpoint]:
        return [m.endpoint for m in self.members]

    def limit_text(self) -> str:
        """The current limit of each endpoint, for the progress bar (`64`, or `64+32` for two)."""
        return "+".join(str(m.limiter.current) for m in self.members)

    async def _wait(self, members: list[Member], timeout: float | None) -> AdaptiveLimit | None | bool:
        """Wait for a slot on one of `members` (the limit that handed it over), for the pool to change
        (None), or `timeout` seconds (False)."""
        waiter = Waiter(self.priority)
        for member in members:
            member.limiter.wait(waiter)
        if len(self._waiters) >= self._compact_at:  # finished waiters are skipped, and dropped now and then
            self._waiters = deque(w for w in self._waiters if not w.done())
            self._compact_at = max(1024, 2 * len(self._waiters))
        self._waiters.append(waiter.future)
        try:
            done, _ = await asyncio.wait({waiter.future}, timeout=timeout)
            return waiter.future.result() if done else False
        except BaseException:  # cancelled: a slot handed over but not used goes to the next waiter
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result() is not None:
                waiter.future.result().give_back()
            raise
        finally:
            if not waiter.future.done():  # timed out or cancelled before any wakeup
                waiter.future.cancel()

    async def acquire(self) -> Member:
        """Wait for a slot on a live endpoint and take it."""
        loop = asyncio.get_running_loop()
        none_live_since: float | None = None
        while True:
            live = [m for m in self.members if m.alive]
            free = [m for m in live if m.limiter.has_room(self.priority)]
            if free:
                member = min(free, key=lambda m: (m.load(), m.served))
                member.limiter.take()
                return self._took(member)
            if live:
                none_live_since = None
                handed = await self._wait(live, None)  # a slot frees within the request timeout
                member = next((m for m in live if m.limiter is handed), None)
                if member is not None:
                    if member.alive:
                        return self._took(member)
                    member.limiter.give_back()  # it left the rotation meanwhile
                continue
            ended = [server_exit(m.endpoint.url) for m in self.members]
            if all(ended):  # servers bft started, their restarts spent: no wait can bring them back
                raise EndpointError(
                    f"stage {self.stage}: the server bft started at {self.members[0].endpoint.name} has exited "
                    f"({ended[0]}); rerun the same command to resume (finished documents are kept)"
                )
            if any(server_restarting(m.endpoint.url) for m in self.members):
                # a restart under way is bounded by its own start-up timeout: wait for it, looking again now and
                # then (it may give up), without spending the down timeout
                none_live_since = None
                await self._wait([], self.probe_interval)
                continue
            none_live_since = none_live_since or loop.time()
            remaining = none_live_since + self.down_timeout - loop.time()
            if remaining <= 0 or await self._wait([], remaining) is False:
                urls = ", ".join(m.endpoint.name for m in self.members)
                raise EndpointError(
                    f"stage {self.stage}: no endpoint has answered for {self.down_timeout:.0f} s ({urls}); "
                    "start them and run the same command again to resume"
                )

    def _took(self, member: Member) -> Member:
        member.served += 1
        return member

    def _changed(self) -> None:
        """An endpoint left or came back: every waiter looks again."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, call):
        """Run `call(endpoint)` on the least busy live endpoint; return (endpoint, result).

        The endpoint's limit hears how it went: the answer's completion tokens and latency (a result
        with `completion_tokens`), a 429/503, or a timeout."""
        member = await self.acquire()
        sent = time.monotonic()
        outcome = {}
        try:
            result = await call(member.endpoint)
        except (RetryableError, TimeoutError) as error:
            cause = getattr(error, "cause", "timeout")
            outcome = {
                "overloaded": cause in OVERLOAD_CAUSES and cause != "overloaded",
                "rate_limited": cause == "overloaded",  # a 429
                "timed_out": cause == "timeout",
            }
            if cause in DOWN_CAUSES:
                await self._failed(member, str(error) or cause)
            raise
        else:
            member.failures_in_a_row = 0
            member.last_success = time.monotonic()
            tokens = getattr(result, "completion_tokens", None) or 0
            outcome = {"tokens": tokens, "latency": member.last_success - sent}
            return member.endpoint, result
        finally:
            member.limiter.release(**outcome)

    async def _failed(self, member: Member, why: str = "") -> None:
        member.failures_in_a_row += 1
        restarting = server_restarting(member.endpoint.url)  # (a server bft restarts leaves at its first failure)
        if member.alive and (member.failures_in_a_row >= self.dead_after or restarting) and self._may_leave(member):
            member.alive = False
            self.events["removed"] += 1
            last = f" (last: {why[:200]})" if why else ""
            self.log(
                f"bft: {self.stage}: {member.endpoint.name} failed {member.failures_in_a_row} times in a row{last}; "
                f"out of rotation, probing every {self.probe_interval:g} s"
            )
            member.probe = asyncio.create_task(self._probe(member))
            self._changed()  # waiters look again: with no live endpoint left, their deadline starts

    def _may_leave(self, member: Member) -> bool:
        """Another endpoint is live, this one has answered nothing for `probe_interval` seconds, or it is a server
        bft is restarting (its requests would only spend their retries until it is ready)."""
        others = any(m.alive for m in self.members if m is not member)
        silent = time.monotonic() - member.last_success >= self.probe_interval
        return others or silent or server_restarting(member.endpoint.url)

    async def _probe(self, member: Member) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            if await member.endpoint.healthy():
                member.alive = True
                member.failures_in_a_row = 0
                self.events["restored"] += 1
                self._changed()
                self.log(f"bft: {self.stage}: {member.endpoint.name} answers again; back in rotation")
                return

    async def close(self) -> None:
        for member in self.members:
            if member.probe is not None and not member.probe.done():
                member.probe.cancel()
                await asyncio.gather(member.probe, return_exceptions=True)


def limiter_of(endpoint: Endpoint) -> AdaptiveLimit:
    """The endpoint's shared limit (`open_pools` gives each one; a bare endpoint gets a fixed default)."""
    if getattr(endpoint, "limiter", None) is None:
        endpoint.limiter = AdaptiveLimit(endpoint.name, fixed=endpoint.max_concurrent_requests or 8)
    return endpoint.limiter
