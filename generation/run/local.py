"""The local executor: this process streams the corpus (or an earlier output's pool) through the engine.

The default of `bft generate`. One asyncio loop, one engine, one journal folder (`.bft/journal/`); a
rerun resumes from the journals. Stages with `send: batch` get a batch sender (`batching.py`: its API key read
and what its API cannot do refused before anything is sent) instead of endpoints; a stage sent live whose batch
ledger still holds batches not collected is refused (switched from `send: batch` on a rerun, they would be
abandoned). `--executor ray` (`run/ray_executor.py`) is the other executor; both are made of the same pieces
around the same engine: `stages`, `pools`, `inputs`, `cached_replies` (`open_replies`) and `finishing`;
resuming is `resume.py`'s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bft.generation.config import GenerateConfig
from bft.generation.corpus.files import count_documents
from bft.generation.layout import journal_dir
from bft.generation.method.stages import Stage
from bft.generation.run.batching import close_senders, open_senders, refuse_abandoned_batches
from bft.generation.run.cached_replies import open_replies
from bft.generation.run.engine import Engine
from bft.generation.run.finishing import RunSummary, finish_run
from bft.generation.run.inputs import input_items, pool_size, reads_instruction_set
from bft.generation.run.pools import add_pool_events, close_pools, open_pools
from bft.generation.run.stages import build_stages
from bft.generation.run.stats import RunStats


def generate_locally(config: GenerateConfig, progress: bool) -> RunSummary:
    """Run the configured stages in this process; write the output folder; return the summary."""
    return asyncio.run(_generate(config, progress))


async def _generate(config: GenerateConfig, progress: bool) -> RunSummary:
    stages = build_stages(config)
    stats, sent_by = await run_engine(config, stages, input_items(config, stages), progress)
    return finish_run(config, stats, stages, sent_by)


async def run_engine(
    config: GenerateConfig, stages: list[Stage], items, progress: bool, sending: list[Stage] | None = None
) -> tuple[RunStats, dict]:
    """The engine over `items` with `stages`, sending the requests of `sending` (default: every stage) to
    their endpoints or batch APIs; the run's counters and, per stage sent, the endpoint (or batch API) that
    speaks for it in the card. Serving in turn (`served_in_turn.py`) runs it once a turn."""
    sending = stages if sending is None else sending
    refuse_abandoned_batches(Path(config.out), [stage for stage in sending if stage.config.send != "batch"])
    senders = await open_senders(config, sending)  # (before any request: a missing key is named first)
    finished = False
    try:
        endpoints, pools = await open_pools(config, [stage for stage in sending if stage.name not in senders])
    except BaseException:
        await close_senders(senders, finished)
        raise
    replies = open_replies(config)
    try:
        engine = Engine.for_run(config, stages, pools, journal_dir(Path(config.out)), progress, replies, senders)
        corpus, first = config.corpus, config.stages[0]
        if first in ("curate", "distill") and not reads_instruction_set(config):  # an earlier output's pool
            await engine.run(items, total=pool_size(Path(corpus.path), corpus.limit, first))
        else:  # the corpus, or an instruction set
            await engine.run(items, count_total=lambda: count_documents(corpus.path, corpus.limit))
        finished = True
    finally:
        await close_senders(senders, finished)
        await close_pools(endpoints, pools)
        if replies is not None:
            replies.close()
    stats = engine.run_stats()
    add_pool_events(stats, pools)
    sent_by = {name: pool.endpoints[0] for name, pool in pools.items()}
    return stats, sent_by | {name: sender.source for name, sender in senders.items()}
