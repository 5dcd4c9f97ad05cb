"""The stage engine: streams documents through the stages against the endpoints, resumably.

Each document moves through its stages as one asyncio task; it goes on to the next stage as soon as
the previous one is done with it. Bounds keep memory flat: at most twice as many document tasks exist
as the endpoints' limits may reach (`max_documents_in_flight` fixes the number), and each endpoint has at
most its one limit of requests outstanding, over all stages (`endpoints/limiter.py`).

A request has no deadline on its length: its endpoint abandons it after `request_timeout` seconds of
silence (`endpoints/silence.py`). Before a request is sent, a prompt that may not fit the server's context
is counted (the stage's tokenizer, else the server's `/tokenize`) and its document cut once to fit.

Faults: 429, 5xx, timeouts, resets, aborted generations and malformed bodies are retried with
exponential backoff and jitter (longer when the server sends `Retry-After`); a prompt refused as longer
than the context is cut to fit once and retried (the context budget, before sending and after a refusal,
is `method/fitting.py`'s); other refusals reject the document, and the same refusal for several documents
in a row stops the run (a setting every request would meet); 401/403/404 stop the run.

Every document that enters a stage leaves it as a journal line, kept or rejected with a reason, before
it moves on (see `journal.py`): a rerun skips finished work and never writes a document twice (what is
finished and what is pending is `resume.py`'s to say).

With a request cache (`cached_replies.py`), a request whose reply is stored is answered from it as if the
server had just sent it (its provenance says `cached`), and every reply that comes back whole is stored.

A stage with `send: batch` sends nothing live: its requests, built and looked up in the cache the same way,
wait on its `BatchSender` (`batching.py`: which batch, when it is sent, the ledger a rerun resumes from), and
its replies and failures are read as live ones are; an item a batch returned expired, canceled or errored,
or a batch that failed, is sent again in a new batch (no backoff: the batch is the wait). The run then holds
enough documents to fill a batch, and the batches being filled are sent as soon as every document waits on
one while no more can come (`batching.Parking`).
"""

from __future__ import annotations

import asyncio
import re
import time

from bft.generation.config import GenerateConfig
from bft.generation.endpoints.client import Endpoint
from bft.generation.endpoints.pool import EndpointPool
from bft.generation.endpoints.processes import server_exit
from bft.generation.endpoints.retry import RetryPolicy
from bft.generation.errors import EndpointError, RequestRejected, RetryableError
from bft.generation.layout import PREPARE
from bft.generation.method.fitting import counted_here, cut_to_fit, declared_budget, too_long_before_sending
from bft.generation.method.stages import Request, Stage
from bft.generation.reasons import INPUT_INVALID, INPUT_TOO_LONG, REQUEST_FAILED
from bft.generation.records import KEPT, REJECTED, Document, Rejected, StageRecord
from bft.generation.run.batching import MAX_DOCUMENTS_IN_FLIGHT, BatchSender, DocumentWaits, Parking
from bft.generation.run.cached_replies import ReplyCache
from bft.generation.run.journal import Journal
from bft.generation.run.money import stage_price
from bft.generation.run.progress import StageBars
from bft.generation.run.resume import read_journals
from bft.generation.run.stats import RunStats, StageStats

REFUSALS_TO_STOP = 3  # the same input_invalid refusal for this many documents in a row stops the run


