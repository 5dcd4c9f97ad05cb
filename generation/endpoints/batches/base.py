"""What a batch API offers the run: request lines, submit, status, results, cancel.

A batch item is one request a stage would have sent live; its `custom_id` names it in the provider's
files and in bft's ledger of pending batches, so a resumed run finds it again. A result is the reply as
bft reads live replies (`protocols.ServedReply`), or an `ItemFailure` saying why there is none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.protocols import ServedReply

CUSTOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the strictest provider's rule (Anthropic's)


@dataclass(frozen=True)
class BatchItem:
    """One request in a batch: a chat user turn or a raw prompt, with the stage's sampling."""

    custom_id: str
    mode: Literal["chat", "raw"]
    text: str
    model: str | None
    sampling: SamplingConfig
    top_n: int | None = None

    def __post_init__(self) -> None:
        if not CUSTOM_ID_RE.match(self.custom_id):
            raise ValueError(f"batch custom_id {self.custom_id!r} must be 1-64 letters, digits, '_' or '-'")


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold: requests and bytes of its request file (the provider's documented limits)."""

    max_requests: int
    max_bytes: int


BatchState = Literal["pending", "ended", "failed"]


@dataclass
class BatchStatus:
    """A batch as the provider reports it. `ended`: its results can be read (some items may have failed);
    `failed`: the batch as a whole was refused or lost (every item is to be sent again); `pending`: not yet."""

    id: str
    state: BatchState
    counts: dict[str, int] = field(default_factory=dict)  # the provider's own counters, as it names them
    detail: str = ""  # the provider's status word and any error it gave


FailureKind = Literal["expired", "canceled", "errored", "refused"]


@dataclass(frozen=True)
class ItemFailure:
    """An item that came back without a reply. `expired`/`canceled`/`errored` may succeed when sent again;
    `refused` is the provider refusing this request itself (an invalid or too long input): not sent again."""

    kind: FailureKind
    detail: str
    status: int | None = None  # the HTTP status the provider gave the item, when it did


class BatchApi(Protocol):
    """One provider's batch protocol. Implementations raise the errors of `bft.generation.errors`:
    `EndpointError` (bad key, unknown route: the run stops), `RetryableError` (429, 5xx, dropped
    connections: the caller retries with backoff), `RequestRejected` (the provider refused a whole file)."""

    name: str  # "openai" | "anthropic" | "vllm"
    limits: BatchLimits

    def line(self, item: BatchItem) -> bytes:
        """The item as one line of the provider's request file (newline included), to be measured and sent."""
        ...

    async def submit(self, lines: list[bytes], label: str) -> str:
        """Create a batch of `lines` (already within `limits`); return its id. `label` names the run and stage
        in the provider's metadata where it keeps one."""
        ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def results(self, batch_id: str) -> dict[str, ServedReply | ItemFailure]:
        """Every item of an ended batch by custom_id: its reply, or why it has none."""
        ...

    async def cancel(self, batch_id: str) -> None: ...

    async def close(self) -> None: ...


def check_within(lines: list[bytes], limits: BatchLimits, label: str) -> None:
    """Refuse a batch of no lines, or one over `limits` (the run cuts batches to fit before submitting)."""
    if not lines:
        raise ValueError(f"batch {label!r}: no request lines")
    size = sum(len(line) for line in lines)
    if len(lines) > limits.max_requests or size > limits.max_bytes:
        raise ValueError(
            f"batch {label!r}: {len(lines)} lines of {size} bytes is over the limits of one batch "
            f"({limits.max_requests} requests, {limits.max_bytes} bytes): cut it with split_lines"
        )


def split_lines(lines: list[bytes], limits: BatchLimits) -> list[list[bytes]]:
    """`lines` cut into consecutive batches, each within `limits`; a single line over the byte limit is
    the caller's to refuse (it can be sent in no batch)."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and (len(current) >= limits.max_requests or size + len(line) > limits.max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        batches.append(current)
    return batches
