"""Run backtranslate -> curate -> rewrite over a corpus and write a dataset folder.

Examples:

    # the demo: the shipped corpus on the embedded SmolLM2 server (no endpoint given)
    bft generate generation/demo/corpus.jsonl --out demo-output --config generation/demo/demo.yaml

    # your own TGI or vLLM replicas, papers' defaults
    bft generate dolma/ --out out/ --endpoint http://gpu1:8080 --endpoint http://gpu2:8080

    # each stage on its own servers, all at once
    bft generate dolma/ --out out/ --stage-endpoint backtranslate=http://gpu1:8080 \
        --stage-endpoint curate=http://gpu2:8080 --stage-endpoint rewrite=http://gpu2:8080

    # one GPU serving the models in turn: run a stage, swap the model, rerun with one stage more
    bft generate dolma/ --out out/ --endpoint http://gpu:8080 --stages backtranslate
    bft generate dolma/ --out out/ --endpoint http://gpu:8080 --stages backtranslate,curate,rewrite

Rerunning the same command resumes: finished documents are not requested again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from bft.generation.client import Endpoint, redact_url
from bft.generation.config import ALL_STAGES, STAGES, GenerateConfig, dump_config, load_config
from bft.generation.corpus import count_documents, read_corpus
from bft.generation.engine import PREPARE, Engine
from bft.generation.errors import ConfigError
from bft.generation.escaping import Escaper
from bft.generation.output import journal_dir, write_outputs, write_stats
from bft.generation.pool import EndpointPool
from bft.generation.prepare import Preparer
from bft.generation.rounds import pool_size, read_pool
from bft.generation.segments import Segmenter
from bft.generation.stages import build_stage

# Keys that may change between a run and its resumption without changing what the data means.
# `stages` may grow: a later run goes on with the next stage from the earlier one's journals.
OPERATIONAL_KEYS = {
    "endpoints",
    "out",
    "stages",
    "request_timeout",
    "max_retries",
    "token_env",
    "note",
    "dead_after",
    "probe_interval",
    "endpoints_down_timeout",
}
DEFAULT_CONCURRENCY = 8  # requests in flight per endpoint when neither config nor /info says


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", help="Local .jsonl/.jsonl.gz/.parquet file or folder, or a Hub dataset id")
    parser.add_argument("--out", required=True, help="Output folder (rerun with the same folder to resume)")
    parser.add_argument("--config", help="YAML run config (see generation/demo/demo.yaml)")
    parser.add_argument("--endpoint", action="append", default=None, help="Endpoint URL; repeat for several")
    parser.add_argument(
        "--stage-endpoint",
        action="append",
        default=None,
        metavar="STAGE=URL",
        help="Endpoint for one stage only (e.g. curate=http://gpu2:8080); repeat for several",
    )
    parser.add_argument(
        "--model",
        help="Model name sent in requests, for servers that do not list theirs (`bft serve` prints it)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        help=f"Requests in flight per endpoint (default: TGI's /info max_concurrent_requests, else {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--score-mode",
        choices=("parsed", "expected"),
        help="Curate on the score the model wrote (parsed, default) or on sum p(k)*k (expected)",
    )
    parser.add_argument("--min-score", type=float, help="Curation threshold (default 5 parsed, 4.5 expected)")
    parser.add_argument("--stages", help=f"Comma-separated stages, in order (default: {','.join(STAGES)})")
    parser.add_argument("--limit", type=int, help="Process at most N documents")
    parser.add_argument("--text-field", help="Column with the document text (default: text)")
    parser.add_argument("--id-field", help="Column with the document id (default: id)")
    parser.add_argument("--split", help="Hub datasets: split (default: train)")
    parser.add_argument("--revision", help="Hub datasets: revision")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars")
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        help="local (default): this process streams the corpus; ray: blocks of it on a Ray cluster (bft[ray])",
    )
    parser.add_argument("--ray-address", help="--executor ray: the cluster to join (default: $RAY_ADDRESS, else local)")
    parser.add_argument(
        "--ray-actors", type=int, help="--executor ray: actors running the stages (default: see README)"
    )


def overrides_from(args: argparse.Namespace) -> dict:
    overrides = {"corpus.path": args.corpus, "out": args.out}
    if args.endpoint:
        overrides["endpoints"] = args.endpoint
    if args.stages:
        overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    for flag, key in (("limit", "corpus.limit"), ("text_field", "corpus.text_field"), ("id_field", "corpus.id_field")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    for flag in ("split", "revision"):
        if getattr(args, flag) is not None:
            overrides[f"corpus.{flag}"] = getattr(args, flag)
    if args.model is not None:
        for stage in ALL_STAGES:
            overrides[f"{stage}.model"] = args.model
    if args.max_concurrency is not None:
        for stage in ALL_STAGES:
            overrides[f"{stage}.max_concurrency"] = args.max_concurrency
    for flag, key in (("executor", "executor"), ("ray_address", "ray.address"), ("ray_actors", "ray.actors")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    if args.score_mode is not None:
        overrides["curate.score_mode"] = args.score_mode
    if args.min_score is not None:
        overrides["curate.min_score"] = args.min_score
    for item in args.stage_endpoint or []:
        stage, _, url = item.partition("=")
        if stage not in ALL_STAGES or not url:
            raise ConfigError(f"--stage-endpoint {item!r}: expected STAGE=URL with STAGE one of {list(ALL_STAGES)}")
        overrides.setdefault(f"{stage}.endpoints", []).append(url)
    return overrides


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


def check_resumable(out: Path, config: GenerateConfig) -> None:
    """Refuse to mix two different runs in one folder."""
    previous = out / "run_config.yaml"
    if not previous.exists():
        if out.exists() and any(out.iterdir()) and not journal_dir(out).exists():
            raise ConfigError(f"--out {out} exists and is not a bft output folder; choose an empty or new folder")
        return
    try:
        old = load_config(previous)
    except ConfigError as error:
        raise ConfigError(f"{previous} cannot be read to resume: {error}") from None
    if _meaning(old) != _meaning(config):
        raise ConfigError(
            f"{out} holds a run with a different configuration ({previous}); resume with the same settings or use a new --out"
        )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, overrides_from(args))
    out = Path(config.out)
    check_resumable(out, config)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(config, out / "run_config.yaml", redact=redact_url)
    started = time.monotonic()

    progress = not args.no_progress
    if config.endpoints or all(config.stage(s).endpoints for s in config.stages):
        summary = execute(config, progress)
    else:
        from bft.generation.embedded import EmbeddedServer, converted_checkpoint

        print("bft generate: no --endpoint given: starting the embedded SmolLM2-135M-Instruct server", file=sys.stderr)
        checkpoint = converted_checkpoint()
        log = out / ".bft" / "embedded-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with EmbeddedServer(checkpoint, log_path=log) as server:
            use_embedded(config, server)
            summary = execute(config, progress)
    print_summary(out, summary, time.monotonic() - started)
    return 0


def execute(config: GenerateConfig, progress: bool) -> dict:
    """Run the stages with the configured executor; return the summary `print_summary` shows."""
    if config.executor == "ray":
        from bft.generation.ray_executor import generate_on_ray

        return generate_on_ray(config, progress)
    return asyncio.run(_generate(config, progress))


def use_embedded(config: GenerateConfig, server) -> None:
    """Point every stage without endpoints at the embedded server, with its model (and tokenizer)."""
    config.endpoints = [server.url]
    for name in config.stages:
        stage_config = config.stage(name)
        stage_config.model = stage_config.model or server.model_name
        if stage_config.raw_format == "chat_template" and not stage_config.tokenizer:
            stage_config.tokenizer = str(server.model_dir)


def build_stages(config: GenerateConfig) -> list:
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


async def open_pools(
    config: GenerateConfig, stages, share: int = 1, log=tqdm.write
) -> tuple[dict[str, Endpoint], dict[str, EndpointPool]]:
    """Probe each stage's endpoints and put them in pools; each endpoint's limit is split `share` ways.

    `share` is the number of processes (Ray actors) sending to the same endpoints at once: together
    they keep the endpoint's limit, not `share` times it.
    """
    token = os.environ.get(config.token_env) or None
    endpoints: dict[str, Endpoint] = {}
    pools: dict[str, EndpointPool] = {}
    try:
        for stage in stages:
            members = []
            for url in stage.config.endpoints or config.endpoints:
                if url not in endpoints:
                    endpoints[url] = Endpoint(url, token=token, timeout=config.request_timeout)
                    await endpoints[url].probe()
                members.append(endpoints[url])
            for member in members:
                member.require_model(stage.config.model, f"stage {stage.name} (its `model`)")
            limits = [
                -(-(stage.config.max_concurrency or e.max_concurrent_requests or DEFAULT_CONCURRENCY) // share)
                for e in members
            ]
            pools[stage.name] = EndpointPool(
                stage.name,
                members,
                limits,
                dead_after=config.dead_after,
                probe_interval=config.probe_interval,
                down_timeout=config.endpoints_down_timeout,
                log=log,
            )
    except BaseException:
        await close_pools(endpoints, pools)
        raise
    return endpoints, pools


async def close_pools(endpoints: dict[str, Endpoint], pools: dict[str, EndpointPool]) -> None:
    for pool in pools.values():
        await pool.close()
    for endpoint in endpoints.values():
        await endpoint.close()


def stage_stats(engine: Engine, pools: dict[str, EndpointPool]) -> dict[str, dict]:
    """The engine's counters per stage (prepare included), with each pool's endpoint events."""
    for name, pool in pools.items():
        engine.stats[name].endpoint_events.update(pool.events)
    return {name: s.as_dict() for name, s in engine.stats.items()}


async def _generate(config: GenerateConfig, progress: bool) -> dict:
    out = Path(config.out)
    stages = build_stages(config)
    endpoints, pools = await open_pools(config, stages)
    try:
        engine = Engine(
            stages,
            pools,
            journal_dir(out),
            max_retries=config.max_retries,
            request_timeout=config.request_timeout,
            truncate_to_fit=config.truncate_to_fit,
            chars_per_token=config.chars_per_token,
            progress=progress,
        )
        corpus = config.corpus
        first = config.stages[0]
        if first in ("curate", "distill"):  # an earlier output's pool: re-scored, or its pairs distilled
            pool = Path(corpus.path)
            await engine.run(read_pool(pool, corpus.limit, first), total=pool_size(pool, corpus.limit, first))
        else:
            documents = prepared_documents(config, stages[0])
            await engine.run(documents, count_total=lambda: count_documents(corpus.path, corpus.limit))
    finally:
        await close_pools(endpoints, pools)
    first_endpoints = {name: pool.endpoints[0] for name, pool in pools.items()}
    return finish_run(config, stage_stats(engine, pools), engine.wall_seconds, stages, first_endpoints)


def prepared_documents(config: GenerateConfig, backtranslate):
    """The corpus, read (cut into header segments when asked) and put through the prepare rules."""
    corpus = config.corpus
    segment = Segmenter(config.segment) if config.segment.mode == "headers" else (lambda items: items)
    return Preparer(config.prepare, context_check(config, backtranslate))(
        segment(
            read_corpus(
                corpus.path,
                corpus.text_field,
                corpus.id_field,
                corpus.split,
                corpus.revision,
                corpus.limit,
                duplicate_ids=corpus.duplicate_ids,
                invalid_utf8=corpus.invalid_utf8,
                max_record_bytes=corpus.max_record_bytes,
            )
        )
    )


def finish_run(
    config: GenerateConfig,
    stats: dict[str, dict],
    wall_seconds: float,
    stages,
    first_endpoints: dict[str, Endpoint],
    journal_dirs: list[Path] | None = None,
) -> dict:
    """Write stats, the parquet configs and the card; return the summary `print_summary` shows.

    `stats` holds each stage's counters (`StageStats.as_dict`); `journal_dirs` the journals the
    configs are made from (the run's one folder unless given: the Ray executor has one per block).
    """
    out, corpus = Path(config.out), config.corpus
    first = config.stages[0]
    prepare = stats[PREPARE]
    prepare["entered"] = prepare["rejected"] + stats[first]["entered"]
    prepare["kept"] = stats[first]["entered"]
    stats["wall_seconds"] = round(wall_seconds, 3)
    write_stats(out, stats)
    written = write_outputs(out, config.stages, journal_dirs)

    from bft.cards.generation_card import render_generation_card

    provenance = {}
    for stage in stages:
        entry = stage.provenance(None, "", 0, first_endpoints[stage.name]).__dict__
        provenance[stage.name] = entry
    render_generation_card(
        out, written, {k: v for k, v in stats.items() if isinstance(v, dict)}, provenance, corpus.path, config.note
    )
    return {"stats": stats, "counts": {name: rows for name, (rows, _) in written.items()}}


def context_check(config: GenerateConfig, backtranslate):
    """`fits(text)` for `prepare.context_tokens`, or None when it is not set."""
    limit = config.prepare.context_tokens
    if limit is None:
        return None
    budget = limit - backtranslate.config.sampling.max_tokens - config.prepare.context_margin
    if budget <= 0:
        raise ConfigError("prepare.context_tokens leaves no room for the prompt after max_tokens and context_margin")
    tokenizer = backtranslate.tokenizer if backtranslate.config.tokenizer else None

    def fits(text: str) -> bool:
        prompt = backtranslate.request_text(text)
        if tokenizer is None:
            return len(prompt) / config.chars_per_token <= budget
        return len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= budget

    return fits


def print_summary(out: Path, summary: dict, seconds: float) -> None:
    stats = summary["stats"]
    print(f"\nbft generate: {stats[PREPARE]['entered']} documents in, output in {out.resolve()} ({seconds:.0f} s)")
    for name, s in stats.items():
        if not isinstance(s, dict):
            continue
        reasons = ", ".join(f"{r}: {n}" for r, n in s["rejected_by_reason"].items())
        print(
            f"  {name:<14} entered {s['entered']:>6}  kept {s['kept']:>6}  rejected {s['rejected']:>6}"
            + (f"  ({reasons})" if reasons else "")
        )
    print("  rows per config: " + yaml.safe_dump(summary["counts"], default_flow_style=True).strip())
    main = next((c for c in ("rewritten", "curated", "backtranslated") if c in summary["counts"]), "rejected")
    print(
        f'Load it with:\n  from datasets import load_dataset; ds = load_dataset("{out.resolve()}", "{main}", split="train")'
    )
