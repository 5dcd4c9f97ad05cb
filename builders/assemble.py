"""Assembling a dataset folder from a `bft generate` output: the library behind `bft build`.

Each config is built by the `datasets` builder in `builders/bft_dataset.py` and written as
`DATASETDIR/CONFIG/SPLIT-HASH.parquet` (named by content); `DATASETDIR/README.md` is the dataset card,
whose YAML `configs:` make `load_dataset(DATASETDIR, CONFIG)` work without bft installed. The build
also runs the pre-release checks (`builders/checks.py`) and records the facts the card was made from
(`builders/facts.py`), so that `bft release` can add its changelog entry.

`build` reads top to bottom: check the inputs, build every config, gather the facts (stages, rejects,
parse rates, scores, lengths, plots, the data report), write the card. It writes into a new folder beside
DATASETDIR and moves it into place only when everything is written (`staged`): a build that fails leaves
no half-written folder, and an earlier build at DATASETDIR stays as it was.

Every config the run's stages make is either written or named as empty with why (`curated: curate kept
none of 26 (score_below_threshold: 26)`), on the card, in `bft_build.json` and in what `bft build` prints.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import yaml

from bft.builders.analyses import Analyses, add_analyses
from bft.builders.bft_dataset import BftDataset, available_configs, read_seed
from bft.builders.checks import PII_FIELDS, Findings, count_pii, redact_text
from bft.builders.facts import FACTS_FILE, BuildFacts
from bft.builders.instructions import load_instructions
from bft.builders.public_form import public_row, public_url, public_value
from bft.builders.report import PAIR_CONFIGS, data_report, length_counter
from bft.cards.common import BUILT_CONFIGS_ABOUT, model_terms
from bft.cards.dataset_card import example_json
from bft.cards.plots import bar_chart, histogram, score_counts
from bft.generation.errors import BftError, ConfigError
from bft.generation.layout import OUTPUT_CONFIG_NAMES, RUN_CONFIG_FILE, STATS_FILE, config_file, main_config
from bft.generation.method.tags import SEED_TAG, WEB_TAG
from bft.generation.reasons import PARSE, REQUEST_STAGES, reasons_of_kind
from bft.generation.run.finishing import why_empty
from bft.generation.run.money import cost_line
from bft.generation.run.stats import ENDPOINTS_KEY, SERVERS_KEY, RunStats
from bft.generation.text import file_sha256

REPORT_FILE = "report.json"  # the data report (builders/report.py), also shown on the card
DOLMA_SOURCES = {"common-crawl", "c4", "reddit", "pes2o", "stack", "gutenberg", "wikipedia", "wikibooks", "cc_en_head"}
# Per stage that sends requests, the reasons that mean its reply could not be read (`generation/reasons.py`).
PARSE_FAILURES = {stage: reasons_of_kind(PARSE, stage) for stage in REQUEST_STAGES}


@dataclass
class BuiltConfigs:
    """What building the configs gave: the README entries, rows per split, examples and train rows, and
    the splits left empty (not written: `load_dataset` cannot load them), each with why."""

    configs: list[dict] = field(default_factory=list)
    config_rows: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    train: dict[str, datasets.Dataset] = field(default_factory=dict)
    empty: dict[str, str] = field(default_factory=dict)  # "CONFIG" or "CONFIG/SPLIT" -> why


def build(
    output: Path,
    folder: Path,
    seed_file: str | None = None,
    sft_source: str = "rewritten",
    test_fraction: float = 0.0,
    license: str | None = None,
    source_datasets: list[str] | None = None,
    redact: bool = False,
    pretty_name: str | None = None,
    tokenizer: str | None = None,
    tag_placement: str = "user_end",
    eval_set: str = "bft",
    analyses: Analyses | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
) -> BuildFacts:
    """Build every available config of `output` into `folder`; return the facts the card shows."""
    stats = check_output(output)
    unit, count = length_counter(tokenizer)
    check_options(test_fraction, seed_file)
    importlib.import_module("matplotlib")  # the card's plots (the `build` extra): stop here, before any work
    names = configs_to_build(output, seed_file, sft_source)
    check_out_folder(folder)
    with staged(folder) as stage:  # written beside `folder`, moved into its place when complete
        findings = Findings(redacted=redact, license=license or guess_license(output) or "unknown")
        built = build_configs(output, stage, names, findings, seed_file, sft_source, test_fraction, tag_placement)
        built.empty = {**unmade_configs(output, stats, seed_file, sft_source), **built.empty}
        stats_json = json.loads((output / STATS_FILE).read_text(encoding="utf-8"))
        if ENDPOINTS_KEY in stats_json:  # keyed by endpoint URL: private hosts masked, as everywhere
            stats_json[ENDPOINTS_KEY] = {public_url(url): limit for url, limit in stats_json[ENDPOINTS_KEY].items()}
        if SERVERS_KEY in stats_json:  # the servers bft started: their model folders, Python and logs too
            stats_json[SERVERS_KEY] = public_value(stats_json[SERVERS_KEY])
        (stage / STATS_FILE).write_text(json.dumps(stats_json, indent=2) + "\n", encoding="utf-8")
        settings = public_value(yaml.safe_load((output / RUN_CONFIG_FILE).read_text(encoding="utf-8")) or {})
        run_config = yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)
        (stage / RUN_CONFIG_FILE).write_text(run_config, encoding="utf-8")  # local paths and private hosts masked
        train = built.train
        scores = score_counts(list(train["backtranslated"]["score"])) if "backtranslated" in train else {}
        facts = BuildFacts(
            pretty_name=pretty_name or f"bft data: {output.resolve().name}",
            license=findings.license,
            source_datasets=list(source_datasets or []),
            corpus=str(settings.get("corpus", {}).get("path", "unknown")),  # public form (public_value above)
            configs=built.configs,
            config_rows=built.config_rows,
            main_config=main_config({c["config_name"]: 1 for c in built.configs}),
            load_path=folder.name,  # a release writes the Hub repo here; no local path in a released file
            revision=None,
            stages=stats.stage_table(kept_provenance(train)),
            stages_with_rejects=stats.rejects(),
            parse_rates=parse_rates(stats),
            scores=scores,
            lengths=mean_lengths(train, count),
            length_unit=unit,
            plots=plots(stage, stats, train, scores, count, unit),
            examples=built.examples,
            note=str(settings.get("note") or ""),
            run_config=run_config.strip(),
            tag_placement="a system message" if tag_placement == "system" else "the end of the user turn",
            seed_tag=SEED_TAG,
            web_tag=WEB_TAG,
            pii={k: dict(v) for k, v in findings.pii.items()},
            pii_redacted=redact,
            changelog=["unreleased: built by `bft build`"],
            empty_configs=[f"{where}: {why}" for where, why in built.empty.items()],
            license_name=license_name or "",
            license_link=license_link or "",
            cost=cost_line(stats.costs()),  # from stats.json's `cost` entries: what the run paid for its tokens
            servers=server_lines(stats_json.get(SERVERS_KEY) or {}),  # (their public form, as written above)
        )
        facts.model_terms = model_terms([entry["model"] for entry in facts.stages])
        facts.report = report(train, count, unit, eval_set, analyses)
        (stage / REPORT_FILE).write_text(
            json.dumps(facts.report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        facts.write(stage, findings)
    return facts


# -- inputs -----------------------------------------------------------------------------------------


def check_output(output: Path) -> RunStats:
    """The generate output's stats; a clear error when `output` is not one."""
    if not output.is_dir():
        raise ConfigError(f"{output}: no such folder (expected a `bft generate` output)")
    if not (output / STATS_FILE).is_file() or not (output / RUN_CONFIG_FILE).is_file():
        raise ConfigError(
            f"{output} is not a `bft generate` output (no stats.json / run_config.yaml); run bft generate first"
        )
    return RunStats.read(output)


