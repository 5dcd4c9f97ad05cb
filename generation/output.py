"""Turning a run's journals into a folder that `datasets.load_dataset(OUT, CONFIG)` reads.

Layout of OUT:

    backtranslated/data-HASH.parquet   kept records of each stage (one config per stage run)
    curated/data-HASH.parquet
    rewritten/data-HASH.parquet        the method's dataset: instruction + rewritten response
    rejected/data-HASH.parquet         every rejected record of every stage, with `stage` and `reason`
    stats.json                    counts per stage, rejects by reason, requests, retries, tokens
    run_config.yaml               the resolved run configuration
    README.md                     dataset card with YAML `configs:` (written by bft.cards)
    .bft/journal/*.jsonl          the resumable journals the parquet files are made from

Rows are written in corpus order, whatever order requests finished in. Each file is named by a hash of
its content and the README lists that exact file: `datasets` caches a local folder by its name, config
and data-file patterns, so a folder rewritten by a resumed run under the same file name would load
the earlier rows from the cache.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bft.generation.journal import Journal
from bft.generation.records import KEPT, RECORD_SCHEMA, StageRecord
from bft.generation.stages import OUTPUT_CONFIG_NAMES

REJECTED_CONFIG = "rejected"
BATCH = 512


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (the file may be larger than memory should grow)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


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


def journal_dir(out: Path) -> Path:
    return out / ".bft" / "journal"


def _ordered_offsets(journals: list[Journal]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which journal and byte offset hold each document's first entry, in corpus order, and whether
    each is kept.

    Only integer arrays stay in memory (21 bytes a document), however large the corpus.
    """
    positions, sources, offsets, kept = array("q"), array("i"), array("q"), array("b")
    for number, journal in enumerate(journals):
        for offset, entry in journal.entries():
            positions.append(entry["position"])
            sources.append(number)
            offsets.append(offset)
            kept.append(entry["status"] == KEPT)
    # np.unique sorts by position and keeps the first entry of a position seen twice
    _, first = np.unique(np.frombuffer(positions, dtype=np.int64), return_index=True)
    return (
        np.frombuffer(sources, dtype=np.int32)[first],
        np.frombuffer(offsets, dtype=np.int64)[first],
        np.frombuffer(kept, dtype=np.int8)[first].astype(bool),
    )


def _row(record: StageRecord) -> dict:
    row = asdict(record)
    row.pop("position")
    return row


class _ParquetSink:
    """Writes rows in batches against the fixed schema, so even an empty config has a valid file."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path: Path | None = None
        self.tmp = folder / "data.parquet.tmp"
        self.writer = pq.ParquetWriter(self.tmp, RECORD_SCHEMA)
        self.buffer: list[dict] = []
        self.rows = 0

    def add(self, record: StageRecord) -> None:
        self.buffer.append(_row(record))
        self.rows += 1
        if len(self.buffer) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=RECORD_SCHEMA))
            self.buffer = []

    def close(self) -> str:
        """Finish the file, name it by its content, drop earlier files; return its path under OUT."""
        self.flush()
        self.writer.close()
        digest = file_sha256(self.tmp)[:16]
        self.path = self.folder / f"data-{digest}.parquet"
        for old in self.folder.glob("*.parquet"):
            if old != self.path:
                old.unlink()
        self.tmp.replace(self.path)
        return f"{self.folder.name}/{self.path.name}"


def write_outputs(
    out: Path, stage_names: list[str], journal_dirs: list[Path] | None = None
) -> dict[str, tuple[int, str]]:
    """Write one parquet config per stage (kept rows) plus `rejected`; return (rows, file) per config.

    The rows come from the journals in `journal_dirs` (default: the run's own), merged in corpus order.
    """
    rejected = _ParquetSink(out / REJECTED_CONFIG)
    written: dict[str, tuple[int, str]] = {}
    for name in ["prepare", *stage_names]:
        journals = [Journal(folder / f"{name}.jsonl") for folder in journal_dirs or [journal_dir(out)]]
        kept = _ParquetSink(out / OUTPUT_CONFIG_NAMES[name]) if name in OUTPUT_CONFIG_NAMES else None
        sources, offsets, kept_flags = _ordered_offsets(journals)
        for source, offset, is_kept in zip(sources.tolist(), offsets.tolist(), kept_flags.tolist(), strict=True):
            record = journals[source].read_at(offset)
            if is_kept:
                if kept is not None:
                    kept.add(record)
            else:
                rejected.add(record)
        if kept is not None:
            written[OUTPUT_CONFIG_NAMES[name]] = (kept.rows, kept.close())
    written[REJECTED_CONFIG] = (rejected.rows, rejected.close())
    return written


def dataset_configs(written: dict[str, tuple[int, str]]) -> list[dict]:
    """The README `configs:` entries that make `load_dataset(OUT, name)` work."""
    return [
        {"config_name": name, "data_files": [{"split": "train", "path": path}]} for name, (_, path) in written.items()
    ]


def write_stats(out: Path, stats: dict) -> None:
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=False) + "\n", encoding="utf-8")
