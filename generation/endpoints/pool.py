"""A stage's endpoints: bounded requests in flight each, least-busy first, dead ones out of rotation.

Each endpoint takes at most `limit` requests at once (TGI's `/info` `max_concurrent_requests` by
default, so the server queues instead of answering 429). A request goes to the live endpoint with the
fewest outstanding requests (ties: the one that has served fewest), so replicas of different speeds all
stay busy.

An endpoint whose requests fail `dead_after` times in a row with a connection error, a timeout or a
502-504 leaves the rotation; a background probe (`/health`, or `/v1/models`) brings it back when it
answers again. Requests wait for a live endpoint, but never longer than `down_timeout` seconds with none
at all: then the run stops with an `EndpointError` instead of hanging.

Waiting uses plain futures, not `asyncio.Condition`: the pool's state only changes between awaits of one
event loop, so it needs no lock. A freed slot wakes the longest waiter (a waiter that is cancelled after
being woken passes the wakeup on); an endpoint leaving or coming back wakes them all. With a Condition, a
waiter whose `wait_for` timed out (or that the engine cancelled) had to re-acquire the Condition's lock;
on Python 3.11, when many did so at once, they could all be left waiting on a lock nobody held, and the
run hung instead of stopping (reproduced under CPU load by `test_no_live_endpoint_stops_the_run...`).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter, deque
from dataclasses import dataclass, field

from bft.generation.endpoints.client import DOWN_CAUSES, Endpoint, RetryableError
from bft.generation.errors import EndpointError


@dataclass(eq=False)
class Member:
    """One endpoint's place in a pool."""

    endpoint: Endpoint
    limit: int
    outstanding: int = 0
    served: int = 0
    failures_in_a_row: int = 0
    alive: bool = True
    probe: asyncio.Task | None = field(default=None, repr=False)


class EndpointPool:
    """The endpoints one stage sends to."""

    def __init__(
        self,
        stage: str,
        endpoints: list[Endpoint],
        limits: list[int],
        dead_after: int = 3,
        probe_interval: float = 5.0,
        down_timeout: float = 600.0,
        log=None,
    ):
        if not endpoints:
            raise EndpointError(f"stage {stage} has no endpoint")
        self.stage = stage
        self.members = [Member(e, max(1, limit)) for e, limit in zip(endpoints, limits, strict=True)]
        self.dead_after = dead_after
        self.probe_interval = probe_interval
        self.down_timeout = down_timeout
        self.events: Counter = Counter()  # removed / restored, for stats.json
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._waiters: deque[asyncio.Future] = deque()  # oldest first

    @property
    def endpoints(self) -> list[Endpoint]:
        return [m.endpoint for m in self.members]

    @property
    def capacity(self) -> int:
        return sum(m.limit for m in self.members)

    def _changed(self, everyone: bool = True) -> None:
        """Wake the waiters (`everyone`: an endpoint left or came back), or the longest one (a slot freed)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    async def _wait_for_change(self, timeout: float | None) -> bool:
        """Wait until the pool changes (True) or `timeout` seconds pass (False)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
            return bool(done)
        except BaseException:  # cancelled: a wakeup this task got but will not use goes to the next waiter
            if waiter.done() and not waiter.cancelled():
                self._changed(everyone=False)
            raise
        finally:
            if not waiter.done():  # timed out or cancelled before any wakeup
                waiter.cancel()
                self._waiters.remove(waiter)

    async def acquire(self) -> Member:
        """Wait for a free slot on a live endpoint and take it."""
        loop = asyncio.get_running_loop()
        none_live_since: float | None = None
        while True:
            live = [m for m in self.members if m.alive]
            free = [m for m in live if m.outstanding < m.limit]
            if free:
                member = min(free, key=lambda m: (m.outstanding, m.served))
                member.outstanding += 1
                member.served += 1
                return member
            if live:
                none_live_since = None
                await self._wait_for_change(None)  # a slot frees within the request timeout
                continue
            none_live_since = none_live_since or loop.time()
            remaining = none_live_since + self.down_timeout - loop.time()
            if remaining <= 0 or not await self._wait_for_change(remaining):
                urls = ", ".join(m.endpoint.name for m in self.members)
                raise EndpointError(
                    f"stage {self.stage}: no endpoint has answered for {self.down_timeout:.0f} s ({urls}); "
                    "start them and run the same command again to resume"
                )

    async def release(self, member: Member) -> None:
        member.outstanding -= 1
        self._changed(everyone=False)

    async def run(self, call):
        """Run `call(endpoint)` on the least busy live endpoint; return (endpoint, result)."""
        member = await self.acquire()
        try:
            result = await call(member.endpoint)
        except (RetryableError, TimeoutError) as error:
            if getattr(error, "cause", "timeout") in DOWN_CAUSES:
                await self._failed(member)
            raise
        else:
            member.failures_in_a_row = 0
            return member.endpoint, result
        finally:
            await self.release(member)

    async def _failed(self, member: Member) -> None:
        member.failures_in_a_row += 1
        if member.alive and member.failures_in_a_row >= self.dead_after:
            member.alive = False
            self.events["removed"] += 1
            self.log(
                f"bft: {self.stage}: {member.endpoint.name} failed {member.failures_in_a_row} times in a row; "
                f"out of rotation, probing every {self.probe_interval:g} s"
            )
            member.probe = asyncio.create_task(self._probe(member))
            self._changed()  # waiters look again: with no live endpoint left, their deadline starts

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