def check_options(test_fraction: float, seed_file: str | None) -> None:
    if not 0 <= test_fraction < 1:
        raise ConfigError("--test-fraction must be in [0, 1)")
    if seed_file and not Path(seed_file).is_file():
        raise ConfigError(f"--seed {seed_file}: no such file")
    if seed_file:
        try:
            read_seed(Path(seed_file))
        except (ValueError, json.JSONDecodeError) as error:
            raise ConfigError(f"--seed: {error}") from None


def configs_to_build(output: Path, seed_file: str | None, sft_source: str) -> list[str]:
    """The configs with input: the output's, the seed, and `sft` when the seed or `sft_source` has rows."""
    names = [
        n for n in available_configs(output, seed_file) if n != "sft" or seed_file or config_file(output, sft_source)
    ]
    if not names:
        raise ConfigError(f"{output} holds no kept records to build from")
    return names


def unmade_configs(output: Path, stats: RunStats, seed_file: str | None, sft_source: str) -> dict[str, str]:
    """The configs of the run's stages that the output has no rows of, each with why (from the stage's counts),
    and `sft`'s web rows when `sft_source` is one of them: `sft` then holds the seed alone (or nothing)."""
    empty = {
        name: why_empty(name, stats)
        for stage, name in OUTPUT_CONFIG_NAMES.items()
        if stage in stats.stages and config_file(output, name) is None
    }
    if config_file(output, sft_source) is None:
        stage = next(s for s, name in OUTPUT_CONFIG_NAMES.items() if name == sft_source)
        why = empty.get(sft_source, f"the run had no {stage} stage")
        what = "S_w rows of sft" if seed_file else "sft"
        empty[what] = f"--sft-from {sft_source} has no rows ({why}){'' if seed_file else ' and no --seed was given'}"
    return empty


