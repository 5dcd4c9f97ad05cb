"""Turning a run's journals into a folder that `datasets.load_dataset(OUT, CONFIG)` reads.

The folder's layout is `generation/layout.py`'s. Rows are written in corpus order, whatever order
requests finished in. Each file is named by a hash of its content and the README lists that exact
file: `datasets` caches a local folder by its name, config and data-file patterns, so a folder
rewritten by a resumed run under the same file name would load the earlier rows from the cache.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
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
    row = record.to_dict()
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

    def close(self) -> str | None:
        """Finish the file, name it by its content, drop earlier files; return its path under OUT.

        A config with no rows is not written (its folder goes): `load_dataset` cannot load one.
        """
        self.flush()
        self.writer.close()
        digest = file_sha256(self.tmp)[:16]
        self.path = self.folder / f"data-{digest}.parquet" if self.rows else None
        for old in self.folder.glob("*.parquet"):
            if old != self.path:
                old.unlink()
        if self.path is None:
            self.tmp.unlink()
            if not any(self.folder.iterdir()):
                self.folder.rmdir()
            return None
        self.tmp.replace(self.path)
        return f"{self.folder.name}/{self.path.name}"


@dataclass
class Written:
    """The configs a run wrote: (rows, file under OUT) of each, and the configs left empty (not written)."""

    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)

    def add(self, name: str, sink: _ParquetSink) -> None:
        path = sink.close()
        if path is None:
            self.empty.append(name)
        else:
            self.files[name] = (sink.rows, path)

    @property
    def counts(self) -> dict[str, int]:
        return {name: rows for name, (rows, _) in self.files.items()}


def write_outputs(out: Path, stage_names: list[str], journal_dirs: list[Path] | None = None) -> Written:
    """Write one parquet config per stage (kept rows) plus `rejected`; configs with no rows are not written.

    The rows come from the journals in `journal_dirs` (default: the run's own), merged in corpus order.
    """
    rejected = _ParquetSink(out / REJECTED_CONFIG)
    written = Written()
    for name in [PREPARE, *stage_names]:
        journals = [Journal(folder / f"{name}.jsonl") for folder in journal_dirs or [journal_dir(out)]]
        kept = _ParquetSink(out / OUTPUT_CONFIG_NAMES[name]) if name in OUTPUT_CONFIG_NAMES else None
        sources, offsets, kept_flags = _ordered_offsets(journals)
        try:
            for source, offset, is_kept in zip(sources.tolist(), offsets.tolist(), kept_flags.tolist(), strict=True):
                record = journals[source].read_at(offset)
                if is_kept:
                    if kept is not None:
                        kept.add(record)
                else:
                    rejected.add(record)
        finally:
            for journal in journals:
                journal.close()
        if kept is not None:
            written.add(OUTPUT_CONFIG_NAMES[name], kept)
    written.add(REJECTED_CONFIG, rejected)
    return written
