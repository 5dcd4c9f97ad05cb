"""The local executor: this process streams the corpus (or an earlier output's pool) through the engine.

The default of `bft generate`. One asyncio loop, one engine, one journal folder (`.bft/journal/`); a
rerun resumes from the journals. `--executor ray` (`run/ray_executor.py`) is the other executor; both
are made of `run/wiring.py`'s pieces around the same engine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bft.generation.config import GenerateConfig
from bft.generation.corpus.files import count_documents
from bft.generation.corpus.stream import corpus_documents
from bft.generation.layout import journal_dir
from bft.generation.run.engine import Engine
from bft.generation.run.rounds import pool_size, read_instruction_set, read_pool, reads_instruction_set
from bft.generation.run.wiring import (
    RunSummary,
    add_pool_events,
    build_stages,
    close_pools,
    context_check,
    finish_run,
    open_pools,
)


def generate_locally(config: GenerateConfig, progress: bool) -> RunSummary:
    """Run the configured stages in this process; write the output folder; return the summary."""
    return asyncio.run(_generate(config, progress))


async def _generate(config: GenerateConfig, progress: bool) -> RunSummary:
    stages = build_stages(config)
    endpoints, pools = await open_pools(config, stages)
    try:
        engine = Engine.for_run(config, stages, pools, journal_dir(Path(config.out)), progress)
        corpus, first = config.corpus, config.stages[0]
        if reads_instruction_set(config):  # distill over any instruction set (`run/rounds.py`)
            total = lambda: count_documents(corpus.path, corpus.limit)  # noqa: E731
            await engine.run(read_instruction_set(config), count_total=total)
        elif first in ("curate", "distill"):  # an earlier output's pool: re-scored, or its pairs distilled
            pool = Path(corpus.path)
            await engine.run(read_pool(pool, corpus.limit, first), total=pool_size(pool, corpus.limit, first))
        else:
            documents = corpus_documents(config, context_check(config, stages))
            await engine.run(documents, count_total=lambda: count_documents(corpus.path, corpus.limit))
    finally:
        await close_pools(endpoints, pools)
    stats = engine.run_stats()
    add_pool_events(stats, pools)
    first_endpoints = {name: pool.endpoints[0] for name, pool in pools.items()}
    return finish_run(config, stats, stages, first_endpoints)
