"""`bft generate --executor ray`: the corpus as a Ray Dataset, its blocks run by actors with bft's engine.

    bft generate dolma/ --out out/ --executor ray --ray-address auto --endpoint http://gpu1:8080 ...

The corpus (local files, JSONL/Parquet on any fsspec URL, or a Hub dataset's data files) is read as a
Ray Dataset whose rows are blocks of `ray.block_size` records (`corpus/blocks.py`). A first pass reads
each block's ids and text hashes so that duplicate ids and texts are decided over the whole corpus in
order, exactly as the local executor decides them. Then a pool of actors (`BlockRunner`), each with
its own endpoint pools and an asyncio loop, takes one block at a time and runs the same stage engine
over it (prompts, parsing, retries, provenance), journaling into `OUT/.bft/blocks/KEY/journal/`.

A finished block writes `OUT/.bft/blocks/KEY/done.json` (its stages, records, stats and its actor's
endpoint limits) last. A rerun skips blocks with a done file for the same stages and records; a block
that was cut short resumes from its journals, so no document is requested or written twice (`resume.py`
decides both, as it does for the local executor). A worker that dies is replaced by Ray and its block
retried the same way. At the end the driver merges every block's stats into `stats.json` and every block's
journals into the usual configs and card: the output folder looks exactly like the local executor's,
`endpoints` included (`merge_endpoints` says how the actors' limits make one per endpoint).

The output folder must be a filesystem every node of the cluster mounts (NFS, Lustre, a local disk
for a one-machine cluster).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import pickle
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from bft.generation.config import GenerateConfig
from bft.generation.config.coerce import from_dict
from bft.generation.corpus.blocks import BlockWork, Plan, RawBlock, block_items, fingerprint, plan_blocks, read_blocks
from bft.generation.corpus.files import corpus_file_list
from bft.generation.endpoints.limiter import SAMPLES
from bft.generation.errors import BftError, ConfigError
from bft.generation.layout import PREPARE, blocks_dir
from bft.generation.method.fitting import context_check
from bft.generation.run.cached_replies import cache_folder, open_replies
from bft.generation.run.engine import Engine
from bft.generation.run.finishing import RunSummary, finish_run
from bft.generation.run.pools import add_pool_events, close_pools, open_pools
from bft.generation.run.progress import StageBars
from bft.generation.run.resume import check_files, finished_block, record_block_done
from bft.generation.run.stages import build_stages
from bft.generation.run.stats import ENDPOINTS_KEY, RunStats

READ_CPUS = 0.5  # CPUs Ray reserves per read task: reading is light next to the requests


# -- the Ray Dataset of blocks ----------------------------------------------------------------------


def corpus_dataset(config: GenerateConfig, files: list[str], work: dict[str, BlockWork] | None = None):
    """The corpus as a Ray Dataset: one row per block (`key`, pickled `block`, pickled `work`).

    One read task per file, so a block never spans two tasks. With `work`, only blocks named in it
    are shipped (the others are read past), each with its `BlockWork`.
    """
    import pyarrow as pa
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    corpus, block_size = config.corpus, config.ray.block_size

    def read_file(file_index: int, file: str):
        for block in read_blocks(
            file, file_index, block_size, corpus.invalid_utf8, corpus.max_record_bytes, corpus.malformed_lines
        ):
            if work is not None and block.key not in work:
                continue
            yield pa.table(
                {
                    "key": [block.key],
                    "block": [pickle.dumps(block, protocol=5)],
                    "work": [pickle.dumps(work[block.key] if work is not None else None, protocol=5)],
                }
            )

    class CorpusBlocks(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [
                ReadTask(
                    lambda index=index, file=file: read_file(index, file),
                    BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=[file]),
                )
                for index, file in enumerate(files)
            ]

    return ray.data.read_datasource(CorpusBlocks(), override_num_blocks=len(files), num_cpus=READ_CPUS)


def _fingerprint_row(row: dict, config: dict) -> dict:
    block: RawBlock = pickle.loads(row["block"])
    result = fingerprint(block, from_dict(GenerateConfig, config))
    return {"key": row["key"], "fingerprint": pickle.dumps(result, protocol=5)}


def make_plan(config: GenerateConfig, files: list[str]) -> Plan:
    """Pass 1: every block's fingerprint, replayed on the driver in corpus order."""
    dataset = corpus_dataset(config, files).map(
        _fingerprint_row, fn_kwargs={"config": config.to_dict()}, num_cpus=READ_CPUS
    )
    fingerprints = [pickle.loads(row["fingerprint"]) for row in dataset.iter_rows()]
    return plan_blocks(fingerprints, config)


# -- the actors -------------------------------------------------------------------------------------