def check_out_folder(folder: Path) -> None:
    """`folder` may be new or an earlier build (which a build replaces); anything else there is never touched."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} is a file; choose a new folder")
    if folder.is_dir() and not (folder / FACTS_FILE).is_file() and any(folder.iterdir()):
        raise ConfigError(f"--out {folder} exists and is not a bft dataset folder; choose a new folder")


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A new folder beside `folder` to build in, put in `folder`'s place once the build is written, removed if
    it fails: a failed build leaves no half-written folder (which `bft view` and `load_dataset` would refuse),
    and an earlier build at `folder` stays whole until the new one is complete."""
    folder = Path(os.path.abspath(folder))  # `.` and `..` have a name
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = folder.with_name(f".{folder.name}.building-{uuid.uuid4().hex[:8]}")
    stage.mkdir()
    try:
        yield stage
    except BftError as error:  # its message names the folder the user asked for, not the one removed now
        shutil.rmtree(stage, ignore_errors=True)
        error.args = tuple(a.replace(str(stage), str(folder)) if isinstance(a, str) else a for a in error.args)
        raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if folder.exists():
        earlier = stage.with_name(f"{stage.name}.replaced")
        os.replace(folder, earlier)
        os.replace(stage, folder)
        shutil.rmtree(earlier)
    else:
        os.replace(stage, folder)


def guess_license(output: Path) -> str | None:
    """ODC-BY when the documents come from Dolma (by their `source`), else unknown."""
    first = config_file(output, "backtranslated") or config_file(output, "rejected")
    if first is None:
        return None
    sources = set(pq.read_table(first, columns=["source"]).column("source").to_pylist())
    return "odc-by" if sources and sources <= DOLMA_SOURCES else None


# -- the configs ------------------------------------------------------------------------------------


def build_configs(
    output: Path,
    folder: Path,
    names: list[str],
    findings: Findings,
    seed_file: str | None,
    sft_source: str,
    test_fraction: float,
    tag_placement: str,
) -> BuiltConfigs:
    """Each config through the `datasets` builder, written as parquet; PII counted into `findings`."""
    built = BuiltConfigs()
    with tempfile.TemporaryDirectory(prefix="bft-build-") as cache:
        for name in names:
            builder = BftDataset(
                config_name=name,
                data_dir=str(output),
                cache_dir=cache,
                seed_file=seed_file,
                sft_source=sft_source,
                test_fraction=test_fraction,
                tag_placement=tag_placement,
            )
            builder.download_and_prepare()
            files = []
            splits = builder.info.splits
            if not sum(info.num_examples for info in splits.values()):
                built.empty[name] = "the --seed file holds no pairs" if name == "seed" else "its inputs have no rows"
                continue
            for split, info in splits.items():
                if not info.num_examples:
                    built.empty[f"{name}/{split}"] = (
                        f"no document fell in the {split} split (--test-fraction {test_fraction})"
                        if split == "test"
                        else f"every row of {name} went to the test split"
                    )
                    continue
                dataset = builder.as_dataset(split=split)
                if {"input_location", "provenance", "id"} & set(dataset.column_names):
                    dataset = dataset.map(public_row, desc=None)  # no local path in a released row
                if findings.redacted:
                    dataset = dataset.map(_redacted, desc=None)
                path = write_parquet(dataset, folder / name, split)
                files.append({"split": split, "path": path})
                built.config_rows.append(
                    {"name": name, "split": split, "rows": len(dataset), "about": BUILT_CONFIGS_ABOUT[name]}
                )
                if split == "train":
                    built.train[name] = dataset
                    if len(dataset):
                        built.examples.append({"name": name, "json": example_json(dataset[0])})
                    findings.pii[name] = _pii(dataset)
            if files:
                built.configs.append({"config_name": name, "data_files": files})
    return built


def write_parquet(dataset, config_dir: Path, split: str) -> str:
    """Write `dataset` as CONFIG/SPLIT-HASH.parquet; return its path relative to the dataset folder.

    The name carries a hash of the content: `datasets` caches a local folder by its name and file
    patterns, so a rebuilt folder under the same file names would load the earlier rows from the cache.
    """
    config_dir.mkdir(parents=True, exist_ok=True)
    tmp = config_dir / f"{split}.parquet.tmp"
    dataset.to_parquet(str(tmp))
    final = config_dir / f"{split}-{file_sha256(tmp)[:16]}.parquet"
    tmp.replace(final)
    return f"{config_dir.name}/{final.name}"


