"""Record types every floor shares: documents as read, and the records every stage writes.

Ground floor: imports nothing of bft. A corpus yields `Document`s (and `Rejected` records for rows
that cannot enter the pipeline); a server's reply, whatever its protocol, becomes a `Generation`; every
stage writes one `StageRecord` per document, kept or rejected.

One `StageRecord` per document per stage, kept or rejected. It carries the document's identity,
the pair built so far (instruction, score, response) and one `Provenance` entry per stage the
document went through, so a user can answer "why is this row here?" from the row alone: which model
(and revision) saw which prompt (template name and hash), with which sampling parameters, what it
replied verbatim, and how that reply was parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from bft.generation.text import replace_lone_surrogates

KEPT = "kept"
REJECTED = "rejected"


@dataclass
class Document:
    """One input document, with where it came from."""

    id: str
    text: str
    url: str | None
    source: str | None
    location: str  # "file:line" or "hub-id@revision/split#row", for error messages and provenance
    position: int  # order in the corpus, for stable output order
    flags: list[str] = field(default_factory=list)


@dataclass
class Rejected:
    """A record that was read but cannot enter the pipeline."""

    id: str
    reason: str
    location: str
    position: int
    url: str | None = None
    source: str | None = None
    raw: str | None = None
    flags: list[str] = field(default_factory=list)


@dataclass
class TokenChoice:
    """One generated token and the most likely alternatives at its position, as (text, logprob)."""

    text: str
    top: list[tuple[str, float]]


@dataclass
class Generation:
    """A model reply, normalized across servers."""

    text: str
    finish_reason: str | None  # "stop" (end of sequence or stop sequence) | "length" | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    token_choices: list[TokenChoice] | None = None  # only when asked for (`top_n`) and the server returns them
    reasoning: str | None = None  # a reasoning model's thinking, apart from the answer: never parsed
    reasoning_tokens: int | None = None  # of `completion_tokens`, when the server says

    def __post_init__(self) -> None:
        # a JSON body may carry lone surrogates (`\\udc00`); they cannot be journaled as UTF-8
        self.text = replace_lone_surrogates(self.text)
        self.reasoning = replace_lone_surrogates(self.reasoning)


@dataclass
class Provenance:
    """What one stage did to one document."""

    stage: str
    model_id: str | None = None
    model_revision: str | None = None
    api: str | None = None  # tgi | openai
    server: str | None = None  # tgi | vllm | sglang | openai (the OpenAI-compatible server that said nothing)
    server_version: str | None = None  # what the server says of itself (TGI `/info`, vLLM `/version`, SGLang)
    server_args: str | None = None  # a server bft started: the engine arguments it passed ("": none)
    mode: str | None = None  # chat | raw
    template: str | None = None
    template_sha256: str | None = None
    sampling: str | None = None  # JSON of the decoding parameters sent
    prefill: str | None = None
    raw_output: str | None = None
    reasoning: str | None = None  # a reasoning model's thinking, kept apart from `raw_output`
    finish_reason: str | None = None
    parse_status: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int | None = None
    cached: bool | None = None  # true: the reply came from the request cache (`run/cached_replies.py`)
    first_asked_at: str | None = None  # a cached reply: when a server gave it (UTC, ISO 8601)
    first_asked_endpoint: str | None = None  # a cached reply: the endpoint that gave it
    first_asked_run: str | None = None  # a cached reply: the output folder of the run that asked it
    batch: str | None = None  # a reply that came by a provider batch (`send: batch`): the batch's id


@dataclass
class StageRecord:
    """One document's outcome at one stage."""

    id: str
    stage: str
    status: str
    document: str
    position: int
    input_location: str
    url: str | None = None
    source: str | None = None
    reason: str | None = None
    instruction: str | None = None
    score: int | None = None
    expected_score: float | None = None  # sum p(k)*k from the score token's probabilities, when known
    mean_score: float | None = None  # the mean of `curate.samples` parsed scores, when more than one
    grounding: float | None = None  # rewrite: share of its word 3-grams found in the document
    response: str | None = None
    flags: list[str] = field(default_factory=list)
    provenance: list[Provenance] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return self.status == KEPT

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data (what `asdict` gives, without its deep copies: this runs for every
        journal line and output row, and was the client's largest CPU cost)."""
        data = dict(self.__dict__)
        data["flags"] = list(self.flags)
        data["provenance"] = [dict(entry.__dict__) for entry in self.provenance]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecord:
        data = dict(data)
        data["provenance"] = [Provenance(**p) for p in data.get("provenance") or []]
        return cls(**data)


PROVENANCE_TYPE = pa.struct(
    [
        ("stage", pa.string()),
        ("model_id", pa.string()),
        ("model_revision", pa.string()),
        ("api", pa.string()),
        ("server", pa.string()),
        ("server_version", pa.string()),
        ("server_args", pa.string()),
        ("mode", pa.string()),
        ("template", pa.string()),
        ("template_sha256", pa.string()),
        ("sampling", pa.string()),
        ("prefill", pa.string()),
        ("raw_output", pa.string()),
        ("reasoning", pa.string()),
        ("finish_reason", pa.string()),
        ("parse_status", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("attempts", pa.int64()),
        ("cached", pa.bool_()),
        ("first_asked_at", pa.string()),
        ("first_asked_endpoint", pa.string()),
        ("first_asked_run", pa.string()),
        ("batch", pa.string()),
    ]
)

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("stage", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("score", pa.int64()),
        ("expected_score", pa.float64()),
        ("mean_score", pa.float64()),
        ("grounding", pa.float64()),
        ("document", pa.string()),
        ("url", pa.string()),
        ("source", pa.string()),
        ("input_location", pa.string()),
        ("flags", pa.list_(pa.string())),
        ("provenance", pa.list_(PROVENANCE_TYPE)),
    ]
)
