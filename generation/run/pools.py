"""The endpoints a run sends to: named, probed, checked against the stages, put in pools with their limits.

Before the run: the embedded server's address and model filled in where no endpoint was given
(`use_embedded`), the served model's tokenizer where a stage applies the chat template itself
(`use_served_tokenizers`), every endpoint probed once (`probe_endpoints`: what it serves, its context, its
API), what the server is known to refuse for every request refused up front (`check_parameters`), and each
stage's endpoints put in a pool with each endpoint's one limit (`open_pools`, `give_limit`). After it: the
pools closed (`close_pools`) and their events and limits added to the run's stats (`add_pool_events`).
Both executors do this the same way; a Ray actor opens its own pools with its share of each limit. A stage
with `send: batch` has no endpoints here: it is given none of them, and no pool (`batching.py` sends it).
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

from bft.generation.config import GenerateConfig
from bft.generation.endpoints.client import Endpoint
from bft.generation.endpoints.limiter import AdaptiveLimit
from bft.generation.endpoints.pool import EndpointPool
from bft.generation.endpoints.served_tokenizer import tokenizer_of_endpoint
from bft.generation.errors import ConfigError
from bft.generation.method.stages import Stage
from bft.generation.run.servers import started_args
from bft.generation.run.stats import RunStats

TGI_MAX_TOP_N_TOKENS = 5  # TGI's launcher default for --max-top-n-tokens (not in /info)


def use_embedded(config: GenerateConfig, server) -> None:
    """Point every stage without endpoints at the embedded server, with its model (and tokenizer)."""
    config.endpoints = [server.url]
    for name in config.stages:
        stage_config = config.stage(name)
        if stage_config.endpoints or stage_config.send == "batch":  # its own, bft's servers', or a batch API
            continue
        stage_config.model = stage_config.model or server.model_name
        if stage_config.raw_format == "chat_template" and not stage_config.tokenizer:
            stage_config.tokenizer = str(server.model_dir)


def use_served_tokenizers(config: GenerateConfig, log=print, skip=()) -> None:
    """Give each stage that applies the chat template itself (`raw_format: chat_template`) and names no
    tokenizer the tokenizer of the model its endpoint serves (`endpoints/served_tokenizer.py`), saying so.
    Stages in `skip` (those bft serves itself) get their served model's own when their servers start."""
    token = os.environ.get(config.token_env) or None
    for name in (name for name in config.stages if name not in skip):
        stage_config = config.stage(name)
        if stage_config.send == "batch":  # no endpoint to ask (a batch stage names its own tokenizer)
            continue
        urls = stage_config.endpoints or config.endpoints
        applies_template = stage_config.mode == "raw" and stage_config.raw_format == "chat_template"
        if applies_template and not stage_config.tokenizer and urls:
            stage_config.tokenizer = tokenizer_of_endpoint(urls[0], name, token)
            log(f"bft generate: {name}.tokenizer: {stage_config.tokenizer} (the model its endpoint serves)")


async def probe_endpoints(config: GenerateConfig, stages) -> dict[str, Endpoint]:
    """Each endpoint URL of the stages, probed once (what it serves, its context, its API); all closed again
    when one fails."""
    token = os.environ.get(config.token_env) or None
    endpoints: dict[str, Endpoint] = {}
    try:
        for url in dict.fromkeys(url for stage in stages for url in stage.config.endpoints or config.endpoints):
            endpoints[url] = Endpoint(url, token=token, timeout=config.request_timeout, stream=config.stream)
            await endpoints[url].probe()
        for stage in stages:  # a server bft started: the engine arguments it passed, for provenance
            if (args := started_args(stage.config)) is not None:
                for url in stage.config.endpoints:
                    endpoints[url].server_args = args
    except BaseException:
        for endpoint in endpoints.values():
            await endpoint.close()
        raise
    return endpoints


