"""Turning a run's journals into a folder that `datasets.load_dataset(OUT, CONFIG)` reads.

The folder's layout is `generation/layout.py`'s. Rows are written in corpus order, whatever order
requests finished in. Each file is named by a hash of its content and the README lists that exact
file: `datasets` caches a local folder by its name, config and data-file patterns, so a folder
rewritten by a resumed run under the same file name would load the earlier rows from the cache.
"""

from __future__ import annotations

from array import array
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bft.generation.layout import OUTPUT_CONFIG_NAMES, PREPARE, REJECTED_CONFIG, journal_dir
from bft.generation.records import KEPT, RECORD_SCHEMA, StageRecord
from bft.generation.run.journal import Journal
from bft.generation.text import file_sha256

BATCH = 512


def _ordered_offsets(journals: list[Journal]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which journal and byte offset hold each document's latest entry, in corpus order, and whether
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
    # np.unique sorts by position and keeps its first index of a position seen twice: on the reversed
    # arrays that is the latest entry (a document retried by a rerun has its last outcome written)
    reversed_positions = np.frombuffer(positions, dtype=np.int64)[::-1]
    _, first = np.unique(reversed_positions, return_index=True)
    latest = len(reversed_positions) - 1 - first
    return (
        np.frombuffer(sources, dtype=np.int32)[latest],
        np.frombuffer(offsets, dtype=np.int64)[latest],
        np.frombuffer(kept, dtype=np.int8)[latest].astype(bool),
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
    for name in [PREPARE, *stage_names]:
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
