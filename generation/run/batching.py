"""Stages that send their requests as provider batches (`send: batch`): which request goes in which batch,
when a batch is sent, how its replies come back, and how a resumed run finds the batches it already paid for.

**What goes in a batch.** A stage with `send: batch` has one `BatchSender`. The engine builds each request
exactly as a live one (`stage.request(record)`, the stage's model and sampling, `top_n` for expected scores),
looks it up in the request cache as a live one, and hands the sender a `BatchItem` instead of sending it.
Its `custom_id` is stable across runs (`custom_id`): the stage, a hash of the document id, the sample
number and a hash of the request, so the same request of the same document always has the same name. The
sender keeps one batch in filling per stage; an item joins it unless its custom_id is already on its way
(in the batch being filled, in a batch submitted by this run, or in one an earlier run submitted), in which
case it waits for that one. A request line larger than the API's byte limit fits no batch: it is refused,
as a provider refuses it.

**When a batch is sent.** When it is full: the next item would take it past the API's `limits`
(`batch.max_requests` / `max_bytes` when set, else the provider's), as `base.split_lines` cuts; or when
nothing more can come: every document task alive waits on a batch (`Parking`) while the corpus is read to
its end or the run holds as many documents as it may. The run holds enough documents to fill a batch:
`max_requests`, but at most `MAX_DOCUMENTS_IN_FLIGHT` (10,000) documents, so that memory stays bounded
(a provider's 50,000 or 100,000 are then sent as batches of 10,000). Stages after a batch stage go on (live,
or in their own batches) as each document's reply comes back.

**While it runs.** Each submitted batch is polled, first after `batch.poll_interval` seconds, the wait
doubling up to `batch.poll_max`. Once ended its results are read once and every waiting item answered: a
reply becomes a `Generation` as a live reply does (`client.generation_of`), is stored in the request
cache and journaled by the engine; an item `expired`, `canceled` or `errored` is sent again in a new batch
(up to `max_retries`, counted in `retries_by_cause` as `batch_expired`, `batch_canceled`,
`batch_errored`); a `refused` one is the stage's failure with the provider's words, as a live refusal is
(a prompt the provider calls too long is cut to fit once). A batch that failed as a whole sends all its
items again (`batch_failed`). A batch file the provider refuses as a whole (a setting such as
`completion_window`, an envelope over a limit) stops the run with the provider's words: no item is
journaled, so a rerun after the fix sends them again. The provenance of a reply that came by batch names its
batch (`batch`). A run that stops sends no item into a new batch, and lets a submit in flight end (at most
`SUBMIT_GRACE` seconds) so that its batch is in the ledger.

**The ledger: resumed by id, never paid twice.** `OUT/.bft/batches/STAGE.jsonl` (`layout.batch_ledger`)
is append-only: a line `{"submitted": ID, "api", "url", "custom_ids", "at"}` is written (and synced) as
soon as the provider has given the batch its id, before it is waited on, and `{"taken": ID, "state"}` once
every item it answered is journaled (`state: ended`; a resumed batch, once the run is finished and the stage's
journal holds every document of its items: a rerun with a smaller `--limit` leaves it pending) or when the
batch failed as a whole (`state: failed`: its items are sent again). A rerun of the same command (after a
crash or a SIGKILL) reads it: an item whose custom_id is in a batch submitted and not taken (still running,
or ended but not taken) waits on that batch, the latest that holds it, instead of being submitted again; the
batch is polled on the first such item and its results are read as if this run had sent it (counted as
`resumed`); they stay in memory for the run, for its items that come later. Batches of another API or URL
are not resumed. The one window the ledger cannot close: a run killed after the provider created a batch and
before its id was written (milliseconds); that batch is paid and not waited on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from bft.generation.config import GenerateConfig, StageConfig
from bft.generation.endpoints.batches import anthropic as anthropic_batches
from bft.generation.endpoints.batches.anthropic import ANTHROPIC_URL, AnthropicBatches
from bft.generation.endpoints.batches.base import BatchApi, BatchItem, BatchStatus, ItemFailure
from bft.generation.endpoints.batches.openai import OPENAI_URL, OpenAIBatches
from bft.generation.endpoints.batches.vllm_offline import VLLMOfflineBatches
from bft.generation.endpoints.client import generation_of
from bft.generation.endpoints.failures import TOO_LONG_RE
from bft.generation.endpoints.protocols import ServedReply
from bft.generation.endpoints.retry import RetryPolicy
from bft.generation.endpoints.transport import redact_url
from bft.generation.errors import BftError, ConfigError, EndpointError, RequestRejected, RetryableError
from bft.generation.layout import batch_jobs_dir, batch_ledger, journal_dir
from bft.generation.method.stages import Request, Stage
from bft.generation.reasons import INPUT_INVALID, INPUT_TOO_LONG
from bft.generation.records import Generation
from bft.generation.run.cached_replies import sampling_key
from bft.generation.run.journal import Journal
from bft.generation.run.stats import StageStats

MAX_DOCUMENTS_IN_FLIGHT = 10_000  # documents a run holds to fill batches: memory stays bounded
KEY_ENVS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}  # `batch.token_env` unset
BATCH_FAILED = "batch_failed"  # the retry cause of the items of a batch that failed as a whole
SUBMIT_GRACE = 30.0  # seconds a stopping run waits for a submit in flight to end and write its ledger line


def custom_id(stage: str, document_id: str, sample: int, request: Request, model: str | None, sampling) -> str:
    """The item's name in the provider's files and in the ledger, the same in every run: the stage, a hash of
    the document id, the sample number and a hash of the request (at most 58 of the 64 characters allowed)."""
    asked = [request.mode, request.text, request.top_n, model, sampling_key(sampling)]
    request_hash = hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:24]
    return f"{stage}-{document_hash(document_id)}-{sample}-{request_hash}"


def document_hash(document_id: str) -> str:
    """The part of a custom_id that names its document (so a journaled document tells which items it used)."""
    return hashlib.sha256(document_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def document_of(item: str) -> str:
    """The document hash of a custom_id (`STAGE-DOCUMENT-SAMPLE-REQUEST`)."""
    return item.rsplit("-", 3)[-3]


@dataclass
class BatchSource:
    """Where a batch stage's replies come from, as the engine, the request cache and the provenance read an
    endpoint: the API's name and URL and the model the stage names (no context limits are declared)."""

    name: str  # the redacted URL, or `vllm run_batch MODEL`
    url: str
    api: str  # openai (OpenAI's format: OpenAI, vLLM's run_batch) | anthropic
    server_kind: str  # openai | anthropic | vllm
    model_id: str | None
    model_root: str | None = None  # vLLM's run_batch: the model folder (its files stand in for a revision)
    model_revision: str | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None


