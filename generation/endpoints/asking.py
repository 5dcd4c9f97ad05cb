"""A list of chat requests answered by one endpoint, with retries: what `bft eval` and the data report send.

Unlike a `bft generate` stage (journaled, resumable, record by record), these are small batches that
either all succeed or stop the command before anything is written: an outputs file is never missing
answers, a report never counts a failure as a figure.
"""

from __future__ import annotations

import asyncio

from bft.generation.endpoints.client import Endpoint, RequestRejected, RetryableError
from bft.generation.errors import BftError


async def ask_all(endpoint, requests: list[dict], model, sampling, concurrency: int, retries: int = 4) -> list:
    """Send every request (`message`, optional `system`); returns each reply text, or the error for it."""
    gate = asyncio.Semaphore(concurrency)

    async def one(request: dict):
        async with gate:
            for attempt in range(retries + 1):
                try:
                    reply = await endpoint.chat(request["message"], model, sampling, system=request.get("system"))
                    return reply.text
                except RetryableError as error:
                    if attempt == retries:
                        return error
                    await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
                except RequestRejected as error:
                    return error

    return await asyncio.gather(*(one(r) for r in requests))


async def ask_endpoint(url: str, model: str | None, requests: list[dict], sampling, concurrency: int, what: str):
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
    return replies, model or endpoint.model_id