def beyond_retrying(stage: Stage, endpoint: Endpoint | None, cause: str) -> EndpointError | None:
    """The run-stopping error when a failed request says no retry can succeed, else None: the server bft
    started has exited for good (no document is to blame; one that is being restarted is waited for, and the
    request retried), or a vLLM engine died on seeded requests (the same requests would kill every other
    replica of the build in turn)."""
    gone = server_exit(endpoint.url) if endpoint is not None else None
    if gone:
        return EndpointError(
            f"the server bft started at {endpoint.name} has exited ({gone}); fix what its log shows, then "
            "rerun the same command to resume (finished documents are kept)"
        )
    if cause == "engine_dead" and stage.sampling.seed is not None and getattr(endpoint, "server_kind", None) == "vllm":
        return EndpointError(
            f"the vLLM engine at {endpoint.name} died while stage {stage.name} sent seeded requests "
            f"(sampling.seed {stage.sampling.seed}). If its log says 'RuntimeError: CPU Generator does "
            "not use offset', it is vLLM's CPU build, which crashes on a seeded request whose prompt "
            "is prefilled in chunks (vllm/v1/worker/gpu_model_runner.py _bookkeeping_sync): restart "
            f"the server and run without {stage.name}.sampling.seed (a new --out), or serve on a GPU. "
            "Otherwise see its log for the cause, restart it and rerun the same command to resume"
        )
    return None


