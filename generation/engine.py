"""The stage engine: streams documents through the stages against the endpoints, resumably.

Each document moves through its stages as one asyncio task; it goes on to the next stage as soon as
the previous one is done with it. Bounds keep memory flat: at most `max_documents_in_flight` tasks
exist, and each endpoint has at most `max_concurrency` requests outstanding per stage. Among a stage's
endpoints, a request goes to the one with the fewest outstanding requests.

Every document that enters a stage leaves it as a journal line, kept or rejected with a reason, before
it moves on (see `journal.py`): a rerun skips finished work and never writes a document twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from bft.generation.client import Endpoint, RequestRejected, RetryableError
from bft.generation.corpus import Document, Rejected
from bft.generation.errors import EndpointError
from bft.generation.journal import Journal
from bft.generation.records import KEPT, REJECTED, StageRecord
from bft.generation.stages import Stage

PREPARE = "prepare"


@dataclass
class StageStats:
    """Counters for one stage, written to `stats.json`."""

    entered: int = 0
    kept: int = 0
    rejected: int = 0
    rejected_by_reason: Counter = field(default_factory=Counter)
    requests: int = 0
    retries_by_cause: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    resumed: int = 0
    first_start: float | None = None
    last_end: float | None = None

    @property
    def seconds(self) -> float:
        """Wall time from this stage's first request to its last answer (requests overlap)."""
        return (self.last_end - self.first_start) if self.first_start is not None and self.last_end else 0.0

    def timed(self, begun: float, ended: float) -> None:
        self.first_start = begun if self.first_start is None else min(self.first_start, begun)
        self.last_end = ended if self.last_end is None else max(self.last_end, ended)

    def count(self, record: StageRecord) -> None:
        self.entered += 1
        if record.status == KEPT:
            self.kept += 1
        else:
            self.rejected += 1
            self.rejected_by_reason[record.reason] += 1

    def as_dict(self) -> dict:
        return {
            "entered": self.entered,
            "kept": self.kept,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "requests": self.requests,
            "retries_by_cause": dict(sorted(self.retries_by_cause.items())),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "resumed_from_journal": self.resumed,
            "seconds": round(self.seconds, 3),
            "completion_tokens_per_second": round(self.completion_tokens / self.seconds, 2) if self.seconds else None,
        }


class EndpointPool:
    """A stage's endpoints with a concurrency bound each; picks the least busy one."""

    def __init__(self, endpoints: list[Endpoint], max_concurrency: int):
        self.endpoints = endpoints
        self.outstanding = {id(e): 0 for e in endpoints}
        self.limits = {id(e): asyncio.Semaphore(max_concurrency) for e in endpoints}
        self.capacity = len(endpoints) * max_concurrency

    async def run(self, call):
        endpoint = min(self.endpoints, key=lambda e: self.outstanding[id(e)])
        self.outstanding[id(endpoint)] += 1
        try:
            async with self.limits[id(endpoint)]:
                return endpoint, await call(endpoint)
        finally:
            self.outstanding[id(endpoint)] -= 1


