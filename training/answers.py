"""Answering an instruction set with a served model, as `bft eval generate` does.

The model is asked each instruction with the papers' decoding (T=0.7, p=0.9) and inference tags
(Humpback found S_a and S_w together best, HB Table 8), placed as it was trained (`method/tags.py`).
Requests go through bft's endpoint client with retries; an instruction that still fails stops the
command before anything is written, so an outputs file is never missing answers.
"""

from __future__ import annotations

import asyncio

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.client import Endpoint, RequestRejected, RetryableError
from bft.generation.errors import BftError, ConfigError
from bft.generation.method.tags import TAGS, tagged_turns


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


def tagged_request(instruction: str, tags: list[str], placement: str) -> dict:
    """The user turn (and system message) the model is asked with: the tags as it was trained with them."""
    turns = tagged_turns(instruction, tags, placement)
    request = {"message": turns[-1]["content"]}
    if turns[0]["role"] == "system":
        request["system"] = turns[0]["content"]
    return request


def parse_tags(value: str) -> list[str]:
    tags = [] if value.strip().lower() == "none" else [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tags if t not in TAGS]
    if unknown:
        raise ConfigError(f"--tags {value!r}: unknown tag(s) {unknown}; use S_a, S_w, S_a,S_w or none")
    return tags


async def answer_all(
    url: str,
    model: str | None,
    rows: list[dict],
    tags: list[str],
    placement: str,
    sampling: SamplingConfig,
    concurrency: int,
    generator: str | None = None,
) -> list[dict]:
    """AlpacaEval `model_outputs` records: each row's instruction answered by the model at `url`."""
    requests = [tagged_request(r["instruction"], tags, placement) for r in rows]
    replies, served = await ask_endpoint(url, model, requests, sampling, concurrency, "answers")
    name = generator or served or "model"
    return [
        {"instruction": r["instruction"], "output": reply.strip(), "generator": name, "dataset": r["dataset"]}
        for r, reply in zip(rows, replies, strict=True)
    ]