def _redacted(row: dict) -> dict:
    changed = {f: redact_text(row[f]) for f in PII_FIELDS if f in row}
    for key in ("prompt", "completion"):
        if key in row:
            changed[key] = [{**m, "content": redact_text(m["content"])} for m in row[key]]
    return changed


def _pii(dataset) -> Counter:
    counts: Counter = Counter()
    for column in PII_FIELDS:
        if column in dataset.column_names:
            for text in dataset[column]:
                counts.update(count_pii(text))
    if "completion" in dataset.column_names:
        for messages in dataset["completion"]:
            for message in messages:
                counts.update(count_pii(message["content"]))
    return counts


# -- the facts --------------------------------------------------------------------------------------


def kept_provenance(train: dict) -> dict[str, dict]:
    """Per stage, the provenance entry of the first kept row of the most finished config."""
    provenance: dict[str, dict] = {}
    for name in ("rewritten", "curated", "backtranslated"):
        dataset = train.get(name)
        if dataset is not None and len(dataset):
            for entry in dataset[0]["provenance"]:
                provenance.setdefault(entry["stage"], entry)
    return provenance


def parse_rates(stats: RunStats) -> dict[str, float]:
    """Per stage, the share of replies that parsed (method.md: report the unparseable rate)."""
    rates = {}
    for stage, reasons in PARSE_FAILURES.items():
        counters = stats.stages.get(stage)
        if counters and counters.entered:
            failed = sum(counters.rejected_by_reason.get(r, 0) for r in reasons)
            rates[stage] = 1 - failed / counters.entered
    return rates


def report(train: dict, count, unit: str, eval_set: str, analyses: Analyses | None = None) -> dict:
    """The data report (builders/report.py) of the built configs, with the analyses asked for (analyses.py),
    for the card and `report.json`."""
    items, name = load_instructions(eval_set) if eval_set != "none" else ([], "")
    rows = {n: d.to_list() for n, d in train.items() if n in ("backtranslated", *PAIR_CONFIGS)}
    return add_analyses(data_report(rows, count, unit, items, name), rows, analyses)


def mean_lengths(rows_by_config: dict, count) -> list[dict]:
    """Mean instruction and response lengths of each pair config."""
    table = []
    for name in ("curated", "rewritten", "distilled", "seed"):
        dataset = rows_by_config.get(name)
        if dataset is not None and len(dataset):
            instructions = [count(t) for t in dataset["instruction"]]
            responses = [count(t) for t in dataset["response"]]
            table.append(
                {
                    "name": name,
                    "rows": len(dataset),
                    "instruction": sum(instructions) / len(dataset),
                    "response": sum(responses) / len(dataset),
                }
            )
    return table


def plots(folder: Path, stats: RunStats, rows_by_config: dict, scores: dict, count, unit: str) -> list[dict]:
    """The card's plots: curation scores, rejects by reason, response lengths."""
    plots = []
    if scores:
        bar_chart(folder / "plots" / "scores.png", scores, "Curation scores of the candidates", "score")
        plots.append({"title": "Curation scores of the candidates", "path": "plots/scores.png"})
    reasons = Counter()
    for name, counters in stats.stages.items():
        reasons.update({f"{name}: {r}": n for r, n in sorted(counters.rejected_by_reason.items())})
    if reasons:
        bar_chart(
            folder / "plots" / "rejects.png",
            dict(reasons.most_common(12)),
            "Rejected records by reason",
            "stage: reason",
        )
        plots.append({"title": "Rejected records by reason", "path": "plots/rejects.png"})
    series = {}
    for name in ("rewritten", "distilled", "curated"):
        dataset = rows_by_config.get(name)
        if dataset is not None and len(dataset):
            series[f"{name} response"] = [count(t) for t in dataset["response"]]
    if series:
        histogram(folder / "plots" / "lengths.png", series, "Response lengths", unit)
        plots.append({"title": "Response lengths", "path": "plots/lengths.png"})
    return plots


def server_lines(servers: dict) -> list[str]:
    """One card line per model server bft started for the run (`stats.json` `servers`): the engine and its
    version, the model and its revision, the served name, the stages, the engine arguments, the replicas,
    their restarts and the GPU hours."""
    lines = []
    for name, server in servers.items():
        replicas = server.get("replicas") or []
        restarts = sum(replica.get("restarts") or 0 for replica in replicas)
        version = f" {server['version']}" if server.get("version") else ""
        revision = f" at revision `{server['revision']}`" if server.get("revision") else ""
        args = " ".join(server.get("args") or []) or "no extra arguments"
        lines.append(
            f"{server.get('engine')}{version} serving `{server.get('model')}`{revision} as `{name}` for "
            f"{', '.join(server.get('stages') or [])}, with `{args}`; {len(replicas)} replica(s), "
            f"{restarts} restart(s), {server.get('gpu_hours') or 0:g} GPU hours"
        )
    return lines