class BlockRunner:
    """A Ray actor: bft's stage engine, with its own endpoint pools, over blocks.

    An async actor: Ray Data hands it several blocks at once and each runs as its own engine over
    the actor's shared pools, so one block's last slow documents overlap the next block's first
    requests (no drain at every block boundary). The pools keep each endpoint's share of requests.
    """

    def __init__(self, config: dict, share: int, run: str = ""):
        self.config = from_dict(GenerateConfig, config)
        self.share = share
        # who took each block's endpoint summaries (cumulative for this actor): `merge_endpoints` keeps each
        # actor's latest (highest `taken`) and sums over the actors; a replaced actor is a new one
        self.actor = {"id": uuid.uuid4().hex, "run": run, "pid": os.getpid(), "opened_at": None, "taken": 0}
        self.out = Path(self.config.out)
        self.stages = build_stages(self.config)
        self.fits = context_check(self.config, self.stages)
        self.replies = open_replies(self.config)  # one writer per actor, its file made at its first reply
        self.endpoints, self.pools = {}, None
        self.opening: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where the pools' HTTP sessions live

    async def _pools(self):
        """Probe the endpoints once, in the actor's own event loop (the first block waits for it)."""
        self.opening = self.opening or asyncio.Lock()
        async with self.opening:
            if self.pools is None:
                log = lambda line: print(line, file=sys.stderr)  # noqa: E731
                self.loop = asyncio.get_running_loop()
                self.actor["opened_at"] = time.time()  # (about when its limiters' samples start their clock)
                self.endpoints, self.pools = await open_pools(self.config, self.stages, self.share, log=log)
        return self.pools

    def close(self, timeout: float = 30.0) -> None:
        """Close the endpoints' HTTP sessions in the loop that opened them (aiohttp warns of "Unclosed client
        session" for any left open), once; the actor's blocks are all done when this is called."""
        pools, loop = getattr(self, "pools", None), getattr(self, "loop", None)  # (None if __init__ failed)
        if getattr(self, "replies", None) is not None:
            self.replies.close()
        self.pools = None
        if pools is None or loop is None or loop.is_closed():
            return
        try:
            inside = asyncio.get_running_loop() is loop
        except RuntimeError:  # no loop runs in this thread
            inside = False
        closing = close_pools(self.endpoints, pools)
        if inside:  # called from within the loop: it closes them next (held, so it is not collected first)
            self._closing = loop.create_task(closing)
        elif loop.is_running():  # Ray Data runs an async actor's loop in a thread of its own
            asyncio.run_coroutine_threadsafe(closing, loop).result(timeout)
        else:
            loop.run_until_complete(closing)

    def __del__(self) -> None:
        # Ray Data drops the instance when the dataset is done, so that it can clean up (`__ray_shutdown__` of
        # its MapWorker); an actor killed outright ends with its process, sessions and all.
        self.close()

    async def __call__(self, batch):
        import pyarrow as pa

        keys, done = [], []
        for row in batch.to_pylist():
            block, work = pickle.loads(row["block"]), pickle.loads(row["work"])
            keys.append(block.key)
            done.append(json.dumps(await self.run_block(block, work)))
        return pa.table({"key": keys, "done": done})

    async def run_block(self, block: RawBlock, work: BlockWork) -> dict:
        """Run the stages over one block (resuming its journals), then mark it done; return what `done.json`
        holds: its stages, records, stats, and this actor's endpoint limits so far (`ENDPOINTS_KEY`, with
        `actor` naming whose)."""
        pools = await self._pools()
        folder = blocks_dir(self.out) / block.key
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lock", "w") as lock:  # one process per block, even if Ray retries a live one's task
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.5)
            events_before = {name: Counter(pool.events) for name, pool in pools.items()}
            config = self.config
            engine = Engine.for_run(
                config, self.stages, pools, folder / "journal", progress=False, replies=self.replies
            )
            await engine.run(block_items(block, work, config, self.fits))
            run_stats = engine.run_stats()
            add_pool_events(run_stats, pools, events_before)  # (events of blocks beside this one may land here)
            stats = {name: s.as_dict() for name, s in run_stats.stages.items()}
            self.actor["taken"] += 1  # (no await since the summaries were taken: the order they were taken in)
            actor = {**self.actor, "finished_at": time.time()}
            done = {"stages": list(config.stages), "rows": work.rows, "stats": stats}
            done |= {ENDPOINTS_KEY: run_stats.endpoints, "actor": actor}
            record_block_done(folder, done)
        return done


# -- the driver -------------------------------------------------------------------------------------


def merge_stats(blocks: list[dict], names: list[str], wall_seconds: float) -> RunStats:
    """Sum per-block stats (`done.json`s) into one per stage, times and rates over the whole run's wall time;
    the endpoints' limits as `merge_endpoints` makes them."""
    merged = RunStats.empty(names)
    for done in blocks:
        merged.merge(done["stats"])
    merged.endpoints = merge_endpoints(blocks)
    for stage in merged.stages.values():
        if stage.requests:
            stage.timed(0.0, wall_seconds)
    merged.wall_seconds = wall_seconds
    return merged