@dataclass
class BatchAnswer:
    """What came back for one item: a reply or why there is none, and the batch that said so."""

    batch_id: str
    result: ServedReply | ItemFailure
    whole_batch_failed: bool = False

    @property
    def cause(self) -> str:
        """The retry cause of a failed item (`retries_by_cause`)."""
        if self.whole_batch_failed:
            return BATCH_FAILED
        return f"batch_{self.result.kind}" if isinstance(self.result, ItemFailure) else ""


# -- which documents wait on batches ------------------------------------------------------------------------


class Parking:
    """Whether every document task alive waits on a batch while no more can come (the reader is at the end of
    the corpus or holds all it may): then the batches being filled are sent (`flushes`), full or not."""

    def __init__(self, flushes: list[Callable[[], None]]):
        self.flushes = flushes
        self.alive = 0  # document tasks made and not yet done
        self.parked = 0  # of those, tasks whose every request in flight waits on a batch
        self.reading = True  # the reader may still make document tasks

    def enter(self) -> DocumentWaits:
        """A new document task: counted from its creation, so a task not yet started is not parked."""
        self.alive += 1
        return DocumentWaits(self)

    def leave(self, waits: DocumentWaits) -> None:
        self.alive -= 1
        if waits.parked:
            self.parked -= 1
        self.check()

    def reader(self, reading: bool) -> None:
        """The reader goes on (True), or waits for room or has read everything (False)."""
        self.reading = reading
        self.check()

    def check(self) -> None:
        if self.flushes and not self.reading and self.alive and self.parked >= self.alive:
            for flush in self.flushes:
                flush()


