"""Assembling a dataset folder from a `bft generate` output: the library behind `bft build`.

Each config is built by the `datasets` builder in `builders/bft_dataset.py` and written as
`DATASETDIR/CONFIG/SPLIT-HASH.parquet` (named by content); `DATASETDIR/README.md` is the dataset card,
whose YAML `configs:` make `load_dataset(DATASETDIR, CONFIG)` work without bft installed. The build
also runs the pre-release checks (`builders/checks.py`) and records the facts the card was made from
(`builders/facts.py`), so that `bft release` can add its changelog entry.

`build` reads top to bottom: check the inputs, build every config, gather the facts (stages, rejects,
parse rates, scores, lengths, plots, the data report), write the card.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
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
from bft.builders.public import public_row, public_url, public_value
from bft.builders.report import PAIR_CONFIGS, data_report, length_counter
from bft.cards.common import model_terms
from bft.cards.dataset_card import ABOUT, example_json
from bft.cards.plots import bar_chart, histogram, score_counts
from bft.generation.errors import ConfigError
from bft.generation.layout import RUN_CONFIG_FILE, STATS_FILE, config_file, main_config
from bft.generation.method.tags import SEED_TAG, WEB_TAG
from bft.generation.run.stats import ENDPOINTS_KEY, RunStats
from bft.generation.text import file_sha256

REPORT_FILE = "report.json"  # the data report (builders/report.py), also shown on the card
DOLMA_SOURCES = {"common-crawl", "c4", "reddit", "pes2o", "stack", "gutenberg", "wikipedia", "wikibooks", "cc_en_head"}
PARSE_FAILURES = {
    "curate": ("score_missing", "score_unparseable", "score_out_of_range"),
    "rewrite": (
        "rewrite_missing_tags",
        "rewrite_unclosed",
        "rewrite_nested_tags",
        "rewrite_empty",
        "rewrite_truncated",
    ),
    "backtranslate": ("instruction_empty", "instruction_truncated", "instruction_too_long"),
}


@dataclass
class BuiltConfigs:
    """What building the configs gave: the README entries, rows per split, examples and train rows, and
    the splits left empty (not written: `load_dataset` cannot load them), each with why."""

    configs: list[dict] = field(default_factory=list)
    config_rows: list[dict] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    train: dict[str, datasets.Dataset] = field(default_factory=dict)
    empty: dict[str, str] = field(default_factory=dict)  # "CONFIG/SPLIT" -> why


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
    names = configs_to_build(output, seed_file, sft_source)
    fresh_folder(folder)
    findings = Findings(redacted=redact, license=license or guess_license(output) or "unknown")
    built = build_configs(output, folder, names, findings, seed_file, sft_source, test_fraction, tag_placement)
    stats_json = json.loads((output / STATS_FILE).read_text(encoding="utf-8"))
    if ENDPOINTS_KEY in stats_json:  # keyed by endpoint URL: private hosts masked, as everywhere
        stats_json[ENDPOINTS_KEY] = {public_url(url): limit for url, limit in stats_json[ENDPOINTS_KEY].items()}
    (folder / STATS_FILE).write_text(json.dumps(stats_json, indent=2) + "\n", encoding="utf-8")
    settings = public_value(yaml.safe_load((output / RUN_CONFIG_FILE).read_text(encoding="utf-8")) or {})
    run_config = yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)
    (folder / RUN_CONFIG_FILE).write_text(run_config, encoding="utf-8")  # local paths and private hosts masked
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
        plots=plots(folder, stats, train, scores, count, unit),
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
    )
    facts.model_terms = model_terms([stage["model"] for stage in facts.stages])
    facts.report = report(train, count, unit, eval_set, analyses)
    (folder / REPORT_FILE).write_text(json.dumps(facts.report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    facts.write(folder, findings)
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
    names = [n for n in available_configs(output, seed_file) if n != "sft" or config_file(output, sft_source)]
    if not names:
        raise ConfigError(f"{output} holds no kept records to build from")
    return names


def fresh_folder(folder: Path) -> None:
    """An empty `folder`: a new one, or an earlier build's emptied (nothing else is ever deleted)."""
    if folder.exists():
        if not (folder / FACTS_FILE).is_file() and any(folder.iterdir()):
            raise ConfigError(f"--out {folder} exists and is not a bft dataset folder; choose a new folder")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


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
            for split, info in builder.info.splits.items():
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
                built.config_rows.append({"name": name, "split": split, "rows": len(dataset), "about": ABOUT[name]})
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