class Engine:
    """Runs `stages` over a document stream, journaling each outcome under `journal_dir`."""

    def __init__(
        self,
        stages: list[Stage],
        pools: dict[str, EndpointPool],
        journal_dir,
        max_retries: int = 5,
        request_timeout: float = 300.0,
        retry_policy: RetryPolicy | None = None,
        truncate_to_fit: bool = True,
        chars_per_token: float = 3.0,
        progress: bool = True,
        retry_failed: bool = True,
        replies: ReplyCache | None = None,
        senders: dict[str, BatchSender] | None = None,
    ):
        self.stages = stages
        self.replies = replies
        self.pools = pools
        self.senders = senders or {}  # the stages sent by batch (`send: batch`), which have no pool
        self.max_retries = max_retries
        self.request_timeout = request_timeout
        # backoff with jitter between retries; a server's Retry-After honoured up to request_timeout
        self.retry_policy = retry_policy or RetryPolicy(longest_wait=request_timeout)
        self.truncate_to_fit = truncate_to_fit
        self.chars_per_token = chars_per_token
        self.retry_failed = retry_failed
        self.journals = {name: Journal(journal_dir / f"{name}.jsonl") for name in [PREPARE] + [s.name for s in stages]}
        self.stats = {name: StageStats() for name in self.journals}
        for stage in stages:  # a priced stage's counters put a price on its tokens (`run/money.py`)
            self.stats[stage.name].price = stage_price(stage.name, stage.config)
        for name, sender in self.senders.items():
            sender.stats = self.stats[name]
        self.parking = Parking([sender.flush for sender in self.senders.values()])
        self.progress = progress
        self._bars = StageBars([], enabled=False)
        self._fatal: BaseException | None = None
        self._refusals: dict[str, tuple[str, int]] = {}  # endpoint -> (refusal, how many in a row)
        self.wall_seconds = 0.0

    @classmethod
    def for_run(
        cls,
        config: GenerateConfig,
        stages: list[Stage],
        pools,
        journal_dir,
        progress: bool,
        replies: ReplyCache | None = None,
        senders: dict[str, BatchSender] | None = None,
    ) -> Engine:
        """The engine of a `bft generate` run: the one place its settings reach it (both executors)."""
        return cls(
            stages,
            pools,
            journal_dir,
            max_retries=config.max_retries,
            request_timeout=config.request_timeout,
            truncate_to_fit=config.truncate_to_fit,
            chars_per_token=config.chars_per_token,
            progress=progress,
            retry_failed=config.retry_failed,
            replies=replies,
            senders=senders,
        )

    def run_stats(self) -> RunStats:
        """The counters of every stage (prepare first) and the wall time of the last `run`."""
        return RunStats(dict(self.stats), self.wall_seconds)

    # -- requests -------------------------------------------------------------------------------------

    async def _attempt(
        self, stage: Stage, record: StageRecord, sample: int = 0, waits: DocumentWaits | None = None
    ) -> StageRecord:
        """Send one stage's request with retries (sample number `sample` of the record's); return this stage's
        record for the document. A request the cache holds is answered from it; a batch stage's request waits
        on its batch (`waits`: the document's, which the batch senders watch)."""
        stats = self.stats[stage.name]
        sender = self.senders.get(stage.name)
        pool = self.pools[stage.name] if sender is None else None
        endpoints = pool.endpoints if pool is not None else [sender.source]
        config = stage.config
        request = stage.request(record)
        endpoint = None
        batch_id: str | None = None  # the batch whose answer is being read, for the provenance
        retries, attempt, fitted, last_cause = 0, 0, False, ""
        key, looked_up = None, None  # the cache key of `request`, and the request it was looked up for
        replayed: RequestRejected | None = None  # a refusal the cache stored, raised again

        async def call(ep: Endpoint):
            nonlocal endpoint
            if self._fatal is not None:  # another request found the endpoint unusable: send nothing more
                raise asyncio.CancelledError
            endpoint = ep
            await self._check_budget(stage, request, ep)
            stats.requests += 1
            send = ep.chat if request.mode == "chat" else ep.complete
            sent = time.monotonic()
            # no deadline on the reply's length: the endpoint abandons it only after `request_timeout`
            # seconds of silence (`endpoints/silence.py`)
            tags = config.reasoning_tags
            answer = await send(request.text, config.model, stage.sampling, top_n=request.top_n, reasoning_tags=tags)
            stats.answered_in(time.monotonic() - sent)
            return answer

        while True:
            attempt += 1
            try:
                if self.replies is not None and looked_up is not request:
                    looked_up, key = request, self.replies.key(stage, request, sample, endpoints)
                    hit = self.replies.lookup(key, request, endpoints)
                    if isinstance(hit, RequestRejected):  # handled as the server's, by the endpoint it is valid for
                        stats.cache_hits += 1
                        endpoint, replayed = endpoints[0], hit
                        raise hit
                    if hit is not None:
                        stats.cache_hits += 1
                        return stage.outcome(record, hit[0], attempt, hit[1])
                    stats.cache_misses += 1
                if sender is not None:
                    if self._fatal is not None:  # the run is stopping: no item joins a new (paid) batch
                        raise asyncio.CancelledError
                    answer = await sender.ask(
                        sender.item(stage, record.id, request, sample), waits or DocumentWaits(self.parking)
                    )
                    endpoint, batch_id = sender.source, answer.batch_id or None
                    generation = sender.generation(answer)
                else:
                    endpoint, generation = await pool.run(call)
            except RequestRejected as error:
                if key is not None and error is not replayed:
                    self.replies.remember_refusal(key, error, endpoint)
                if error.reason == INPUT_TOO_LONG and self.truncate_to_fit and not fitted:
                    shorter = cut_to_fit(
                        stage,
                        record,
                        request.text,
                        error.detail,
                        getattr(endpoint, "max_input_tokens", None),
                        getattr(endpoint, "max_total_tokens", None),
                        self.chars_per_token,
                    )
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
                if error.reason == INPUT_INVALID:
                    self._refused(stage, endpoint, error)
                return stamped(stage.failure(record, error.reason, detail, attempt, endpoint), batch_id)
            except EndpointError as error:
                self._fatal = self._fatal or error
                raise
            except (RetryableError, TimeoutError) as error:
                cause = getattr(error, "cause", "timeout")
                fatal = beyond_retrying(stage, endpoint, cause) if sender is None else None
                if fatal is not None:
                    self._fatal = self._fatal or fatal
                    raise self._fatal from None
                last_cause = str(error) or cause
                if retries >= self.max_retries:
                    return stamped(stage.failure(record, REQUEST_FAILED, last_cause, attempt, endpoint), batch_id)
                retries += 1
                stats.retries_by_cause[cause] += 1
                if sender is not None and cause.startswith("batch_"):  # sent again in a new batch: no backoff
                    continue
                # the server's own `Retry-After` (a rate limit's window) wins over a shorter backoff
                await asyncio.sleep(self.retry_policy.delay(retries, getattr(error, "retry_after", None)))
                continue
            self._refusals.pop(endpoint.name, None)  # an answer: the refusals in a row end
            stats.prompt_tokens += generation.prompt_tokens or 0
            stats.completion_tokens += generation.completion_tokens or 0
            stats.reasoning_tokens += generation.reasoning_tokens or 0
            if request.top_n and generation.token_choices is None:
                error = EndpointError(
                    f"{endpoint.name} returned no token probabilities, which curate.score_mode 'expected' needs "
                    "(TGI /generate with top_n_tokens, or chat logprobs); use --score-mode parsed"
                )
                self._fatal = self._fatal or error
                raise error
            if key is not None:
                self.replies.remember(key, request, generation, endpoint)
            return stamped(stage.outcome(record, generation, attempt, endpoint), batch_id)

    async def _check_budget(self, stage: Stage, request: Request, endpoint: Endpoint) -> None:
        """Refuse, before sending, a prompt that cannot fit the context the server declared (TGI `/info`,
        vLLM and SGLang `max_model_len`) with the stage's `max_tokens`, so the document is cut once to the
        right size. Counted by the stage's tokenizer, else by the server itself (`/tokenize`: vLLM, SGLang)
        when the prompt is long enough to matter. This matters most on vLLM, which does not refuse a prompt
        that leaves less than `max_tokens`: it serves a shorter reply. Where neither can count, the server's
        own refusal says the sizes (a character estimate would cut documents that fit)."""
        max_tokens = stage.config.sampling.max_tokens
        budget = declared_budget(endpoint.max_input_tokens, endpoint.max_total_tokens, max_tokens)
        if budget is None:
            return
        tokens = counted_here(request.text, budget, stage.tokenizer if stage.config.tokenizer else None)
        if tokens is None:
            tokens = await endpoint.count_tokens(request.text, request.mode, stage.config.model)
        detail = too_long_before_sending(tokens, budget, endpoint.name, max_tokens)
        if detail is not None:
            raise RequestRejected(INPUT_TOO_LONG, detail)

    def _refused(self, stage: Stage, endpoint, error: RequestRejected) -> None:
        """Count a refusal of an input as invalid; the same refusal for `REFUSALS_TO_STOP` documents in a
        row says every request will meet it (a parameter the server refuses), so the run stops."""
        key = re.sub(r"\d+", "#", error.detail)  # token counts and ids differ per document; the reason does not
        previous, count = self._refusals.get(endpoint.name, ("", 0))
        count = count + 1 if previous == key else 1
        self._refusals[endpoint.name] = (key, count)
        if count >= REFUSALS_TO_STOP:
            parameter = f" (parameter {error.parameter!r})" if error.parameter else ""
            self._fatal = self._fatal or EndpointError(
                f"{endpoint.name} refused {count} documents of stage {stage.name} in a row for the same reason"
                f"{parameter}: {error.detail}; every request would meet it: fix the stage's settings "
                f"({stage.name}.sampling, mode, model) and rerun the same command"
            )

    def _finish(self, name: str, record: StageRecord) -> None:
        self.journals[name].append(record)
        stats = self.stats[name]
        stats.count(record)
        pool = self.pools.get(name)
        self._bars.advance(name, 1, int(record.kept), stats, pool.limit_text() if pool else None)

    async def _process(self, record: StageRecord, start: int, waits: DocumentWaits | None = None) -> None:
        waits = waits or DocumentWaits(self.parking)
        for stage in self.stages[start:]:
            begun = time.monotonic()
            if stage.samples > 1:
                waits.begin(stage.samples)  # all of them now: a sample not yet started is not waiting on a batch
                branches = (self._branch(stage, record, i, waits) for i in range(stage.samples))
                result = stage.combine(record, list(await asyncio.gather(*branches)))
            else:
                waits.begin()
                result = await self._branch(stage, record, 0, waits)
            self.stats[stage.name].timed(begun, time.monotonic())
            self._finish(stage.name, result)
            waits.settle()  # journaled: the batch answers it used are taken
            if result.status != KEPT:
                return
            record = result

    async def _branch(self, stage: Stage, record: StageRecord, sample: int, waits: DocumentWaits) -> StageRecord:
        """One request of a document in flight (`_attempt`), counted for the batch senders' `Parking` from
        before it starts (`waits.begin`) to its end."""
        try:
            return await self._attempt(stage, record, sample, waits)
        finally:
            waits.end()

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
        done, pending = read_journals(self.journals, self.stats, self.retry_failed)  # what earlier runs did
        for journal in self.journals.values():
            journal.open()
        limits = list({id(m.limiter): m.limiter for p in self.pools.values() for m in p.members}.values())

        # documents in flight: twice what the endpoints may take at most, so the next documents are read and
        # prepared before a limit grows to want them, and memory stays bounded whatever the corpus's size
        in_flight = max_documents_in_flight or max(
            4, 2 * sum(limit.fixed or limit.ceiling for limit in limits), self._batch_room()
        )

        self._bars = StageBars(list(self.journals), total, enabled=self.progress)
        for name in self.journals:  # what earlier runs finished
            self._bars.advance(name, self.stats[name].entered, self.stats[name].kept)
        if self.progress and total is None and count_total is not None:
            counting = asyncio.get_running_loop().run_in_executor(None, count_total)
            counting.add_done_callback(self._set_totals)
        room = asyncio.Event()
        tasks: set[asyncio.Task] = set()
        stage_names = [s.name for s in self.stages]
        wall = time.monotonic()

        def task_done(task: asyncio.Task, waits: DocumentWaits) -> None:
            tasks.discard(task)
            room.set()
            if not task.cancelled() and task.exception() is not None:
                self._fatal = self._fatal or task.exception()
            self.parking.leave(waits)

        try:
            for item in documents:
                if self._fatal is not None:
                    break
                if item.id in done[PREPARE]:
                    continue
                if isinstance(item, Rejected):
                    self._finish(PREPARE, _prepare_rejection(item))
                    continue
                self._passed_prepare()
                start = next((i for i, name in enumerate(stage_names) if item.id not in done[name]), None)
                if start is None:
                    continue
                if start == 0:
                    record = item if isinstance(item, StageRecord) else prepared_record(item)  # a pool's record as is
                else:
                    where = pending.pop(item.id, None)
                    if where is None:  # rejected at an earlier stage: finished
                        continue
                    record = self.journals[where[0]].read_at(where[1])
                if len(tasks) >= in_flight:
                    self.parking.reader(False)  # no more can come until a document is done
                    while len(tasks) >= in_flight:
                        room.clear()
                        await room.wait()
                    self.parking.reader(True)
                waits = self.parking.enter()
                task = asyncio.create_task(self._process(record, start, waits))
                tasks.add(task)
                task.add_done_callback(lambda done, waits=waits: task_done(done, waits))
            self.parking.reader(False)  # every document is in: the batches being filled are all there will be
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
            self._bars.close(self.stats)
            self.wall_seconds = time.monotonic() - wall

    def _batch_room(self) -> int:
        """Documents to hold for the batch stages: enough to fill a batch, at most `MAX_DOCUMENTS_IN_FLIGHT`."""
        sizes = [sender.api.limits.max_requests for sender in self.senders.values()]
        return min(max(sizes), MAX_DOCUMENTS_IN_FLIGHT) if sizes else 0

    def _passed_prepare(self) -> None:
        """Count a document read and passed on by prepare (its rejections are counted as journaled)."""
        stats = self.stats[PREPARE]
        stats.entered += 1
        stats.kept += 1
        self._bars.advance(PREPARE, 1, 1)

    def _set_totals(self, counting) -> None:
        if counting.cancelled() or counting.exception() is not None:
            return
        self._bars.set_total(counting.result())


def stamped(record: StageRecord, batch_id: str | None) -> StageRecord:
    """`record` with its stage's provenance naming the batch its reply came by, if it came by one."""
    if batch_id:
        record.provenance[-1].batch = batch_id
    return record


def prepared_record(document: Document) -> StageRecord:
    """A corpus document as the record prepare passes to the first stage."""
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
        flags=list(item.flags),
    )