class Engine:
    """Runs `stages` over a document stream, journaling each outcome under `journal_dir`."""

    def __init__(
        self,
        stages: list[Stage],
        pools: dict[str, EndpointPool],
        journal_dir,
        max_retries: int = 5,
        request_timeout: float = 300.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        progress: bool = True,
    ):
        self.stages = stages
        self.pools = pools
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.journals = {name: Journal(journal_dir / f"{name}.jsonl") for name in [PREPARE] + [s.name for s in stages]}
        self.stats = {name: StageStats() for name in self.journals}
        self.progress = progress
        self._bars: dict[str, tqdm] = {}
        self._fatal: BaseException | None = None

    # -- resume ---------------------------------------------------------------------------------------

    def _load_done(self) -> tuple[dict[str, set[str]], dict[str, StageRecord]]:
        """Ids finished per stage, and the kept records whose next stage has not run yet."""
        names = list(self.journals)
        done: dict[str, set[str]] = {}
        kept_offsets: dict[str, dict[str, int]] = {}
        for name in names:
            journal = self.journals[name]
            journal.repair()
            done[name] = set()
            kept_offsets[name] = {}
            for offset, entry in journal.entries():
                if entry["id"] in done[name]:
                    continue
                done[name].add(entry["id"])
                record = StageRecord.from_dict(entry)
                self.stats[name].count(record)
                self.stats[name].resumed += 1
                if record.status == KEPT:
                    kept_offsets[name][entry["id"]] = offset
        pending: dict[str, StageRecord] = {}
        for previous, current in zip(names[1:], names[2:], strict=False):
            for doc_id, offset in kept_offsets[previous].items():
                if doc_id not in done[current]:
                    pending[doc_id] = self.journals[previous].read_at(offset)
        return done, pending

    # -- requests -------------------------------------------------------------------------------------

    async def _attempt(self, stage: Stage, record: StageRecord) -> StageRecord:
        """Send one stage's request with retries; return this stage's record for the document."""
        request = stage.request(record)
        stats = self.stats[stage.name]
        pool = self.pools[stage.name]
        config = stage.config
        last_cause, endpoint = "", None
        for attempt in range(1, self.max_retries + 2):

            async def call(ep: Endpoint):
                if self._fatal is not None:  # another request found the endpoint unusable: send nothing more
                    raise asyncio.CancelledError
                stats.requests += 1
                send = ep.chat if request.mode == "chat" else ep.complete
                return await asyncio.wait_for(
                    send(request.text, config.model, config.sampling), self.request_timeout + 5
                )

            try:
                endpoint, generation = await pool.run(call)
            except RequestRejected as error:
                return stage.failure(record, error.reason, error.detail, attempt, endpoint)
            except EndpointError as error:
                self._fatal = self._fatal or error
                raise
            except (RetryableError, asyncio.TimeoutError) as error:
                cause = getattr(error, "cause", "timeout")
                last_cause = str(error) or cause
                if attempt <= self.max_retries:
                    stats.retries_by_cause[cause] += 1
                    delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
                    await asyncio.sleep(delay * (0.5 + random.random() / 2))
                continue
            stats.prompt_tokens += generation.prompt_tokens or 0
            stats.completion_tokens += generation.completion_tokens or 0
            return stage.outcome(record, generation, attempt, endpoint)
        return stage.failure(record, "request_failed", last_cause, self.max_retries + 1, endpoint)

    def _finish(self, name: str, record: StageRecord) -> None:
        self.journals[name].append(record)
        self.stats[name].count(record)
        bar = self._bars.get(name)
        if bar is not None:
            stats = self.stats[name]
            bar.update(1)
            bar.set_postfix(kept=stats.kept, rejected=stats.rejected, refresh=False)

    async def _process(self, record: StageRecord, start: int) -> None:
        for stage in self.stages[start:]:
            begun = time.monotonic()
            result = await self._attempt(stage, record)
            self.stats[stage.name].timed(begun, time.monotonic())
            self._finish(stage.name, result)
            if result.status != KEPT:
                return
            record = result

    # -- the run --------------------------------------------------------------------------------------

    async def run(self, documents, total: int | None = None, max_documents_in_flight: int | None = None) -> None:
        """Process every document of `documents` (Document or Rejected items) through the stages."""
        done, pending = self._load_done()
        for journal in self.journals.values():
            journal.open()
        in_flight = max_documents_in_flight or max(4, 2 * sum(p.capacity for p in self.pools.values()))
        if self.progress:
            for position, name in enumerate(self.journals):
                self._bars[name] = tqdm(total=total, desc=f"{name:>13}", position=position, leave=True, unit="doc")
                self._bars[name].update(self.stats[name].entered)
        slots = asyncio.Semaphore(in_flight)
        tasks: set[asyncio.Task] = set()
        stage_names = [s.name for s in self.stages]
        wall = time.monotonic()

        def task_done(task: asyncio.Task) -> None:
            tasks.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                self._fatal = self._fatal or task.exception()

        try:
            for item in documents:
                if self._fatal is not None:
                    break
                if item.id in done[PREPARE]:
                    continue
                if isinstance(item, Rejected):
                    self._finish(PREPARE, _prepare_rejection(item))
                    continue
                start = next((i for i, name in enumerate(stage_names) if item.id not in done[name]), None)
                if start is None:
                    continue
                if start == 0:
                    record = _prepared(item)
                else:
                    record = pending.pop(item.id, None)
                    if record is None:  # rejected at an earlier stage: finished
                        continue
                await slots.acquire()
                task = asyncio.create_task(self._process(record, start))
                tasks.add(task)
                task.add_done_callback(task_done)
            if tasks:
                await asyncio.wait(set(tasks))
            if self._fatal is not None:
                raise self._fatal
        except BaseException:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            for journal in self.journals.values():
                journal.close()
            for bar in self._bars.values():
                bar.close()
            self.wall_seconds = time.monotonic() - wall


def _prepared(document: Document) -> StageRecord:
    return StageRecord(
        id=document.id,
        stage=PREPARE,
        status=KEPT,
        document=document.text,
        position=document.position,
        input_location=document.location,
        url=document.url,
        source=document.source,
        flags=list(document.flags),
    )


def _prepare_rejection(item: Rejected) -> StageRecord:
    return StageRecord(
        id=item.id,
        stage=PREPARE,
        status=REJECTED,
        reason=item.reason,
        document=item.raw or "",
        position=item.position,
        input_location=item.location,
        url=item.url,
        source=item.source,
    )