COUNTERS = ("overloaded_429_503", "timeouts", "backoffs")  # of `AdaptiveLimit.summary()`: events, summed
LIMITS = ("limit_low", "limit_high", "limit_settled")  # ... and limits, each actor's share of the endpoint's


def merge_endpoints(blocks: list[dict]) -> dict[str, dict]:
    """One limit summary per endpoint (`AdaptiveLimit.summary()`'s keys, as the local executor writes) from
    the blocks' `done.json`s, each of which holds its actor's summaries so far (cumulative for that actor).

    Each actor counts once, by its latest summary (the highest `taken`). Then, per endpoint:

    - `overloaded_429_503`, `timeouts`, `backoffs`: summed over every actor, this run's and earlier runs'
      (whose blocks are resumed), as the stage counters are: every request the output's records cost;
    - `limit_low`, `limit_high`, `limit_settled`: summed over the actors of the latest run (the one whose
      block finished last): each actor held a share of the endpoint's limit (`open_pools(share=...)`), so
      the endpoint's is their sum. Earlier runs did not send alongside it, so they are not added (a local
      rerun's limits are its own too). The sum of lows and of highs bounds the whole limit's range (the
      actors were not all at their lowest at once); an actor Ray replaced mid-run is counted beside its
      replacement;
    - `mode`, `steered_by`: what most of the latest run's actors say (they share one config);
    - `in_flight_samples`: the latest run's actors' (time, in flight, limit) samples summed at each sample
      time, each actor's clock shifted by when it opened its pools after the first one (to about a second),
      an actor's last sample holding after it; thinned to about `SAMPLES` as the limiter does.

    Blocks without summaries (an older `done.json`) add nothing; none at all gives {} (no `endpoints` key).
    """
    latest: dict[str, tuple[dict, dict]] = {}  # actor id: (its actor record, its endpoint summaries)
    for done in blocks:
        summaries = done.get(ENDPOINTS_KEY)
        if not summaries:
            continue
        actor = done.get("actor") or {}
        who = actor.get("id") or f"block {id(done)}"  # (no actor named: the block counts alone)
        if who not in latest or actor.get("taken", 0) > latest[who][0].get("taken", 0):
            latest[who] = (actor, summaries)
    if not latest:
        return {}
    last_run = max(latest.values(), key=lambda entry: entry[0].get("finished_at") or 0.0)[0].get("run")
    current = [entry for entry in latest.values() if entry[0].get("run") == last_run]
    merged = {}
    for name in sorted({name for _, summaries in latest.values() for name in summaries}):
        everyone = [summaries[name] for _, summaries in latest.values() if name in summaries]
        now = [(actor, summaries[name]) for actor, summaries in current if name in summaries]
        if not now:  # (an endpoint the latest run did not have: its last run's figures stand)
            now = [(actor, summaries[name]) for actor, summaries in latest.values() if name in summaries]
        merged[name] = {
            "mode": Counter(s["mode"] for _, s in now).most_common(1)[0][0],
            "steered_by": Counter(s["steered_by"] for _, s in now).most_common(1)[0][0],
            **{key: sum(s[key] for _, s in now) for key in LIMITS},
            "in_flight_samples": summed_samples(now),
            **{key: sum(s.get(key, 0) for s in everyone) for key in COUNTERS},
        }
    return merged


