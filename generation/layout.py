"""The output folder's layout: where each thing a run writes lives, and which config to show first.

Ground floor: every floor reads an output folder through these names, so the layout is written down
once. A `bft generate` output folder OUT:

    backtranslated/data-HASH.parquet   kept records of each stage (one config per stage run)
    curated/data-HASH.parquet
    rewritten/data-HASH.parquet        the method's dataset: instruction + rewritten response
    distilled/data-HASH.parquet        BAFT's distilling baseline, when run
    rejected/data-HASH.parquet         every rejected record of every stage, with `stage` and `reason`
    stats.json                         counts per stage (`run/stats.py`, `RunStats`)
    run_config.yaml                    the resolved run configuration
    README.md                          dataset card with YAML `configs:`
    .bft/journal/STAGE.jsonl           the resumable journals the parquet files are made from
    .bft/blocks/KEY/journal/           the same per block, for `--executor ray`
    .bft/earlier/TIME/                 an earlier run's files, set aside when the folder got a changed config
    .bft/servers/NAME-N.log            the log of each server replica bft started for the run (`serve:`)
    .bft/batches/STAGE.jsonl           the ledger of a `send: batch` stage's provider batches (`run/batching.py`)
    .bft/batches/vllm/ID.*             vLLM run_batch jobs' request, output and log files (`batch.api: vllm`)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

PREPARE = "prepare"  # the first journal of every run: records rejected before any request
OUTPUT_CONFIG_NAMES = {  # stage -> the config of its kept records
    "backtranslate": "backtranslated",
    "curate": "curated",
    "rewrite": "rewritten",
    "distill": "distilled",
}
REJECTED_CONFIG = "rejected"
STATS_FILE = "stats.json"
RUN_CONFIG_FILE = "run_config.yaml"
# The config `load_dataset` lines and cards point at first: the most finished data there is.
MAIN_CONFIG_ORDER = ("rewritten", "curated", "sft", "backtranslated")


def journal_dir(out: Path) -> Path:
    return out / ".bft" / "journal"


def blocks_dir(out: Path) -> Path:
    return out / ".bft" / "blocks"


def earlier_runs_dir(out: Path) -> Path:
    return out / ".bft" / "earlier"


def servers_dir(out: Path) -> Path:
    return out / ".bft" / "servers"


def batch_ledger(out: Path, stage: str) -> Path:
    """The ledger of `stage`'s provider batches: one line per batch submitted, one when its results were taken."""
    return out / ".bft" / "batches" / f"{stage}.jsonl"


def batch_jobs_dir(out: Path) -> Path:
    """Where the batch jobs bft runs itself (vLLM's run_batch) keep their files."""
    return out / ".bft" / "batches" / "vllm"


def config_file(out: Path, config: str) -> Path | None:
    """The parquet file of `config` in an output folder, or None when the folder has none."""
    files = sorted((out / config).glob("*.parquet"))
    return files[0] if files else None


def read_rows(path: Path | None) -> Iterator[dict]:
    """The rows of a parquet file, a batch at a time (nothing when `path` is None)."""
    if path is None:
        return
    for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
        yield from batch.to_pylist()


def main_config(rows: dict[str, int]) -> str:
    """The config to show first among `rows` (config -> row count, in the order written): the most
    finished one that has rows, else the first one written."""
    return next((name for name in MAIN_CONFIG_ORDER if rows.get(name)), next(iter(rows), REJECTED_CONFIG))


def dataset_configs(written: dict[str, tuple[int, str]]) -> list[dict]:
    """The README `configs:` entries that make `load_dataset(OUT, name)` work; `written` maps
    config -> (rows, file under OUT)."""
    return [
        {"config_name": name, "data_files": [{"split": "train", "path": path}]} for name, (_, path) in written.items()
    ]
