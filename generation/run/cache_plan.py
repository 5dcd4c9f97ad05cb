"""`bft generate --dry-run`: how many of a run's requests the request cache would answer, sending nothing.

Each prepared document is walked through the stages on stored replies alone: a stage whose request (every
sample of it) the cache holds is judged from them, as the run would judge it, and the document goes on to
the next stage if kept; the first request the cache lacks would be asked, and what the later stages would
ask for that document depends on its reply, so it is counted apart ("depends on a reply to come").

The key names the model the endpoints serve (`cached_replies.py`), so the endpoints are probed for it (the
same GETs a run starts with: `/info`, `/v1/models`); no request for a reply is sent. The embedded default
server is not started for a dry run, so without `--endpoint` the cache is not counted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bft.generation.config import GenerateConfig
from bft.generation.corpus.stream import corpus_documents
from bft.generation.endpoints.client import Endpoint
from bft.generation.errors import RequestRejected
from bft.generation.method.fitting import context_check
from bft.generation.records import KEPT, Document
from bft.generation.run.cached_replies import ReplyCache, cache_folder
from bft.generation.run.engine import prepared_record
from bft.generation.run.pools import probe_endpoints
from bft.generation.run.request_cache import RequestCache
from bft.generation.run.stages import build_stages


@dataclass
class CachedShare:
    """One stage's requests in a dry run: answered by the cache, to be asked, and unknown yet."""

    stage: str
    answered: int = 0
    asked: int = 0
    after_asking: int = 0  # documents an earlier stage must ask first: this stage's requests depend on the reply


async def _served_endpoints(config: GenerateConfig, stages) -> dict[str, list[Endpoint]]:
    found = await probe_endpoints(config, stages)
    for endpoint in found.values():
        await endpoint.close()
    return {s.name: [found[url] for url in s.config.endpoints or config.endpoints] for s in stages}


def cached_shares(config: GenerateConfig) -> list[CachedShare] | None:
    """Per stage, the requests the cache would answer (module docstring); None without endpoints to key by."""
    if config.cache.mode == "off" or not (config.endpoints or all(config.stage(s).endpoints for s in config.stages)):
        return None
    stages = build_stages(config)
    served = asyncio.run(_served_endpoints(config, stages))
    replies = ReplyCache(RequestCache(cache_folder(config), "read-only"), run="")
    shares = [CachedShare(stage.name) for stage in stages]
    try:
        for item in corpus_documents(config, context_check(config, stages)):
            if not isinstance(item, Document):
                continue
            record = prepared_record(item)
            for index, stage in enumerate(stages):
                endpoints = served[stage.name]
                outcomes = []
                for sample in range(stage.samples):
                    request = stage.request(record)
                    hit = replies.lookup(replies.key(stage, request, sample, endpoints), request, endpoints)
                    if hit is None or isinstance(hit, RequestRejected):  # (a refusal: the run cuts and asks again)
                        break
                    outcomes.append(stage.outcome(record, hit[0], 1, hit[1]))
                if len(outcomes) < stage.samples:
                    shares[index].asked += 1
                    for later in shares[index + 1 :]:
                        later.after_asking += 1
                    break
                shares[index].answered += 1
                record = stage.combine(record, outcomes) if stage.samples > 1 else outcomes[0]
                if record.status != KEPT:
                    break
    finally:
        replies.close()
    return shares