def summed_samples(actors: list[tuple[dict, dict]]) -> list[list]:
    """The endpoint's (time, in flight, limit) over its actors: at each time one of them sampled, the sum of
    each actor's latest sample then; times from the first actor's opening of its pools (`merge_endpoints`)."""
    opened = [actor.get("opened_at") or 0.0 for actor, _ in actors]
    first = min(opened)
    events = sorted(
        (round(seconds + at - first, 2), index, in_flight, limit)
        for index, (at, (_, summary)) in enumerate(zip(opened, actors, strict=True))
        for seconds, in_flight, limit in summary["in_flight_samples"]
    )
    latest: dict[int, tuple[int, int]] = {}  # actor (index): its latest (in flight, limit)
    samples: list[list] = []
    for seconds, index, in_flight, limit in events:
        latest[index] = (in_flight, limit)
        sample = [seconds, sum(s[0] for s in latest.values()), sum(s[1] for s in latest.values())]
        if samples and samples[-1][0] == seconds:
            samples[-1] = sample  # (actors sampled at the same time: one sample)
        else:
            samples.append(sample)
    return samples[:: max(1, len(samples) // SAMPLES)]


def choose_actors(config: GenerateConfig, blocks: int) -> int:
    """`ray.actors`, or one per endpoint; at most what the cluster's CPUs hold beside one read task."""
    import ray

    urls = set(config.endpoints) | {url for name in config.stages for url in config.stage(name).endpoints}
    wanted = config.ray.actors or max(1, len(urls))
    cpus = ray.cluster_resources().get("CPU", 1.0)
    room = int((cpus - READ_CPUS) / config.ray.actor_cpus) if config.ray.actor_cpus > 0 else wanted
    actors = max(1, min(wanted, room, max(blocks, 1)))
    if actors < wanted and config.ray.actors:
        print(
            f"bft generate: {actors} actors, not {wanted}: the cluster has {cpus:g} CPUs and each actor "
            f"reserves {config.ray.actor_cpus:g} (ray.actor_cpus)",
            file=sys.stderr,
        )
    return actors


def connect(config: GenerateConfig) -> bool:
    """Join the configured cluster, or start a local one; True when this call started Ray.

    Ray Data's own progress lines are turned off: bft shows one bar per stage, as the local executor does.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'bft[ray]'") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # failures still raise, with bft's message
    if ray.is_initialized():
        return False
    ray.init(address=config.ray.address, include_dashboard=False, logging_level="WARNING")
    return True


def bft_error_in(error: BaseException) -> BftError | None:
    """The bft error a Ray task raised, if `error` wraps one: the innermost, whose message is bft's own
    (Ray re-raises it wrapped, in a class that also derives from it but prints Ray's traceback)."""
    found, seen = None, set()
    while error is not None and id(error) not in seen:
        if isinstance(error, BftError):
            found = error
        seen.add(id(error))
        error = getattr(error, "cause", None) or error.__cause__
    return found


def generate_on_ray(config: GenerateConfig, progress: bool) -> RunSummary:
    """Run the configured stages over the corpus on Ray; write the output folder; return the summary."""
    if config.stages[0] != "backtranslate":
        raise ConfigError(
            f"--executor ray reads a corpus; a run that starts with {config.stages[0]} reads an earlier "
            "output's pool: run it with the local executor"
        )
    out = Path(config.out).resolve()
    config.out = str(out)
    config.cache.path = str(cache_folder(config))  # the driver's: an actor's default may be another folder
    files = [
        file if "://" in file else str(Path(file).resolve())
        for file in corpus_file_list(config.corpus.path, config.corpus.split, config.corpus.revision)
    ]
    check_files(out, files)

    # the endpoints are checked here first, so that a wrong URL or model fails before Ray starts
    stages = build_stages(config)

    async def probe():
        endpoints, pools = await open_pools(config, stages)
        await close_pools(endpoints, pools)
        return {name: pool.endpoints[0] for name, pool in pools.items()}

    first_endpoints = asyncio.run(probe())
    started_here = connect(config)
    try:
        return _run(config, files, stages, first_endpoints, progress)
    except Exception as error:
        found = bft_error_in(error)
        if found is not None and found is not error:
            raise found from None
        raise
    finally:
        if started_here:
            import ray

            ray.shutdown()


def _run(config: GenerateConfig, files: list[str], stages, first_endpoints, progress: bool) -> RunSummary:
    import ray.data

    out = Path(config.out)
    started = time.monotonic()
    plan = make_plan(config, files)
    done: dict[str, dict] = {}
    for work in plan.blocks:
        block = finished_block(blocks_dir(out) / work.key, config, work)
        if block is not None:
            for stage in block["stats"].values():
                stage["resumed_from_journal"] = stage["entered"]
            done[work.key] = block
    todo = {work.key: work for work in plan.blocks if work.key not in done}

    names = [PREPARE, *config.stages]
    bars = StageBars(names, plan.records, enabled=progress)
    for name in names:
        finished = [block["stats"].get(name, {}) for block in done.values()]
        bars.advance(name, sum(s.get("entered", 0) for s in finished), sum(s.get("kept", 0) for s in finished))
    new: dict[str, dict] = {}
    merged = None
    try:
        if todo:
            actors = choose_actors(config, len(todo))
            results = corpus_dataset(config, files, todo).map_batches(
                BlockRunner,
                batch_size=1,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=config.ray.actor_cpus,
                fn_constructor_kwargs={"config": config.to_dict(), "share": actors, "run": uuid.uuid4().hex},
            )
            for row in results.iter_rows():
                block = json.loads(row["done"])
                new[row["key"]] = block
                for name in names:
                    counts = block["stats"].get(name, {})
                    bars.advance(name, counts.get("entered", 0), counts.get("kept", 0))
        merged = merge_stats([*done.values(), *new.values()], names, time.monotonic() - started)
    finally:
        bars.close(merged.stages if merged is not None else None)
    journal_dirs = [blocks_dir(out) / work.key / "journal" for work in plan.blocks]
    return finish_run(config, merged, stages, first_endpoints, journal_dirs)
