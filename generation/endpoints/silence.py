"""Timing out on silence, not on length: a slow reply from a working server is never abandoned.

A real server under load answers slowly: the real vLLM on a CPU, 100 requests running, streams each of them
a token every few seconds, and a 256-token reply takes many minutes. A deadline on the whole request
threw such replies away on a healthy server and asked again (issue 24: 58 of 186 requests in one run).

So a request is abandoned only when it has heard nothing for `seconds` **and** its endpoint has heard
nothing either: no byte of any reply, streamed or whole, on any generation request sent there (the
server's answers to `/tokenize` or `/metrics` do not count: vLLM's API server gives them while its engine
is stuck). A request waiting in a busy server's queue (silent until its first token) is kept while the
server streams tokens to the others; a server that hangs falls silent on every request at once, and each
is abandoned `seconds` after the last thing it heard. One request left hanging while the server serves the
rest (a connection a proxy dropped without a word) is abandoned after `OWN_SILENCE_CAP` times `seconds`
of its own silence, so it neither holds its slot for the whole run nor hangs it.

One timer per request, armed at `max(request heard, endpoint heard) + seconds`: when it fires early (the
endpoint was heard meanwhile) it re-arms itself; each chunk read only stores a time. A timer that runs
late (this process was busy: bytes may be waiting unread in its buffers) looks once more before it
decides, so a busy client does not take its own delay for the server's silence.
"""

from __future__ import annotations

import asyncio
import time

LATE = 0.5  # seconds a timer may run late before the silence it saw is doubted (a busy client, not the server)
OWN_SILENCE_CAP = 4  # a request silent this many times `seconds` itself is abandoned, whatever its endpoint hears


class Silence:
    """One endpoint's hearing: when it last received anything, and the silence its requests may bear."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.heard_at = time.monotonic()

    def watch(self, shared: bool = True) -> RequestWatch:
        """A context for one request: `heard()` on every chunk; raises `TimeoutError` on exit once the
        request and the endpoint have both been silent for `seconds`. `shared=False`: what this request
        hears does not count as the endpoint's (routes that say nothing of generation)."""
        return RequestWatch(self, shared)


class RequestWatch:
    """The silence timer of one request (`Silence.watch`)."""

    __slots__ = ("_cancelling", "_due", "_endpoint", "_fired", "_handle", "_heard_at", "_postponed", "_shared", "_task")

    def __init__(self, endpoint: Silence, shared: bool = True):
        self._endpoint = endpoint
        self._shared = shared
        self._heard_at = time.monotonic()
        self._fired = False
        self._postponed = False
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cancelling = 0
        self._task: asyncio.Task | None = None

    def heard(self) -> None:
        """Something of the reply's body arrived (a streamed line, or the whole body)."""
        self._heard_at = time.monotonic()
        if self._shared:
            self._endpoint.heard_at = self._heard_at

    @property
    def silent_for(self) -> float:
        """Seconds since this request or its endpoint last heard anything (its own silence past the cap)."""
        now = time.monotonic()
        own = now - self._heard_at
        if own >= OWN_SILENCE_CAP * self._endpoint.seconds:
            return own
        return now - max(self._heard_at, self._endpoint.heard_at)

    def _arm(self, deadline: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        if deadline is None:
            self._postponed = False
            heard = max(self._heard_at, self._endpoint.heard_at)
            deadline = min(heard + self._endpoint.seconds, self._heard_at + OWN_SILENCE_CAP * self._endpoint.seconds)
        self._due = deadline
        self._handle = loop.call_at(loop.time() + (deadline - time.monotonic()), self._check)

    def _check(self) -> None:
        now = time.monotonic()
        if self.silent_for < self._endpoint.seconds:
            self._arm()
        elif now - self._due > LATE and not self._postponed:
            # this process was too busy to run the timer on time: bytes may be waiting unread in its buffers,
            # so the silence is not known yet; look once more after they have been read
            self._postponed = True
            self._arm(now + LATE)
        else:
            self._fired = True
            self._task.cancel()

    async def __aenter__(self) -> RequestWatch:
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling()
        self._heard_at = time.monotonic()
        self._arm()
        return self

    async def __aexit__(self, kind, error, traceback) -> bool:
        if self._handle is not None:
            self._handle.cancel()
        # as asyncio.timeout does: our own cancel is taken back; one from outside (the run stopping) stays
        if self._fired and self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            raise TimeoutError(f"nothing heard for {self._endpoint.seconds:g} s") from None
        return False
