"""Run backtranslate -> curate -> rewrite over a corpus and write a dataset folder.

Examples:

    # the demo: the shipped corpus on the embedded SmolLM2 server (no endpoint given)
    bft generate generation/demo/corpus.jsonl --out demo-output --config generation/demo/demo.yaml

    # your own TGI or vLLM replicas, papers' defaults
    bft generate dolma/ --out out/ --endpoint http://gpu1:8080 --endpoint http://gpu2:8080

    # each stage on its own servers, all at once
    bft generate dolma/ --out out/ --stage-endpoint backtranslate=http://gpu1:8080 \
        --stage-endpoint curate=http://gpu2:8080 --stage-endpoint rewrite=http://gpu2:8080

    # bft starts the servers itself (vLLM or SGLang, one replica per GPU group), and stops them at the end
    bft generate dolma/ --out out/ --serve vllm --serve-model meta-llama/Llama-3.1-8B-Instruct \
        --serve-arg="--max-model-len 8192"

    # ... on a Ray cluster: each replica in an actor placed by Ray, spread over the nodes
    bft generate dolma/ --out /shared/out --executor ray --ray-address auto --serve vllm \
        --serve-model meta-llama/Llama-3.1-70B-Instruct --serve-arg="-tp 4"

    # BAFT's models in turn on the same GPUs: the backward model for backtranslate and curate, then the rewriter
    bft generate dolma/ --out out/ --config baft.yaml --serve-in-turn   # (its stages' serve: settings)

    # your own server, one model at a time: run a stage, swap the model, rerun with one stage more
    bft generate dolma/ --out out/ --endpoint http://gpu:8080 --stages backtranslate
    bft generate dolma/ --out out/ --endpoint http://gpu:8080 --stages backtranslate,curate,rewrite

    # what would it send and cost? Nothing is sent (or, with --probe 20, 20 documents are, to measure)
    bft generate dolma/ --out out/ --dry-run [--probe 20 --endpoint http://gpu:8080] [--throughput 2500]

Rerunning the same command resumes: finished documents are not requested again, and a finished run prints
its summary without starting a server.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import yaml

from bft.generation.config import ALL_STAGES, GenerateConfig
from bft.generation.config.files import dump_config, load_config, shipped_configs
from bft.generation.config.flags import add_config_flag, flag_overrides
from bft.generation.corpus.diagnosis import likely_cause, nothing_enters
from bft.generation.corpus.files import COMPRESSIONS, PAGE_SUFFIXES, PARQUET_SUFFIXES
from bft.generation.endpoints.embedded import EmbeddedServer, converted_checkpoint
from bft.generation.endpoints.transport import base_url, redact_url
from bft.generation.errors import ConfigError
from bft.generation.layout import PREPARE, RUN_CONFIG_FILE
from bft.generation.run.cache_plan import cached_shares
from bft.generation.run.cached_replies import cache_folder
from bft.generation.run.dry_run import add_probe, format_plan, plan_run
from bft.generation.run.finishing import RunSummary, finished_run
from bft.generation.run.inputs import scoring_rule_of_the_pool
from bft.generation.run.local import generate_locally
from bft.generation.run.money import stage_price
from bft.generation.run.pools import use_embedded, use_served_tokenizers
from bft.generation.run.ray_executor import generate_on_ray
from bft.generation.run.ray_servers import RayServers
from bft.generation.run.resume import check_resumable
from bft.generation.run.served_in_turn import generate_in_turn
from bft.generation.run.servers import RunServers, served_stages

# The flags that set a run setting: flag -> the field's dotted path in `GenerateConfig` (`*.model`: every stage's
# `model`; `cache.mode=off`: a switch setting that value). Their type, choices, stated default and help are the
# field's (`config/flags.py`); a flag not given leaves the --config file's value.
CONFIG_FLAGS = {
    "--out": "out",
    "--endpoint": "endpoints",
    "--model": "*.model",
    "--max-concurrency": "*.max_concurrency",
    "--score-mode": "curate.score_mode",
    "--min-score": "curate.min_score",
    "--stages": "stages",
    "--limit": "corpus.limit",
    "--text-field": "corpus.text_field",
    "--id-field": "corpus.id_field",
    "--split": "corpus.split",
    "--revision": "corpus.revision",
    "--cache": "cache.path",
    "--no-cache": "cache.mode=off",
    "--executor": "executor",
    "--ray-address": "ray.address",
    "--ray-actors": "ray.actors",
    "--serve": "serve.engine",
    "--serve-model": "serve.model",
    "--serve-arg": "serve.args",
    "--serve-python": "serve.python",
    "--serve-replicas": "serve.replicas",
    "--serve-max-restarts": "serve.max_restarts",
    "--serve-in-turn": "serve.order=in_turn",
}
REQUIRED_FLAGS = ("--out",)  # a run needs somewhere to write


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", help=corpus_help())
    parser.add_argument(
        "--config",
        help=f"YAML run config file, or a shipped one by name: {', '.join(shipped_configs())} "
        "(the demo's: generation/demo/demo.yaml); the flags below override its keys",
    )
    for flag, target in CONFIG_FLAGS.items():
        add_config_flag(parser, flag, target, required=flag in REQUIRED_FLAGS)
    parser.add_argument(
        "--stage-endpoint",
        action="append",
        default=None,
        metavar="STAGE=URL",
        help="Endpoint for one stage only (e.g. curate=http://gpu2:8080); repeat for several. --endpoint replaces "
        "the stage endpoints a --config names",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Read and prepare the corpus and say per stage what a run would send and cost; send and write nothing",
    )
    parser.add_argument(
        "--probe",
        type=int,
        metavar="N",
        help="--dry-run: run the first N documents through the stages for real (in a temporary folder) to measure "
        "the server's tokens/s and keep rates",
    )
    parser.add_argument(
        "--throughput", type=float, metavar="TOKENS_PER_S", help="--dry-run: completion tokens/s to estimate time with"
    )


def corpus_help() -> str:
    """What CORPUS may be, from the suffixes the readers take (`corpus/files.py`)."""
    compressed = "/".join(c for c in COMPRESSIONS if c)
    return (
        f"A JSON-lines file (.jsonl or .json, as Dolma names them; plain or {compressed}-compressed: .jsonl.gz, "
        f".json.gz, ...), a {'/'.join(PARQUET_SUFFIXES)} file, web pages for header segments "
        f"(HTML or WARC: {', '.join(PAGE_SUFFIXES)}), a folder of them, or a Hub dataset id (ORG/NAME, streamed)"
    )


def overrides_from(args: argparse.Namespace) -> dict:
    """The config keys the command line sets: CORPUS, the table's flags, and --stage-endpoint's."""
    overrides = {"corpus.path": args.corpus}
    if args.endpoint or args.serve:  # the command line wins over the config: every stage goes to these endpoints
        for stage in ALL_STAGES:
            overrides[f"{stage}.endpoints"] = []
    overrides.update(flag_overrides(CONFIG_FLAGS, args))
    for item in args.stage_endpoint or []:
        stage, _, url = item.partition("=")
        if stage not in ALL_STAGES or not url:
            raise ConfigError(f"--stage-endpoint {item!r}: expected STAGE=URL with STAGE one of {list(ALL_STAGES)}")
        overrides.setdefault(f"{stage}.endpoints", []).append(url)
    return overrides


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from(args)
    config = load_config(args.config, overrides)
    if config.stages[0] == "curate" and not args.config:
        config = scoring_rule_of_the_pool(config, overrides)
    for stage in config.stages:  # a price that cannot be is named now, before any server or request
        stage_price(stage, config.stage(stage))
    note_routes(config)
    served = served_stages(config)  # (refused here, before anything is written, when it conflicts)
    use_served_tokenizers(config, log=lambda line: print(line, file=sys.stderr), skip=served)
    if args.dry_run or args.probe is not None:
        return dry_run(config, args)
    out = Path(config.out)
    if set_aside := check_resumable(out, config):
        where, differences = set_aside
        print(
            f"bft generate: {out} held a run with other settings ({'; '.join(differences)}); its files are now in "
            f"{where}. This run starts afresh"
            + (
                ": the request cache answers every request whose inputs did not change"
                if config.cache.mode != "off"
                else " and asks every request again (the request cache is off)"
            ),
            file=sys.stderr,
        )
    out.mkdir(parents=True, exist_ok=True)
    dump_config(config, out / RUN_CONFIG_FILE, redact=redact_url)
    started = time.monotonic()

    progress = not args.no_progress
    summary = finished_run(config)  # a rerun of a finished run: its summary, without a server or a request
    if summary is not None:
        print(f"bft generate: {out} is finished: every record has its outcome; nothing to send", file=sys.stderr)
    else:
        in_turn = bool(served) and config.serve.order == "in_turn"  # each turn's servers: `generate_in_turn`
        with contextlib.ExitStack() as running:
            servers = None
            if served and not in_turn:  # on this machine, or each replica in a Ray actor
                serving = RayServers if config.executor == "ray" else RunServers
                servers = running.enter_context(serving(config, out, log=say))
            if not (config.endpoints or all(live_elsewhere(config, s, served) for s in config.stages)):
                say("bft generate: no --endpoint given: starting the embedded SmolLM2-135M-Instruct server")
                log = out / ".bft" / "embedded-server.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                use_embedded(config, running.enter_context(EmbeddedServer(converted_checkpoint(), log_path=log)))
            if in_turn:
                summary, facts = generate_in_turn(config, progress, log=say)
            else:
                summary = execute(config, progress)
        if servers is not None:
            facts = servers.facts()
        if served:  # (stats.json is written by then: the servers' facts added to it)
            summary.stats.servers = facts
            summary.stats.write(out)
    print_summary(out, summary, time.monotonic() - started)
    problem = all_rejected_for_one_reason(config, summary)
    if problem:
        print(f"bft generate: error: {problem}", file=sys.stderr)
        return 1
    return 0


def live_elsewhere(config: GenerateConfig, stage: str, served) -> bool:
    """Whether a stage needs no embedded server: it has endpoints, servers bft starts, or sends by batch."""
    stage_config = config.stage(stage)
    return bool(stage_config.endpoints) or stage in served or stage_config.send == "batch"


def say(line: str) -> None:
    print(line, file=sys.stderr)


def note_routes(config: GenerateConfig) -> None:
    """Say once for each endpoint URL given with a route (`.../v1/chat/completions`) that its server's base URL
    is used: bft adds the routes itself (`endpoints/transport.base_url`)."""
    urls = [*config.endpoints, *(url for name in ALL_STAGES for url in config.stage(name).endpoints)]
    for url in dict.fromkeys(urls):
        root = base_url(url)
        if url.rstrip("/") not in (root, root + "/v1"):
            print(
                f"bft generate: endpoint {redact_url(url)} names a route; using its server's base URL "
                f"{redact_url(root)} (bft adds the routes itself)",
                file=sys.stderr,
            )


def dry_run(config: GenerateConfig, args: argparse.Namespace) -> int:
    """`--dry-run` (`run/dry_run.py`): the plan printed; with `--probe N`, measured on N documents."""
    if not args.dry_run:
        raise ConfigError("--probe measures the server for a dry run: add --dry-run")
    if config.stages[0] != "backtranslate":
        raise ConfigError(
            f"--dry-run reads a corpus; a run that starts with {config.stages[0]} reads an earlier output"
        )
    plan = plan_run(config, args.throughput)
    if plan.entering and (shares := cached_shares(config)) is not None:
        plan.cached, plan.cache_path = shares, str(cache_folder(config))
    if args.probe:
        batched = [stage for stage in config.stages if config.stage(stage).send == "batch"]
        if batched:  # a probe would submit real, paid batches and wait on them for up to a day
            raise ConfigError(
                f"--probe sends real requests, and {', '.join(batched)} send by batch (send: batch): a probe "
                "would submit paid batches and wait hours for them. Drop --probe (the plan needs no probe), or "
                "probe with those stages on send: live"
            )
        if not (config.endpoints or all(config.stage(s).endpoints for s in config.stages)):
            raise ConfigError("--probe sends real requests: give --endpoint (or the stages' endpoints)")
        add_probe(plan, config, args.probe, lambda probe: execute(probe, progress=False))  # (cache off: measured)
    print(format_plan(plan))
    if plan.nothing_enters:  # as a run that admits nothing: an error naming the reasons (`all_rejected...`)
        print(f"bft generate: error: {plan.nothing_enters}", file=sys.stderr)
        return 1
    return 0


def all_rejected_for_one_reason(config: GenerateConfig, summary: RunSummary) -> str | None:
    """The likely cause when no document entered the first stage, or a later stage rejected every document
    for one reason that points at the input or a setting (`corpus/diagnosis.py`): the run says so and
    exits non-zero instead of "succeeding" with nothing."""
    prepare = summary.stats.stages.get(PREPARE)
    if prepare is not None and not prepare.kept:
        return nothing_enters(config, prepare.entered, prepare.rejected_by_reason)
    for name, stage in summary.stats.stages.items():
        reasons = {reason for reason, count in stage.rejected_by_reason.items() if count}
        if stage.entered and not stage.kept and len(reasons) == 1:
            reason = reasons.pop()
            if cause := likely_cause(reason, config):
                return f"{name}: all {stage.entered} documents rejected as {reason}: {cause}"
    return None


def execute(config: GenerateConfig, progress: bool) -> RunSummary:
    """Run the stages with the configured executor."""
    if config.executor == "ray":
        return generate_on_ray(config, progress)
    return generate_locally(config, progress)


def print_summary(out: Path, summary: RunSummary, seconds: float) -> None:
    stats = summary.stats
    print(f"\nbft generate: {stats.documents_in} documents in, output in {out.resolve()} ({seconds:.0f} s)")
    for name, s in stats.stages.items():
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(s.rejected_by_reason.items()))
        print(
            f"  {name:<14} entered {s.entered:>6}  kept {s.kept:>6}  rejected {s.rejected:>6}"
            + (f"  ({reasons})" if reasons else "")
        )
    print("  rows per config: " + yaml.safe_dump(summary.counts, default_flow_style=True).strip())
    for name, why in summary.empty.items():
        print(f"  {name}: empty, not written ({why})")
    if summary.main_config:
        print(
            "Load it with:\n  from datasets import load_dataset; "
            f'ds = load_dataset("{out.resolve()}", "{summary.main_config}", split="train")'
        )
