"""The local executor: this process streams the corpus (or an earlier output's pool) through the engine.

The default of `bft generate`. One asyncio loop, one engine, one journal folder (`.bft/journal/`); a
rerun resumes from the journals. `--executor ray` (`run/ray_executor.py`) is the other executor; both
are made of the same pieces around the same engine: `stages`, `pools`, `inputs`, `cached_replies`
(`open_replies`) and `finishing`; resuming is `resume.py`'s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bft.generation.config import GenerateConfig
from bft.generation.corpus.files import count_documents
from bft.generation.layout import journal_dir
from bft.generation.run.cached_replies import open_replies
from bft.generation.run.engine import Engine
from bft.generation.run.finishing import RunSummary, finish_run
from bft.generation.run.inputs import input_items, pool_size, reads_instruction_set
from bft.generation.run.pools import add_pool_events, close_pools, open_pools
from bft.generation.run.stages import build_stages


def generate_locally(config: GenerateConfig, progress: bool) -> RunSummary:
    """Run the configured stages in this process; write the output folder; return the summary."""
    return asyncio.run(_generate(config, progress))


async def _generate(config: GenerateConfig, progress: bool) -> RunSummary:
    stages = build_stages(config)
    endpoints, pools = await open_pools(config, stages)
    replies = open_replies(config)
    try:
        engine = Engine.for_run(config, stages, pools, journal_dir(Path(config.out)), progress, replies)
        corpus, first = config.corpus, config.stages[0]
        items = input_items(config, stages)
        if first in ("curate", "distill") and not reads_instruction_set(config):  # an earlier output's pool
            await engine.run(items, total=pool_size(Path(corpus.path), corpus.limit, first))
        else:  # the corpus, or an instruction set
            await engine.run(items, count_total=lambda: count_documents(corpus.path, corpus.limit))
    finally:
        await close_pools(endpoints, pools)
        if replies is not None:
            replies.close()
    stats = engine.run_stats()
    add_pool_events(stats, pools)
    first_endpoints = {name: pool.endpoints[0] for name, pool in pools.items()}
    return finish_run(config, stats, stages, first_endpoints)
