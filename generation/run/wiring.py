"""What every executor does around the stage engine, written once.

Before the engine: the stages built from the run config (`build_stages`), the context check that
prepare applies (`context_check`), what the first stage reads (`input_items`), the endpoints probed and
put in pools (`open_pools`), the embedded server's address filled in when no endpoint was given
(`use_embedded`), the rule that decides whether an output folder may be resumed with a config
(`check_resumable`), the request cache it answers from (`open_replies`), and a finished run's summary, which needs no server (`finished_run`). After it:
stats, parquet configs and the generation card written from the journals, then the record that they
are (`finish_run`).

The local executor (`run/local.py`) and the Ray executor (`run/ray_executor.py`) are both made of
these pieces; neither borrows from the other, nor from the `bft generate` command.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from bft.cards.generation_card import render_generation_card
from bft.generation.config import ALL_STAGES, GenerateConfig, load_config
from bft.generation.corpus.stream import corpus_documents
from bft.generation.endpoints.client import Endpoint
from bft.generation.endpoints.limiter import AdaptiveLimit
from bft.generation.endpoints.pool import EndpointPool
from bft.generation.endpoints.served_tokenizer import tokenizer_of_endpoint
from bft.generation.errors import ConfigError
from bft.generation.layout import (
    OUTPUT_CONFIG_NAMES,
    REJECTED_CONFIG,
    RUN_CONFIG_FILE,
    dataset_configs,
    earlier_runs_dir,
    journal_dir,
    main_config,
)
from bft.generation.method.escaping import Escaper
from bft.generation.method.fitting import cut_at_whitespace
from bft.generation.method.stages import Stage, build_stage
from bft.generation.records import StageRecord
from bft.generation.run.cached_replies import ReplyCache
from bft.generation.run.finished import finished_outputs, record_finished
from bft.generation.run.output import write_outputs
from bft.generation.run.request_cache import RequestCache, default_cache_dir
from bft.generation.run.rounds import read_instruction_set, read_pool, reads_instruction_set
from bft.generation.run.stats import RunStats

TGI_MAX_TOP_N_TOKENS = 5  # TGI's launcher default for --max-top-n-tokens (not in /info)
# Keys that may change between a run and its resumption without changing what the data means.
# `stages` may grow: a later run goes on with the next stage from the earlier one's journals.
OPERATIONAL_KEYS = {
    "endpoints",
    "out",
    "stages",
    "request_timeout",
    "stream",
    "max_retries",
    "retry_failed",
    "token_env",
    "note",
    "dead_after",
    "probe_interval",
    "endpoints_down_timeout",
    "cache",  # where replies come from does not change them (a cached reply is the reply a server gave)
}


@dataclass
class RunSummary:
    """What a finished run reports: its stats, the rows written per config, and the configs left
    empty (not written, since `load_dataset` cannot load them) with why."""

    stats: RunStats
    counts: dict[str, int]
    empty: dict[str, str] = field(default_factory=dict)

    @property
    def main_config(self) -> str | None:
        return main_config(self.counts) if self.counts else None


def why_empty(config: str, stats: RunStats) -> str:
    """Why a config has no rows, from the stage that makes it."""
    if config == REJECTED_CONFIG:
        return "no record was rejected"
    stage = next(s for s, c in OUTPUT_CONFIG_NAMES.items() if c == config)
    counts = stats.stages.get(stage)
    if counts is None or not counts.entered:
        return f"no document reached {stage}"
    reasons = ", ".join(f"{r}: {n}" for r, n in counts.rejected_by_reason.most_common(3))
    return f"{stage} kept none of {counts.entered} ({reasons})"


# -- before the run ---------------------------------------------------------------------------------


def _meaning(config: GenerateConfig) -> dict:
    data = config.to_dict()
    for key in OPERATIONAL_KEYS:
        data.pop(key, None)
    data["corpus"].pop("limit", None)
    for key in ("address", "actors", "actor_cpus"):  # where and how wide a Ray run goes, not what it makes
        data["ray"].pop(key, None)
    for stage in ALL_STAGES:
        data.setdefault(stage, {}).pop("endpoints", None)
        data[stage].pop("max_concurrency", None)
    return data


def _flat(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    flat = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return flat


def differing_settings(old: GenerateConfig, new: GenerateConfig, shown: int = 8) -> list[str]:
    """The settings two runs differ in (those that change what a run makes), as `key: old -> new`."""
    before, after = _flat(_meaning(old)), _flat(_meaning(new))
    keys = [key for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]
    lines = [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in keys[:shown]]
    return lines + ([f"... and {len(keys) - shown} more"] if len(keys) > shown else [])


def finished_anything(out: Path) -> bool:
    """Whether an earlier run in `out` journaled any record (a start that failed before did not)."""
    folder = journal_dir(out)
    return folder.is_dir() and any(path.stat().st_size for path in folder.rglob("*.jsonl"))


def check_resumable(out: Path, config: GenerateConfig) -> tuple[Path, list[str]] | None:
    """Never mix two different runs in one folder. The same settings resume. Other settings take the folder:
    the earlier run's files are set aside under `.bft/earlier/TIME/` (nothing is lost) and the run starts
    afresh, the request cache answering every request whose inputs did not change; returns (where they went,
    the settings that differ). A start that failed before finishing any record (a wrong endpoint, say) binds
    nothing: the corrected command runs."""
    previous = out / RUN_CONFIG_FILE
    if not previous.exists():
        if out.exists() and any(out.iterdir()) and not (out / ".bft").is_dir():
            raise ConfigError(f"--out {out} exists and is not a bft output folder; choose an empty or new folder")
        return
    if not finished_anything(out):
        return
    try:
        old = load_config(previous)
    except ConfigError as error:
        raise ConfigError(f"{previous} cannot be read to resume: {error}") from None
    differences = differing_settings(old, config)
    return (set_aside(out), differences) if differences else None


def set_aside(out: Path) -> Path:
    """Move everything an earlier run wrote in `out` (its data, card, stats, journals) to `.bft/earlier/TIME/`,
    keeping its layout there; earlier runs set aside before stay where they are."""
    earlier = earlier_runs_dir(out)
    target = earlier / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    while target.exists():  # two changes within a second
        target = target.with_name(target.name + "-1")
    (target / ".bft").mkdir(parents=True)
    for path in list(out.iterdir()):
        if path.name != ".bft":
            path.rename(target / path.name)
    for path in list((out / ".bft").iterdir()):
        if path != earlier:
            path.rename(target / ".bft" / path.name)
    return target


def input_items(config: GenerateConfig, stages: list[Stage] | None = None):
    """What the run's first stage reads, in order: an instruction set (`distill`), an earlier output's pool
    (`curate`, `distill`), or the corpus through the prepare rules (with the context check of `stages`)."""
    corpus, first = config.corpus, config.stages[0]
    if reads_instruction_set(config):  # distill over any instruction set (`run/rounds.py`)
        return read_instruction_set(config)
    if first in ("curate", "distill"):  # an earlier output's pool: re-scored, or its pairs distilled
        return read_pool(Path(corpus.path), corpus.limit, first)
    return corpus_documents(config, context_check(config, stages) if stages is not None else None)


def finished_run(config: GenerateConfig) -> RunSummary | None:
    """The summary of the run in `config.out` when it is finished (`run/finished.py`): every item it reads has
    its outcome in the journals and the outputs were written from them. Nothing is started or asked."""
    finished = finished_outputs(config, input_items(config))
    return RunSummary(RunStats.read(Path(config.out)), *finished) if finished is not None else None


def open_replies(config: GenerateConfig) -> ReplyCache | None:
    """The request cache the run answers from and stores in (`cache.mode`), or None when it is off."""
    if config.cache.mode == "off":
        return None
    return ReplyCache(RequestCache(cache_folder(config), config.cache.mode), run=str(Path(config.out).resolve()))


def cache_folder(config: GenerateConfig) -> Path:
    """The request cache's folder: `cache.path`, else the default (`request_cache.default_cache_dir`)."""
    return Path(config.cache.path or default_cache_dir()).expanduser().resolve()


