"""`bft build`: package a `bft generate` output as a dataset folder with a full dataset card.

    bft build OUTDIR --out DATASETDIR [--seed seed.jsonl] [--sft-from rewritten] [--test-fraction 0.05]
        [--license odc-by] [--source-dataset allenai/dolma] [--redact-pii] [--name "My data"] [--tokenizer ID]

Each config is built by the `datasets` builder in `builders/bft_dataset.py` and written as
`DATASETDIR/CONFIG/SPLIT-HASH.parquet` (named by content); `DATASETDIR/README.md` is the dataset card, whose
YAML `configs:` make `load_dataset(DATASETDIR, CONFIG)` work without bft installed. The build also
runs the pre-release checks (`builders/checks.py`) and records the facts the card was made from in
`DATASETDIR/bft_build.json`, so that `bft release` can add its changelog entry.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import datasets
import yaml

from bft.builders.bft_dataset import BftDataset, available_configs, read_seed
from bft.builders.checks import PII_FIELDS, Findings, count_pii, redact_text, scan_secrets
from bft.builders.report import PAIR_CONFIGS
from bft.cards.dataset_card import ABOUT, check_card, example_json, render_dataset_card
from bft.cards.plots import bar_chart, histogram, score_counts
from bft.generation.errors import BftError, ConfigError
from bft.generation.layout import OUTPUT_CONFIG_NAMES, config_file
from bft.generation.method.tags import SEED_TAG, TAG_PLACEMENTS, WEB_TAG
from bft.generation.text import file_sha256

FACTS_FILE = "bft_build.json"
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="A `bft generate` output folder")
    parser.add_argument("--out", required=True, help="The dataset folder to write (replaced if it exists)")
    parser.add_argument(
        "--seed", help="Seed pairs (JSON lines with instruction, response) for the seed and sft configs"
    )
    parser.add_argument(
        "--sft-from",
        default="rewritten",
        choices=("rewritten", "curated", "distilled"),
        help="Web config tagged S_w in sft",
    )
    parser.add_argument(
        "--tag-placement",
        default="user_end",
        choices=TAG_PLACEMENTS,
        help="Where sft rows carry the S_a/S_w tag: end of the user turn (default) or a system message",
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.0, help="Share of documents in a test split (default: none)"
    )
    parser.add_argument(
        "--license", help="License id of the data (default: odc-by for Dolma documents, else required at release)"
    )
    parser.add_argument(
        "--source-dataset", action="append", default=None, help="Hub id of the source corpus (repeatable)"
    )
    parser.add_argument(
        "--redact-pii", action="store_true", help="Replace e-mail addresses, phone numbers and IPs in the text"
    )
    parser.add_argument("--name", help="Pretty name shown on the card")
    parser.add_argument("--tokenizer", help="Tokenizer (Hub id or folder) to report lengths in tokens (default: words)")
    parser.add_argument(
        "--eval-set",
        default="bft",
        help="Instructions the data report checks for contamination: bft (shipped), a file, a Hub id, or none",
    )


def run(args: argparse.Namespace) -> int:
    facts = build(
        Path(args.output),
        Path(args.out),
        seed_file=args.seed,
        sft_source=args.sft_from,
        test_fraction=args.test_fraction,
        license=args.license,
        source_datasets=args.source_dataset or [],
        redact=args.redact_pii,
        pretty_name=args.name,
        tokenizer=args.tokenizer,
        tag_placement=args.tag_placement,
        eval_set=args.eval_set,
    )
    print(f"bft build: wrote {Path(args.out).resolve()}")
    for row in facts["config_rows"]:
        print(f"  {row['name']:<15} {row['split']:<6} {row['rows']:>7} rows")
    for problem in Findings.from_dict(facts["findings"]).blocking:
        print(f"  release blocker: {problem}")
    print(
        f'Load it with:\n  from datasets import load_dataset; ds = load_dataset("{Path(args.out).resolve()}", "{facts["main_config"]}")'
    )
    return 0


def check_output(output: Path) -> dict:
    """The generate output's stats; a clear error when `output` is not one."""
    if not output.is_dir():
        raise ConfigError(f"{output}: no such folder (expected a `bft generate` output)")
    stats = output / "stats.json"
    if not stats.is_file() or not (output / "run_config.yaml").is_file():
        raise ConfigError(
            f"{output} is not a `bft generate` output (no stats.json / run_config.yaml); run bft generate first"
        )
    return json.loads(stats.read_text(encoding="utf-8"))