class DocumentWaits:
    """One document task's requests in flight (`branches`: several for `curate.samples`) and how many wait on a
    batch; the batches whose answers it holds (`receipts`), taken once its record is journaled (`settle`)."""

    def __init__(self, parking: Parking):
        self.parking = parking
        self.branches = 0
        self.waiting = 0
        self.parked = False
        self.receipts: list[tuple[PendingBatch, str]] = []

    def begin(self, branches: int = 1) -> None:
        """`branches` more requests in flight (counted before their tasks start)."""
        self.branches += branches
        self._update()

    def end(self) -> None:
        self.branches -= 1
        self._update()

    def park(self) -> None:
        self.waiting += 1
        self._update()

    def unpark(self) -> None:
        self.waiting -= 1
        self._update()

    def settle(self) -> None:
        """The document's record is journaled: the answers it used are taken."""
        receipts, self.receipts = self.receipts, []
        for batch, item in receipts:
            batch.release(item)

    def _update(self) -> None:
        parked = self.branches > 0 and self.waiting >= self.branches
        if parked != self.parked:
            self.parked = parked
            self.parking.parked += 1 if parked else -1
            if parked:
                self.parking.check()


class Waiter:
    """One item's wait for its answer. It counts as parked from `park` until the answer is given (not until its
    task next runs), so `Parking` never counts an answered document as waiting."""

    def __init__(self, waits: DocumentWaits):
        self.future: asyncio.Future[BatchAnswer] = asyncio.get_running_loop().create_future()
        self.waits = waits
        self.open = False

    def park(self) -> None:
        """Start waiting (after the waiter is registered where its answer will come from)."""
        self.open = True
        self.waits.park()

    def answer(self, answer: BatchAnswer) -> None:
        if self._close():
            self.future.set_result(answer)

    def fail(self, error: BaseException) -> None:
        if self._close():
            if isinstance(error, Exception):
                self.future.set_exception(error)
            else:
                self.future.cancel()

    async def wait(self) -> BatchAnswer:
        try:
            return await self.future
        finally:
            self._close()

    def _close(self) -> bool:
        if not self.open:
            return False
        self.open = False
        self.waits.unpark()
        return True


# -- the ledger -----------------------------------------------------------------------------------------------