def use_embedded(config: GenerateConfig, server) -> None:
    """Point every stage without endpoints at the embedded server, with its model (and tokenizer)."""
    config.endpoints = [server.url]
    for name in config.stages:
        stage_config = config.stage(name)
        stage_config.model = stage_config.model or server.model_name
        if stage_config.raw_format == "chat_template" and not stage_config.tokenizer:
            stage_config.tokenizer = str(server.model_dir)


def use_served_tokenizers(config: GenerateConfig, log=print) -> None:
    """Give each stage that applies the chat template itself (`raw_format: chat_template`) and names no
    tokenizer the tokenizer of the model its endpoint serves (`endpoints/served_tokenizer.py`), saying so."""
    token = os.environ.get(config.token_env) or None
    for name in config.stages:
        stage_config = config.stage(name)
        urls = stage_config.endpoints or config.endpoints
        applies_template = stage_config.mode == "raw" and stage_config.raw_format == "chat_template"
        if applies_template and not stage_config.tokenizer and urls:
            stage_config.tokenizer = tokenizer_of_endpoint(urls[0], name, token)
            log(f"bft generate: {name}.tokenizer: {stage_config.tokenizer} (the model its endpoint serves)")


def build_stages(config: GenerateConfig) -> list[Stage]:
    escaper = Escaper(config.prepare.markers) if config.prepare.escape_markers else None
    return [
        build_stage(
            name,
            config.stage(name),
            escaper=escaper,
            language=config.check_language,
            echo=config.check_prompt_echo,
        )
        for name in config.stages
    ]