async def open_pools(
    config: GenerateConfig, stages, share: int = 1, log=tqdm.write
) -> tuple[dict[str, Endpoint], dict[str, EndpointPool]]:
    """Probe each stage's endpoints and put them in pools; each endpoint's limit is split `share` ways.

    `share` is the number of processes (Ray actors) sending to the same endpoints at once: together
    they keep the endpoint's limit, not `share` times it.
    """
    endpoints = await probe_endpoints(config, stages)
    pools: dict[str, EndpointPool] = {}
    try:
        users: dict[str, list[Stage]] = {}
        for stage in stages:
            members = []
            for url in stage.config.endpoints or config.endpoints:
                members.append(endpoints[url])
                users.setdefault(url, []).append(stage)
            for member in members:
                member.require_model(stage.config.model, f"stage {stage.name} (its `model`)")
                check_parameters(stage, member)
        for url, endpoint in endpoints.items():
            await give_limit(endpoint, users[url], share)
        for priority, stage in enumerate(stages):  # later stages first: a document's next request before a new one
            pools[stage.name] = EndpointPool(
                stage.name,
                [endpoints[url] for url in stage.config.endpoints or config.endpoints],
                priority=priority,
                dead_after=config.dead_after,
                probe_interval=config.probe_interval,
                down_timeout=config.endpoints_down_timeout,
                log=log,
            )
    except BaseException:
        await close_pools(endpoints, pools)
        raise
    return endpoints, pools


async def give_limit(endpoint: Endpoint, stages: list[Stage], share: int = 1) -> None:
    """The endpoint's one limit, shared by `stages` (`endpoints/limiter.py`): fixed at the largest
    `max_concurrency` a stage sets, split `share` ways (Ray actors); else adaptive, up to TGI's
    `max_concurrent_requests` when known, steered by the server's `/metrics` where it has them."""
    fixed = [s.config.max_concurrency for s in stages if isinstance(s.config.max_concurrency, int)]
    if fixed:
        endpoint.limiter = AdaptiveLimit(endpoint.name, fixed=-(-max(fixed) // share))
    else:
        ceiling = -(-endpoint.max_concurrent_requests // share) if endpoint.max_concurrent_requests else None
        endpoint.limiter = AdaptiveLimit(endpoint.name, ceiling=ceiling)
    samples = max(s.samples for s in stages)
    endpoint.reserve((endpoint.limiter.fixed or endpoint.limiter.ceiling) * samples + 1)  # a connection each
    if endpoint.limiter.fixed is None and await endpoint.server_load() is not None:
        endpoint.limiter.watch(endpoint.server_load)


def check_parameters(stage: Stage, endpoint: Endpoint) -> None:
    """Refuse before the run what the server is known to refuse for every request."""
    if endpoint.api == "tgi" and stage.top_n and stage.top_n > TGI_MAX_TOP_N_TOKENS:
        raise ConfigError(
            f"{stage.name}: {endpoint.name} is TGI, which serves at most {TGI_MAX_TOP_N_TOKENS} top_n_tokens by "
            f"default (--max-top-n-tokens) and {stage.name}.top_n_tokens asks {stage.top_n}: lower it"
        )


async def close_pools(endpoints: dict[str, Endpoint], pools: dict[str, EndpointPool]) -> None:
    for pool in pools.values():
        await pool.close()
    for endpoint in endpoints.values():
        if endpoint.limiter is not None:
            await endpoint.limiter.stop_watching()
        await endpoint.close()


def add_pool_events(stats: RunStats, pools: dict[str, EndpointPool], before: dict | None = None) -> None:
    """Each pool's endpoint events (removed, restored) into its stage's counters, less `before`'s."""
    for name, pool in pools.items():
        stats.stages[name].endpoint_events.update(pool.events - before[name] if before else pool.events)
        for member in pool.members:  # each endpoint's limit over the run, once however many stages share it
            stats.endpoints[member.endpoint.name] = member.limiter.summary()