class Ledger:
    """`OUT/.bft/batches/STAGE.jsonl`: each batch submitted (before it is waited on) and taken (see the module
    docstring). Lines are few (two per batch), each flushed and synced as it is written."""

    def __init__(self, path: Path):
        self.path = path

    def unfinished(self, api: str, url: str) -> dict[str, list[str]]:
        """The batches submitted to `api` at `url` and not taken, oldest first: id -> custom_ids."""
        return {
            batch_id: list(entry["custom_ids"])
            for batch_id, entry in self.untaken().items()
            if entry.get("api") == api and entry.get("url") == url
        }

    def untaken(self) -> dict[str, dict]:
        """Every batch submitted and not taken, whatever its API, oldest first: id -> its `submitted` line."""
        if not self.path.exists():
            return {}
        Journal(self.path).repair()  # a kill mid-write leaves at most a torn last line
        batches: dict[str, dict] = {}
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    raise BftError(
                        f"{self.path}:{number}: not a ledger line; a rerun cannot tell which batches were paid "
                        "for. Move the file aside to submit its stage's requests again"
                    ) from None
                if "taken" in entry:
                    batches.pop(entry["taken"], None)
                else:
                    batches.pop(entry["submitted"], None)  # (an id submitted again, as vLLM's: its latest line counts)
                    batches[entry["submitted"]] = entry
        return batches

    def submitted(self, batch_id: str, api: str, url: str, custom_ids: list[str]) -> None:
        self._write({"submitted": batch_id, "api": api, "url": url, "at": _now(), "custom_ids": custom_ids})

    def taken(self, batch_id: str, state: str) -> None:
        self._write({"taken": batch_id, "state": state, "at": _now()})

    def _write(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- one stage's batches --------------------------------------------------------------------------------------


@dataclass
class PendingBatch:
    """A batch of this run (being submitted or submitted) or of an earlier one (`resumed`), its waiting items,
    its results once read and the items whose answers are not yet journaled (`unsettled`)."""

    custom_ids: list[str]
    id: str = ""
    resumed: bool = False
    waiters: dict[str, list[Waiter]] = field(default_factory=dict)
    results: dict[str, ServedReply | ItemFailure] | None = None
    unsettled: set[str] = field(default_factory=set)
    submitting: asyncio.Task | None = None  # the submit in flight: never cancelled (`BatchSender.close`)
    following: asyncio.Task | None = None
    on_settled: Callable[[PendingBatch], None] | None = None

    def release(self, item: str) -> None:
        self.unsettled.discard(item)
        if not self.unsettled and self.results is not None and self.on_settled is not None:
            self.on_settled(self)
            self.on_settled = None


class BatchSender:
    """The batches of one stage: items collected, batches submitted, polled and read, answers handed back."""

    def __init__(
        self,
        stage: str,
        api: BatchApi,
        source: BatchSource,
        ledger: Ledger,
        config: StageConfig,
        label: str,
        max_retries: int = 5,
        retry_policy: RetryPolicy | None = None,
        log: Callable[[str], None] = tqdm.write,
        journal: Path | None = None,  # the stage's journal: which documents are done, in this run or before
    ):
        self.stage = stage
        self.api = api
        self.source = source
        self.ledger = ledger
        self.journal = journal
        self.stats = StageStats()  # the engine's counters of the stage, once it runs (`Engine`)
        self.label = label
        self.poll_interval = config.batch.poll_interval
        self.poll_max = max(config.batch.poll_max, config.batch.poll_interval)
        self.max_retries = max_retries
        self.retry_policy = retry_policy or RetryPolicy()
        self.log = log
        self._filling: list[tuple[str, bytes]] = []
        self._filling_bytes = 0
        self._filling_waiters: dict[str, list[Waiter]] = {}
        self._holding: dict[str, PendingBatch] = {}  # custom_id -> the batch it is on its way in
        self._batches: list[PendingBatch] = []
        for batch_id, items in ledger.unfinished(self.api.name, source.url).items():
            batch = self._track(PendingBatch(items, id=batch_id, resumed=True, unsettled=set(items)))
            for item in items:
                self._holding[item] = batch  # the latest batch that holds an item wins

    # -- items --------------------------------------------------------------------------------------------

    def item(self, stage: Stage, document_id: str, request: Request, sample: int) -> BatchItem:
        """The batch item of a stage's request, named for every run alike (`custom_id`)."""
        model, sampling = stage.config.model, stage.sampling
        name = custom_id(stage.name, document_id, sample, request, model, sampling)
        return BatchItem(name, request.mode, request.text, model, sampling, request.top_n)  # type: ignore[arg-type]

    async def ask(self, item: BatchItem, waits: DocumentWaits) -> BatchAnswer:
        """The answer to `item`: from a batch already on its way with it, else from the batch being filled."""
        holding = self._holding.get(item.custom_id)
        if holding is not None and holding.resumed:
            self.stats.batch_items_resumed += 1
        if holding is not None and holding.results is not None:  # a resumed batch, read already
            waits.receipts.append((holding, item.custom_id))
            return self._answer_from(holding, item.custom_id)
        waiter = Waiter(waits)
        if holding is not None:
            holding.waiters.setdefault(item.custom_id, []).append(waiter)
            if holding.resumed and holding.following is None:
                self.stats.batches_resumed += 1
                self.log(f"bft generate: {self.stage}: waiting on batch {holding.id}, submitted by an earlier run")
                holding.following = asyncio.create_task(self._follow(holding))
        elif item.custom_id in self._filling_waiters:
            self._filling_waiters[item.custom_id].append(waiter)
        else:
            line = self.api.line(item)
            limits = self.api.limits
            if len(line) > limits.max_bytes:
                detail = f"its request line has {len(line)} bytes, over one batch's {limits.max_bytes}"
                return BatchAnswer("", ItemFailure("refused", detail, 413))
            if self._filling and (
                len(self._filling) >= limits.max_requests or self._filling_bytes + len(line) > limits.max_bytes
            ):
                self.flush()
            self._filling.append((item.custom_id, line))
            self._filling_bytes += len(line)
            self._filling_waiters[item.custom_id] = [waiter]
            if len(self._filling) >= limits.max_requests:
                self.flush()
        waiter.park()  # (may send the batch being filled: nothing more can come)
        return await waiter.wait()

    def _answer_from(self, batch: PendingBatch, item: str) -> BatchAnswer:
        """The answer a read batch holds for `item`; the item is no longer on its way (a retry is sent anew)."""
        if self._holding.get(item) is batch:
            del self._holding[item]
        result = (batch.results or {}).get(item) or ItemFailure("errored", f"batch {batch.id} has no result for it")
        if isinstance(result, ItemFailure):
            self.stats.batch_items_failed[result.kind] += 1
        return BatchAnswer(batch.id, result)

    def generation(self, answer: BatchAnswer) -> Generation:
        """The reply as bft keeps it, or the error the engine acts on: a refusal (`RequestRejected`, too long
        when the provider says so) or an item to send again (`RetryableError`, its cause `batch_...`)."""
        result = answer.result
        if isinstance(result, ItemFailure):
            if result.kind == "refused" and not answer.whole_batch_failed:
                too_long = result.status == 413 or TOO_LONG_RE.search(result.detail)
                reason = INPUT_TOO_LONG if too_long else INPUT_INVALID
                raise RequestRejected(reason, f"{self.source.name} refused it: {result.detail}")
            raise RetryableError(answer.cause, f"{self.source.name}, batch {answer.batch_id}: {result.detail}")
        return generation_of(result, f"{self.source.name} (batch {answer.batch_id})", self.source.model_id)

    # -- batches ------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Submit the batch being filled, if it holds anything (full, or nothing more can come)."""
        if not self._filling:
            return
        lines = [line for _, line in self._filling]
        items = [item for item, _ in self._filling]
        batch = self._track(PendingBatch(items, waiters=self._filling_waiters, unsettled=set(items)))
        for item in items:
            self._holding[item] = batch
        self._filling, self._filling_bytes, self._filling_waiters = [], 0, {}
        batch.submitting = asyncio.create_task(self._submit(batch, lines))
        batch.following = asyncio.create_task(self._submit_and_follow(batch, batch.submitting))

    def _track(self, batch: PendingBatch) -> PendingBatch:
        batch.on_settled = lambda done: self.ledger.taken(done.id, "ended")
        self._batches.append(batch)
        return batch

    async def _submit_and_follow(self, batch: PendingBatch, submitting: asyncio.Task) -> None:
        """Wait for the batch's submit (shielded: cancelling this task leaves the submit running), then follow it."""
        await asyncio.shield(submitting)
        await self._follow(batch)

    async def _submit(self, batch: PendingBatch, lines: list[bytes]) -> None:
        """Submit the batch and write its ledger line as soon as the provider gave its id."""
        try:
            try:
                batch.id = await self._retrying(lambda: self.api.submit(lines, self.label), "submit a batch")
            except RequestRejected as error:  # the whole file refused: a setting to fix, not its items' fault
                raise EndpointError(
                    f"{self.source.name} refused stage {self.stage}'s batch of {len(lines)} requests as a whole: "
                    f"{error.detail}. Fix {self.stage}.batch (completion_window, max_requests, max_bytes) or what "
                    "the provider names, and rerun: its requests are sent again"
                ) from None
            self.ledger.submitted(batch.id, self.api.name, self.source.url, batch.custom_ids)
            self.stats.batches_submitted += 1
            self.stats.batch_items += len(lines)
            self.stats.requests += len(lines)
            self.log(f"bft generate: {self.stage}: batch {batch.id} submitted ({len(lines)} requests)")
        except Exception as error:
            self._give_up(batch, error)
            raise

    async def _follow(self, batch: PendingBatch) -> None:
        """Poll `batch` until it ends (the wait doubling from `poll_interval` to `poll_max`), then answer it."""
        try:
            wait = self.poll_interval
            while True:
                await asyncio.sleep(wait)
                status: BatchStatus = await self._retrying(lambda: self.api.status(batch.id), f"poll batch {batch.id}")
                if status.state != "pending":
                    break
                wait = min(wait * 2, self.poll_max)
            if status.state == "failed":
                self.stats.batches_failed += 1
                self.log(f"bft generate: {self.stage}: batch {batch.id} failed ({status.detail}); sending it again")
                self.ledger.taken(batch.id, "failed")
                failure = ItemFailure("errored", f"the batch failed: {status.detail or 'no detail'}")
                self._end(batch, dict.fromkeys(batch.custom_ids, failure), whole_batch_failed=True)
                return
            results = await self._retrying(lambda: self.api.results(batch.id), f"read batch {batch.id}")
            self._end(batch, results)
        except EndpointError as error:
            if batch.resumed:  # the provider may no longer have it (Anthropic archives results after 29 days)
                error = EndpointError(
                    f"{error}; batch {batch.id} was submitted by an earlier run ({self.ledger.path}): if the "
                    "provider no longer holds it or its results, move that file aside to submit its requests again"
                )
            self._give_up(batch, error)
            raise error from None
        except Exception as error:
            self._give_up(batch, error)
            raise

    def _end(
        self, batch: PendingBatch, results: dict[str, ServedReply | ItemFailure], whole_batch_failed: bool = False
    ) -> None:
        """Answer every item waiting on `batch` with its result. A resumed batch keeps what it holds for items
        not asked yet, for when they are; a batch that failed, or was never created, has nothing to take."""
        batch.results = results
        waiters, batch.waiters = batch.waiters, {}
        if whole_batch_failed or not batch.id:
            batch.on_settled = None
            for item in batch.custom_ids:
                if self._holding.get(item) is batch:
                    del self._holding[item]
            for item, item_waiters in waiters.items():
                answer = BatchAnswer(batch.id, results[item], whole_batch_failed)
                for waiter in item_waiters:
                    waiter.answer(answer)
            return
        for item, item_waiters in waiters.items():
            answer = self._answer_from(batch, item)
            for waiter in item_waiters:
                waiter.waits.receipts.append((batch, item))
                waiter.answer(answer)

    def _give_up(self, batch: PendingBatch, error: BaseException) -> None:
        """Fail every item waiting on `batch` with `error` (the run stops; a rerun resumes the batch by id)."""
        waiters, batch.waiters = batch.waiters, {}
        for item_waiters in waiters.values():
            for waiter in item_waiters:
                waiter.fail(error)

    async def _retrying(self, call, what: str):
        """`call()` again after a `RetryableError` (backoff with jitter), `max_retries` times; then the run stops
        with a message (a rerun resumes every batch the ledger holds)."""
        failures = 0
        while True:
            try:
                return await call()
            except RetryableError as error:
                failures += 1
                if failures > self.max_retries:
                    raise EndpointError(
                        f"{self.source.name}: could not {what} for stage {self.stage} after {failures} tries "
                        f"({error}); rerun the same command to resume (submitted batches are in "
                        f"{self.ledger.path})"
                    ) from None
                await asyncio.sleep(self.retry_policy.delay(failures, error.retry_after))

    async def close(self, finished: bool) -> None:
        """Stop polling (the ledger keeps what is pending for a rerun) and close the API. A finished run has
        journaled every document it was asked for: a batch it read is taken once the stage's journal holds
        every document of its items (this run's or an earlier one's); a batch with items for documents no run
        has journaled yet (a rerun with a smaller `--limit`) stays pending, for the run that asks for them."""
        await self._finish_submits()
        for batch in self._batches:
            if batch.following is not None and not batch.following.done():
                batch.following.cancel()
        journaled: set[str] | None = None
        for batch in self._batches:
            if batch.following is not None:
                await asyncio.gather(batch.following, return_exceptions=True)
            if finished and batch.results is not None and batch.on_settled is not None:
                journaled = self._journaled_documents() if journaled is None else journaled
                batch.unsettled = {item for item in batch.unsettled if document_of(item) not in journaled}
                if not batch.unsettled:
                    batch.release("")
        await self.api.close()

    async def _finish_submits(self) -> None:
        """Let every submit in flight end (`SUBMIT_GRACE` seconds at most): cancelled mid-POST, its batch may be
        created and paid with no id in the ledger; ended, its ledger line is written and a rerun resumes it."""
        submits = [batch.submitting for batch in self._batches if batch.submitting is not None]
        if not submits:  # (ended ones are gathered too: their errors are read)
            return
        if not all(submit.done() for submit in submits):
            self.log(f"bft generate: {self.stage}: the run stops; waiting for a batch submit in flight to end")
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*submits, return_exceptions=True)), SUBMIT_GRACE)
        except TimeoutError:
            self.log(
                f"bft generate: {self.stage}: a batch submit did not end within {SUBMIT_GRACE:.0f} s of the run's "
                f"end; if the provider created it, its id is not in {self.ledger.path}"
            )

    def _journaled_documents(self) -> set[str]:
        """The document hashes of every document the stage's journal holds (none without a journal)."""
        if self.journal is None:
            return set()
        return {document_hash(entry["id"]) for _, entry in Journal(self.journal).entries() if "id" in entry}


