"""A list of chat requests sent to one endpoint, with retries: what tagging, answering and judging send.

`bft build`'s tagger (`builders/instag_counts.py`), `bft eval`'s answers (`training/answers.py`) and its judge
(`training/judge.py`) each have a list of chat turns for one server. Unlike a `bft generate` stage
(journaled, resumable, record by record), these are small batches that either all succeed or stop the
command before anything is written: an outputs file is never missing answers, a report never counts a
failure as a figure. A request that meets a `RetryableError` waits as the engine's do (`retry.py`: backoff
with jitter, the server's `Retry-After` honoured).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.client import Endpoint
from bft.generation.endpoints.retry import RetryPolicy
from bft.generation.errors import BftError, RequestRejected, RetryableError

BACKOFF_CAP = 8.0  # seconds: a batch is small and a person waits for it; the server's Retry-After may ask more


async def ask_all(
    endpoint: Endpoint,
    requests: list[dict[str, Any]],
    model: str | None,
    sampling: SamplingConfig,
    concurrency: int,
    retries: int = 4,
    policy: RetryPolicy | None = None,
) -> list[str | Exception]:
    """Send every request (`message`, optional `system`); returns each reply text, or the error for it.

    A retryable failure is tried again up to `retries` times, waiting as `policy` says (by default backoff
    up to `BACKOFF_CAP`, and a `Retry-After` up to the endpoint's timeout)."""
    policy = policy or RetryPolicy(cap=BACKOFF_CAP, longest_wait=endpoint.timeout)
    gate = asyncio.Semaphore(concurrency)

    async def one(request: dict[str, Any]) -> str | Exception:
        async with gate:
            for attempt in range(retries + 1):
                try:
                    reply = await endpoint.chat(request["message"], model, sampling, system=request.get("system"))
                    return reply.text
                except RetryableError as error:
                    if attempt == retries:
                        return error
                    await asyncio.sleep(policy.delay(attempt + 1, error.retry_after))
                except RequestRejected as error:
                    return error
            raise AssertionError("unreachable: the last attempt returns")

    return await asyncio.gather(*(one(r) for r in requests))


async def ask_endpoint(
    url: str, model: str | None, requests: list[dict[str, Any]], sampling: SamplingConfig, concurrency: int, what: str
) -> tuple[list[str], str | None]:
    """Every request answered by the server at `url`, and the model's name; any request that still fails after
    its retries stops the command before anything is written."""
    endpoint = Endpoint(url)
    endpoint.reserve(concurrency)  # a connection for every request in flight
    try:
        await endpoint.probe()
        endpoint.require_model(model, "the command")
        replies = await ask_all(endpoint, requests, model, sampling, concurrency)
    finally:
        await endpoint.close()
    failed = [(r["message"], reply) for r, reply in zip(requests, replies, strict=True) if isinstance(reply, Exception)]
    if failed:
        first, error = failed[0]
        raise BftError(
            f"{len(failed)} {what} failed (first: {first[:60]!r}: {error}); nothing was written, "
            "rerun when the server is well"
        )
    return [reply for reply in replies if isinstance(reply, str)], model or endpoint.model_id
