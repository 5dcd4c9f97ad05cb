"""Answering an instruction set with a served model, as `bft eval generate` does.

The model is asked each instruction with the papers' decoding (T=0.7, p=0.9) and inference tags
(Humpback found S_a and S_w together best, HB Table 8), placed as it was trained (`method/tags.py`).
Requests go through bft's endpoint client with retries; an instruction that still fails stops the
command before anything is written, so an outputs file is never missing answers.
"""

from __future__ import annotations

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.chat_batch import ask_endpoint
from bft.generation.errors import ConfigError
from bft.generation.method.tags import INFERENCE_TAGS, tagged_turns


def tagged_request(instruction: str, tags: list[str], placement: str) -> dict:
    """The user turn (and system message) the model is asked with: the tags as it was trained with them."""
    turns = tagged_turns(instruction, tags, placement)
    request = {"message": turns[-1]["content"]}
    if turns[0]["role"] == "system":
        request["system"] = turns[0]["content"]
    return request


def parse_tags(value: str) -> list[str]:
    tags = [] if value.strip().lower() == "none" else [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tags if t not in INFERENCE_TAGS]
    if unknown:
        raise ConfigError(
            f"--tags {value!r}: unknown tag(s) {unknown}; use S_a, S_w, S_w_if_needed (BAFT's inference suffix), "
            "a comma-separated list of them, or none"
        )
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
