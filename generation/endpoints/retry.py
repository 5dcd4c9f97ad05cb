"""How long to wait before retrying a request that met a `RetryableError`: one policy for every sender.

`bft generate`'s engine (`run/engine.py`) and the lists of requests the commands send to one endpoint
(`chat_batch.py`: tagging, answers, judging) both wait by it:

- exponential backoff from `base` seconds, doubling each retry, at most `cap`;
- jitter: each wait is drawn from [half, all] of that, so requests that failed together do not come back
  together;
- the server's own `Retry-After` (a rate limit's window, `RetryableError.retry_after`) wins over a shorter
  backoff, but no wait is longer than `longest_wait` (a server asking for an hour does not stall the run
  for an hour: the retry meets its answer again, and the retries are counted).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff with jitter, honouring the server's `Retry-After` up to `longest_wait` seconds."""

    base: float = 0.5  # seconds before the first retry (before jitter)
    cap: float = 30.0  # the longest backoff (before jitter)
    longest_wait: float = 300.0  # the longest wait a server's `Retry-After` may ask for

    def delay(self, retry: int, retry_after: float | None = None, draw: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (1 for the first), given the server's `Retry-After`.

        `draw` gives a number in [0, 1) for the jitter (tests pass their own)."""
        backoff = min(self.cap, self.base * 2 ** (retry - 1)) * (0.5 + draw() / 2)
        return max(backoff, min(retry_after or 0.0, self.longest_wait))