# -- opening a run's senders ----------------------------------------------------------------------------------


def batch_api(config: StageConfig, out: Path, token: str | None) -> tuple[BatchApi, BatchSource]:
    """The batch API a stage sends through, and how the run names it."""
    batch = config.batch
    if batch.api == "vllm":
        api: BatchApi = VLLMOfflineBatches(
            batch.python,
            batch.model_path,
            batch_jobs_dir(out),
            batch.args,
            max_requests=batch.max_requests,
            max_bytes=batch.max_bytes,
        )
        name = f"vllm run_batch {batch.model_path}"
        return api, BatchSource(name, name, "openai", "vllm", config.model or batch.model_path, batch.model_path)
    env = batch.token_env or KEY_ENVS[batch.api]
    if batch.api == "anthropic":
        url = batch.url or ANTHROPIC_URL
        api = AnthropicBatches(
            token or "", url, max_requests=batch.max_requests, max_bytes=batch.max_bytes, key_env=env
        )
    else:
        url = batch.url or OPENAI_URL
        api = OpenAIBatches(url, token, batch.completion_window, batch.max_requests, batch.max_bytes, token_env=env)
    name = redact_url(url)
    return api, BatchSource(name, name, batch.api if batch.api == "anthropic" else "openai", batch.api, config.model)