def guess_license(output: Path) -> str | None:
    """ODC-BY when the documents come from Dolma (by their `source`), else unknown."""
    first = config_file(output, "backtranslated") or config_file(output, "rejected")
    if first is None:
        return None
    import pyarrow.parquet as pq

    sources = set(pq.read_table(first, columns=["source"]).column("source").to_pylist())
    return "odc-by" if sources and sources <= DOLMA_SOURCES else None


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
) -> dict:
    """Build every available config of `output` into `folder`; return the facts the card shows."""
    stats = check_output(output)
    unit, count = length_counter(tokenizer)
    if not 0 <= test_fraction < 1:
        raise ConfigError("--test-fraction must be in [0, 1)")
    if seed_file and not Path(seed_file).is_file():
        raise ConfigError(f"--seed {seed_file}: no such file")
    if seed_file:
        try:
            read_seed(Path(seed_file))
        except (ValueError, json.JSONDecodeError) as error:
            raise ConfigError(f"--seed: {error}") from None
    names = [n for n in available_configs(output, seed_file) if n != "sft" or config_file(output, sft_source)]
    if not names:
        raise ConfigError(f"{output} holds no kept records to build from")
    if folder.exists():
        if not (folder / FACTS_FILE).is_file() and any(folder.iterdir()):
            raise ConfigError(f"--out {folder} exists and is not a bft dataset folder; choose a new folder")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    findings = Findings(redacted=redact, license=license or guess_license(output) or "unknown")
    config_rows, configs, examples, rows_by_config = [], [], [], {}
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
                if info.num_examples:
                    dataset = builder.as_dataset(split=split)
                else:  # `datasets` cannot read back an empty split; write an empty file with the features
                    features = builder.info.features
                    dataset = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
                if redact:
                    dataset = dataset.map(_redacted, desc=None)
                path = write_parquet(dataset, folder / name, split)
                files.append({"split": split, "path": path})
                config_rows.append({"name": name, "split": split, "rows": len(dataset), "about": ABOUT[name]})
                if split == "train":
                    rows_by_config[name] = dataset
                    if len(dataset):
                        examples.append({"name": name, "json": example_json(dataset[0])})
                    findings.pii[name] = _pii(dataset)
            configs.append({"config_name": name, "data_files": files})
    empty = [r["name"] for r in config_rows if r["split"] == "train" and r["rows"] == 0]
    for name in ("run_config.yaml", "stats.json"):
        shutil.copy(output / name, folder / name)

    run_config = (output / "run_config.yaml").read_text(encoding="utf-8")
    settings = yaml.safe_load(run_config) or {}
    scores = score_counts(list(rows_by_config["backtranslated"]["score"])) if "backtranslated" in rows_by_config else {}
    main = next(
        (n for n in ("rewritten", "curated", "sft", "backtranslated") if n in names and n not in empty), names[0]
    )
    facts = {
        "pretty_name": pretty_name or f"bft data: {output.resolve().name}",
        "license": findings.license,
        "source_datasets": list(source_datasets or []),
        "corpus": str(settings.get("corpus", {}).get("path", "unknown")),
        "configs": configs,
        "config_rows": config_rows,
        "main_config": main,
        "load_path": str(folder.resolve()),
        "revision": None,
        "stages": _stages(stats, rows_by_config),
        "stages_with_rejects": [
            {"name": n, "reasons": s["rejected_by_reason"]}
            for n, s in stats.items()
            if isinstance(s, dict) and s.get("rejected_by_reason")
        ],
        "parse_rates": _parse_rates(stats),
        "scores": scores,
        "lengths": _lengths(rows_by_config, count),
        "length_unit": unit,
        "plots": _plots(folder, stats, rows_by_config, scores, count, unit),
        "examples": examples,
        "note": str(settings.get("note") or ""),
        "run_config": run_config.strip(),
        "tag_placement": "a system message" if tag_placement == "system" else "the end of the user turn",
        "seed_tag": SEED_TAG,
        "web_tag": WEB_TAG,
        "pii": {k: dict(v) for k, v in findings.pii.items()},
        "pii_redacted": redact,
        "changelog": ["unreleased: built by `bft build`"],
        "empty_configs": empty,
    }
    facts["report"] = _report(rows_by_config, count, unit, eval_set)
    (folder / REPORT_FILE).write_text(
        json.dumps(facts["report"], indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_card(folder, facts, findings)
    return facts


def _report(rows_by_config: dict, count, unit: str, eval_set: str) -> dict:
    """The data report (builders/report.py) of the built configs, for the card and `report.json`."""
    from bft.builders.report import data_report
    from bft.training.evaluate import load_instructions

    items, name = load_instructions(eval_set) if eval_set != "none" else ([], "")
    rows = {n: d.to_list() for n, d in rows_by_config.items() if n in ("backtranslated", *PAIR_CONFIGS)}
    return data_report(rows, count, unit, items, name)


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


def write_card(folder: Path, facts: dict, findings: Findings | None = None) -> None:
    """Render README.md from `facts`, rescan for secrets, check the card, and save the facts."""
    if findings is None:
        findings = Findings.from_dict(facts["findings"])
    facts["findings"] = findings.as_dict()
    render_dataset_card(folder, facts)
    findings.secrets = scan_secrets(folder)
    if findings.secrets:  # the card says so
        facts["findings"] = findings.as_dict()
        render_dataset_card(folder, facts)
    (folder / FACTS_FILE).write_text(json.dumps(facts, indent=2, default=str) + "\n", encoding="utf-8")
    problems = check_card(folder)
    if problems:
        raise BftError(f"the dataset card of {folder} fails its checks: {'; '.join(problems)}")


def _redacted(row: dict) -> dict:
    changed = {f: redact_text(row[f]) for f in PII_FIELDS if f in row}
    for key in ("prompt", "completion"):
        if key in row:
            changed[key] = [{**m, "content": redact_text(m["content"])} for m in row[key]]
    return changed


def _pii(dataset) -> Counter:
    counts: Counter = Counter()
    for field in PII_FIELDS:
        if field in dataset.column_names:
            for text in dataset[field]:
                counts.update(count_pii(text))
    if "completion" in dataset.column_names:
        for messages in dataset["completion"]:
            for message in messages:
                counts.update(count_pii(message["content"]))
    return counts


def _stages(stats: dict, rows_by_config: dict) -> list[dict]:
    """Per stage: counts from stats.json, and model/prompt/sampling from a kept row's provenance."""
    provenance = {}
    for name in ("rewritten", "curated", "backtranslated"):
        dataset = rows_by_config.get(name)
        if dataset is not None and len(dataset):
            for entry in dataset[0]["provenance"]:
                provenance.setdefault(entry["stage"], entry)
    stages = []
    for stage in OUTPUT_CONFIG_NAMES:
        if stage not in stats:
            continue
        entry = provenance.get(stage, {})
        sampling = json.loads(entry["sampling"]) if entry.get("sampling") else {}
        stages.append(
            {
                "name": stage,
                "template": entry.get("template") or "-",
                "sha": entry.get("template_sha256") or "",
                "model": entry.get("model_id") or "unknown",
                "revision": entry.get("model_revision"),
                "mode": entry.get("mode") or "-",
                "prefill": entry.get("prefill"),
                "sampling": f"T={sampling['temperature']}, p={sampling['top_p']}, max {sampling['max_tokens']}"
                if sampling
                else "-",
                "entered": stats[stage]["entered"],
                "kept": stats[stage]["kept"],
                "rejected": stats[stage]["rejected"],
            }
        )
    return stages


def _parse_rates(stats: dict) -> dict[str, float]:
    rates = {}
    for stage, reasons in PARSE_FAILURES.items():
        counters = stats.get(stage)
        if counters and counters["entered"]:
            failed = sum(counters["rejected_by_reason"].get(r, 0) for r in reasons)
            rates[stage] = 1 - failed / counters["entered"]
    return rates


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def length_counter(tokenizer: str | None):
    """(unit, function counting a text's length): tokens of `tokenizer` when given, else words."""
    if not tokenizer:
        return "words", _words
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--tokenizer {tokenizer}: cannot be loaded ({str(error).splitlines()[0]})") from None
    return "tokens", lambda text: len(loaded(text, add_special_tokens=False)["input_ids"]) if text else 0


def _lengths(rows_by_config: dict, count) -> list[dict]:
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


def _plots(folder: Path, stats: dict, rows_by_config: dict, scores: dict, count, unit: str) -> list[dict]:
    plots = []
    if scores:
        bar_chart(folder / "plots" / "scores.png", scores, "Curation scores of the candidates", "score")
        plots.append({"title": "Curation scores of the candidates", "path": "plots/scores.png"})
    reasons = Counter()
    for name, counters in stats.items():
        if isinstance(counters, dict):
            reasons.update({f"{name}: {r}": n for r, n in counters.get("rejected_by_reason", {}).items()})
    if reasons:
        bar_chart(
            folder / "plots" / "rejects.png",
            dict(reasons.most_common(12)),
            "Rejected records by reason",
            "stage: reason",
        )
        plots.append({"title": "Rejected records by reason", "path": "plots/rejects.png"})
    series = {}
    for name in ("rewritten", "curated"):
        dataset = rows_by_config.get(name)
        if dataset is not None and len(dataset):
            series[f"{name} response"] = [count(t) for t in dataset["response"]]
    if series:
        histogram(folder / "plots" / "lengths.png", series, "Response lengths", unit)
        plots.append({"title": "Response lengths", "path": "plots/lengths.png"})
    return plots
