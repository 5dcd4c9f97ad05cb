"""The stage engine: streams documents through the stages against the endpoints, resumably.

Each document moves through its stages as one asyncio task; it goes on to the next stage as soon as
the previous one is done with it. Bounds keep memory flat: at most `max_documents_in_flight` tasks
exist, and each endpoint has at most its limit of requests outstanding per stage (`pool.py`).

Faults: 429, 5xx, timeouts, resets and malformed bodies are retried with exponential backoff and
jitter; a prompt refused as longer than the context is cut to fit once (`fitting.py`) and retried;
other refusals reject the document; 401/403/404 stop the run.

Every document that enters a stage leaves it as a journal line, kept or rejected with a reason, before
it moves on (see `journal.py`): a rerun skips finished work and never writes a document twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from bft.generation.client import Endpoint, RequestRejected, RetryableError
from bft.generation.corpus import Document, Rejected
from bft.generation.errors import EndpointError
from bft.generation.fitting import fit_document, info_limit, parse_context_error
from bft.generation.journal import Journal
from bft.generation.pool import EndpointPool
from bft.generation.records import KEPT, REJECTED, StageRecord
from bft.generation.stages import Request, Stage

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
    truncated: int = 0
    endpoint_events: Counter = field(default_factory=Counter)
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

    def add(self, counts: dict) -> None:
        """Add the counters of another engine's `as_dict()` (a Ray block's) to these; times are not added."""
        self.entered += counts["entered"]
        self.kept += counts["kept"]
        self.rejected += counts["rejected"]
        self.rejected_by_reason.update(counts["rejected_by_reason"])
        self.requests += counts["requests"]
        self.retries_by_cause.update(counts["retries_by_cause"])
        self.prompt_tokens += counts["prompt_tokens"]
        self.completion_tokens += counts["completion_tokens"]
        self.truncated += counts["truncated_to_fit"]
        self.endpoint_events.update(counts["endpoint_events"])
        self.resumed += counts["resumed_from_journal"]

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
            "truncated_to_fit": self.truncated,
            "endpoint_events": dict(sorted(self.endpoint_events.items())),
            "resumed_from_journal": self.resumed,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.requests / self.seconds, 2) if self.seconds else None,
            "completion_tokens_per_second": round(self.completion_tokens / self.seconds, 2) if self.seconds else None,
        }

    def progress_postfix(self, elapsed: float) -> dict:
        """What the progress bar shows beside done/total, rate and ETA."""
        return {
            "req/s": f"{self.requests / elapsed:.1f}" if elapsed > 0 else "-",
            "tok/s": f"{self.completion_tokens / elapsed:.0f}" if elapsed > 0 else "-",
            "retries": sum(self.retries_by_cause.values()),
            "rejected": self.rejected,
        }


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
        truncate_to_fit: bool = True,
        chars_per_token: float = 3.0,
        progress: bool = True,
    ):
        self.stages = stages
        self.pools = pools
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.truncate_to_fit = truncate_to_fit
        self.chars_per_token = chars_per_token
        self.journals = {name: Journal(journal_dir / f"{name}.jsonl") for name in [PREPARE] + [s.name for s in stages]}
        self.stats = {name: StageStats() for name in self.journals}
        self.progress = progress
        self._bars: dict[str, tqdm] = {}
        self._bar_refreshed: dict[str, float] = {}
        self._fatal: BaseException | None = None
        self._started = time.monotonic()
        self.wall_seconds = 0.0

    # -- resume ---------------------------------------------------------------------------------------

    def _load_done(self) -> tuple[dict[str, set[str]], dict[str, tuple[str, int]]]:
        """Ids finished per stage, and where the kept records whose next stage has not run yet are.

        Only (journal, byte offset) pairs stay in memory; the record is read back when its turn comes.
        """
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
        pending: dict[str, tuple[str, int]] = {}
        for previous, current in zip(names[1:], names[2:], strict=False):
            for doc_id, offset in kept_offsets[previous].items():
                if doc_id not in done[current]:
                    pending[doc_id] = (previous, offset)
        return done, pending

    # -- requests -------------------------------------------------------------------------------------

    async def _attempt(self, stage: Stage, record: StageRecord) -> StageRecord:
        """Send one stage's request with retries; return this stage's record for the document."""
        stats = self.stats[stage.name]
        pool = self.pools[stage.name]
        config = stage.config
        request = stage.request(record)
        endpoint: Endpoint | None = None
        retries, attempt, fitted, last_cause = 0, 0, False, ""

        async def call(ep: Endpoint):
            nonlocal endpoint
            if self._fatal is not None:  # another request found the endpoint unusable: send nothing more
                raise asyncio.CancelledError
            endpoint = ep
            stats.requests += 1
            send = ep.chat if request.mode == "chat" else ep.complete
            return await asyncio.wait_for(
                send(request.text, config.model, config.sampling, top_n=request.top_n), self.request_timeout + 5
            )

        while True:
            attempt += 1
            try:
                endpoint, generation = await pool.run(call)
            except RequestRejected as error:
                if error.reason == "input_too_long" and self.truncate_to_fit and not fitted:
                    shorter = self._fit(stage, record, request, error, endpoint)
                    if shorter is not None:
                        fitted, record = True, shorter
                        request = stage.request(record)
                        stats.truncated += 1
                        continue
                    detail = f"{error.detail} (the document cannot be cut to fit)"
                elif fitted:
                    detail = f"{error.detail} (after cutting the document to fit)"
                else:
                    detail = error.detail
                return stage.failure(record, error.reason, detail, attempt, endpoint)
            except EndpointError as error:
                self._fatal = self._fatal or error
                raise
            except (RetryableError, TimeoutError) as error:
                cause = getattr(error, "cause", "timeout")
                last_cause = str(error) or cause
                if retries >= self.max_retries:
                    return stage.failure(record, "request_failed", last_cause, attempt, endpoint)
                retries += 1
                stats.retries_by_cause[cause] += 1
                delay = min(self.backoff_cap, self.backoff_base * 2 ** (retries - 1))
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                continue
            stats.prompt_tokens += generation.prompt_tokens or 0
            stats.completion_tokens += generation.completion_tokens or 0
            if request.top_n and generation.token_choices is None:
                error = EndpointError(
                    f"{endpoint.name} returned no token probabilities, which curate.score_mode 'expected' needs "
                    "(TGI /generate with top_n_tokens, or chat logprobs); use --score-mode parsed"
                )
                self._fatal = self._fatal or error
                raise error
            return stage.outcome(record, generation, attempt, endpoint)

    def _fit(
        self, stage: Stage, record: StageRecord, request: Request, error: RequestRejected, endpoint
    ) -> StageRecord | None:
        """The record with its document cut so the prompt fits the model's context, or None."""
        max_new = stage.config.sampling.max_tokens
        tokenizer = stage.tokenizer if stage.config.tokenizer else None
        cut = fit_document(
            record.document,
            request.text,
            parse_context_error(error.detail, max_new),
            info_limit(
                getattr(endpoint, "max_input_tokens", None), getattr(endpoint, "max_total_tokens", None), max_new
            ),
            self.chars_per_token,
            tokenizer,
        )
        if cut is None:
            return None
        flag = f"truncated_to_fit:{stage.name}:{len(record.document)}->{len(cut)}_chars"
        return replace(record, document=cut, flags=[*record.flags, flag])

    def _finish(self, name: str, record: StageRecord) -> None:
        self.journals[name].append(record)
        stats = self.stats[name]
        stats.count(record)
        bar = self._bars.get(name)
        if bar is not None:
            bar.update(1)
            now = time.monotonic()
            if now - self._bar_refreshed.get(name, 0.0) > 0.5:
                self._bar_refreshed[name] = now
                bar.set_postfix(stats.progress_postfix(now - self._started), refresh=False)

    async def _process(self, record: StageRecord, start: int) -> None:
        for stage in self.stages[start:]:
            begun = time.monotonic()
            if stage.samples > 1:
                results = await asyncio.gather(*(self._attempt(stage, record) for _ in range(stage.samples)))
                result = stage.combine(record, list(results))
            else:
                result = await self._attempt(stage, record)
            self.stats[stage.name].timed(begun, time.monotonic())
            self._finish(stage.name, result)
            if result.status != KEPT:
                return
            record = result

    # -- the run --------------------------------------------------------------------------------------

    async def run(
        self,
        documents,
        total: int | None = None,
        count_total=None,
        max_documents_in_flight: int | None = None,
    ) -> None:
        """Process every document of `documents` (Document or Rejected items) through the stages.

        `total` sizes the progress bars; `count_total`, a function, may count the corpus in a thread
        meanwhile (the bars get their total, hence an ETA, when it returns).
        """
        done, pending = self._load_done()
        for journal in self.journals.values():
            journal.open()
        in_flight = max_documents_in_flight or max(4, 2 * sum(p.capacity for p in self.pools.values()))
        if self.progress:
            for position, name in enumerate(self.journals):
                self._bars[name] = tqdm(total=total, desc=f"{name:>13}", position=position, leave=True, unit="doc")
                resumed = self.stats[self.stages[0].name].entered if name == PREPARE else 0
                self._bars[name].update(self.stats[name].entered + resumed)
            if total is None and count_total is not None:
                counting = asyncio.get_running_loop().run_in_executor(None, count_total)
                counting.add_done_callback(self._set_totals)
        slots = asyncio.Semaphore(in_flight)
        tasks: set[asyncio.Task] = set()
        stage_names = [s.name for s in self.stages]
        wall = self._started = time.monotonic()

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
                    record = item if isinstance(item, StageRecord) else _prepared(item)  # a pool's record as is
                    if PREPARE in self._bars:  # the prepare bar counts documents read, kept ones too
                        self._bars[PREPARE].update(1)
                else:
                    where = pending.pop(item.id, None)
                    if where is None:  # rejected at an earlier stage: finished
                        continue
                    record = self.journals[where[0]].read_at(where[1])
                await slots.acquire()
                task = asyncio.create_task(self._process(record, start))
                tasks.add(task)
                task.add_done_callback(task_done)
            while tasks and self._fatal is None:  # a fatal error cancels the rest at once (rerun resumes them)
                await asyncio.wait(set(tasks), return_when=asyncio.FIRST_EXCEPTION)
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

    def _set_totals(self, counting) -> None:
        if counting.cancelled() or counting.exception() is not None or counting.result() is None:
            return
        for bar in self._bars.values():
            if not bar.disable:  # still open
                bar.total = counting.result()
                bar.refresh()


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