def unsupported(stage: Stage, api: BatchApi) -> str | None:
    """Why `api` cannot send the stage's requests as configured, or None."""
    if api.name == "anthropic":
        return anthropic_batches.unsupported(stage.config.mode, stage.top_n, stage.sampling)
    check = getattr(api, "unsupported", None)
    return check(stage.config.mode, stage.top_n, stage.sampling) if check is not None else None


async def open_senders(
    config: GenerateConfig, stages: list[Stage], log: Callable[[str], None] = tqdm.write
) -> dict[str, BatchSender]:
    """A sender for each stage with `send: batch`: its API key read (once) and what its API cannot do refused,
    before any request of the run is sent."""
    out = Path(config.out)
    senders: dict[str, BatchSender] = {}
    try:
        for stage in stages:
            if stage.config.send != "batch":
                continue
            batch = stage.config.batch
            token = None
            if batch.api != "vllm":
                env = batch.token_env or KEY_ENVS[batch.api]
                token = os.environ.get(env)
                if not token:
                    raise ConfigError(
                        f"{stage.name}: send: batch through {batch.api} needs an API key in ${env} "
                        f"({stage.name}.batch.token_env), which is not set"
                    )
            api, source = batch_api(stage.config, out, token)
            senders[stage.name] = BatchSender(
                stage.name,
                api,
                source,
                Ledger(batch_ledger(out, stage.name)),
                stage.config,
                label=f"bft generate {out.resolve().name}: {stage.name}",
                max_retries=config.max_retries,
                log=log,
                journal=journal_dir(out) / f"{stage.name}.jsonl",
            )
            why = unsupported(stage, api)  # (not `reason`: a rejection reason is a registered word, `reasons.py`)
            if why:
                raise ConfigError(f"{stage.name}: send: batch with batch.api {batch.api}: {why}")
    except BaseException:
        await close_senders(senders, finished=False)
        raise
    return senders


def refuse_abandoned_batches(out: Path, live: list[Stage]) -> None:
    """Refuse (`ConfigError`) a stage sent live whose ledger still holds batches not taken: an earlier run
    submitted (and paid for) them with `send: batch`, and a live run would never read them."""
    for stage in live:
        ledger = Ledger(batch_ledger(out, stage.name))
        pending = list(ledger.untaken())
        if pending:
            raise ConfigError(
                f"{stage.name}: send: live, but {len(pending)} batches an earlier run submitted for it are not "
                f"collected yet ({', '.join(pending)}, in {ledger.path}). Switch {stage.name} back to "
                f"send: batch to collect them, or move {ledger.path} aside to send live (their replies are then "
                "not used)"
            )


async def close_senders(senders: dict[str, BatchSender], finished: bool) -> None:
    """Stop every sender (`BatchSender.close`)."""
    for sender in senders.values():
        await sender.close(finished)