class ContextFit:
    """Whether a document fits the context in every stage of the run that sends it (`prepare.context_tokens`).

    A stage's budget is the context less its `max_tokens` and `context_margin`, and, where its prompt
    holds an instruction (curate, rewrite), less room for the longest instruction backtranslation keeps
    (`backtranslate.max_instruction_chars` at `chars_per_token`, at most its `sampling.max_tokens`). Rewriting asks 2,048 new tokens of a
    4,096-token Llama-2, so a draft that fits backtranslation may not fit rewriting: checked up front,
    a document is dropped or cut once, before any request, instead of refused mid-run.
    """

    def __init__(self, config: GenerateConfig, stages: list[Stage]):
        self.config = config
        backtranslate = config.backtranslate
        instruction = min(
            backtranslate.sampling.max_tokens, -(-backtranslate.max_instruction_chars // config.chars_per_token)
        )
        self.stages = []
        for stage in stages:
            holds_instruction = "instruction" in stage.template.placeholders or "generated instruction" in (
                stage.template.placeholders
            )
            budget = config.prepare.context_tokens - stage.config.sampling.max_tokens - config.prepare.context_margin
            budget -= int(instruction) if holds_instruction and stage.name != "backtranslate" else 0
            if budget <= 0:
                raise ConfigError(
                    f"prepare.context_tokens leaves no room for {stage.name}'s prompt after its max_tokens"
                    + (", an instruction" if holds_instruction else "")
                    + " and context_margin"
                )
            self.stages.append((stage, budget))

    def tokens(self, stage: Stage, text: str) -> int:
        probe = StageRecord(id="", stage="", status="", document=text, position=0, input_location="", instruction="")
        prompt = stage.request(probe).text
        if stage.config.tokenizer:
            return len(stage.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return int(len(prompt) / self.config.chars_per_token)

    def overflow(self, text: str) -> str | None:
        """The first stage `text` does not fit, or None."""
        return next((stage.name for stage, budget in self.stages if self.tokens(stage, text) > budget), None)

    def cut(self, text: str) -> str | None:
        """The longest beginning of `text` (cut on whitespace) that fits every stage, or None."""
        low, high, best = 0, len(text), None
        while low <= high:  # binary search on the number of characters kept
            middle = (low + high) // 2
            candidate = cut_at_whitespace(text, middle)
            if candidate and self.overflow(candidate) is None:
                best, low = candidate, middle + 1
            else:
                high = middle - 1
        return best


def context_check(config: GenerateConfig, stages: list[Stage]) -> ContextFit | None:
    """The context check for `prepare.context_tokens`, or None when it is not set."""
    if config.prepare.context_tokens is None:
        return None
    return ContextFit(config, stages)


async def probe_endpoints(config: GenerateConfig, stages) -> dict[str, Endpoint]:
    """Each endpoint URL of the stages, probed once (what it serves, its context, its API); all closed again
    when one fails."""
    token = os.environ.get(config.token_env) or None
    endpoints: dict[str, Endpoint] = {}
    try:
        for url in dict.fromkeys(url for stage in stages for url in stage.config.endpoints or config.endpoints):
            endpoints[url] = Endpoint(url, token=token, timeout=config.request_timeout, stream=config.stream)
            await endpoints[url].probe()
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
    stops = len(stage.config.sampling.stop)
    if endpoint.max_stop_sequences is not None and stops > endpoint.max_stop_sequences:
        raise ConfigError(
            f"{stage.name}: {endpoint.name} takes at most {endpoint.max_stop_sequences} stop sequences "
            f"(TGI /info max_stop_sequences) and {stage.name}.sampling.stop has {stops}"
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


# -- after the run ----------------------------------------------------------------------------------


def finish_run(
    config: GenerateConfig,
    stats: RunStats,
    stages: list[Stage],
    first_endpoints: dict[str, Endpoint],
    journal_dirs: list[Path] | None = None,
) -> RunSummary:
    """Write stats, the parquet configs and the card; return the summary the command prints.

    `journal_dirs` are the journals the configs are made from (the run's one folder unless given:
    the Ray executor has one per block).
    """
    out = Path(config.out)
    stats.write(out)
    written = write_outputs(out, config.stages, journal_dirs)
    provenance = {stage.name: stage.provenance(None, "", 0, first_endpoints[stage.name]).__dict__ for stage in stages}
    summary = RunSummary(stats, written.counts, {name: why_empty(name, stats) for name in written.empty})
    render_generation_card(
        out,
        configs=dataset_configs(written.files),
        counts=summary.counts,
        empty=summary.empty,
        main_config=summary.main_config or "",
        stage_table=stats.stage_table(provenance),
        rejects=stats.rejects(),
        documents_in=stats.documents_in,
        corpus=config.corpus.path,
        note=config.note,
    )
    record_finished(out, config.stages, summary.counts, summary.empty)
    return summary
