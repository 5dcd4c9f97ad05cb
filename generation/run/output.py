"""Turning a run's journals into a folder that `datasets.load_dataset(OUT, CONFIG)` reads.

The folder's layout is `generation/layout.py`'s. Rows are written in corpus order, whatever order
requests finished in. Each file is named by a hash of its content and the README lists that exact
file: `datasets` caches a local folder by its name, config and data-file patterns, so a folder
rewritten by a resumed run under the same file name would load the earlier rows from the cache.

The journal lines are read by Arrow's JSON reader (C++), not parsed in Python: it reads a journal's
positions and statuses in a tenth of the time, and the rows straight into the schema's columns, without
building them from Python lists, which makes pyarrow import pandas (0.4 s of a run served from the request
cache). A batch the reader cannot say the same of as `StageRecord.from_dict` (a field missing, unknown or
of another type, a corrupt line) is read the Python way instead, with its errors.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from bft.generation.layout import OUTPUT_CONFIG_NAMES, PREPARE, REJECTED_CONFIG, journal_dir
from bft.generation.records import KEPT, RECORD_SCHEMA, StageRecord
from bft.generation.run.journal import Journal
from bft.generation.text import file_sha256

BATCH = 512
NEWLINE_SCAN = 1 << 24  # bytes of a journal searched for line ends at a time (a bounded temporary array)
MIN_BLOCK = 1 << 20  # Arrow's JSON block; raised to the longest line (an object may not straddle two blocks)
INDEX_SCHEMA = pa.schema([("position", pa.int64()), ("status", pa.string())])
LINE_SCHEMA = RECORD_SCHEMA.append(pa.field("position", pa.int64()))
# a line missing one of these is not what `StageRecord.from_dict` reads as null: no default, or a list default
NOT_NULL = tuple(f.name for f in fields(StageRecord) if f.default is MISSING)


def _ordered_offsets(journals: list[Journal]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which journal and byte offset hold each document's latest entry, in corpus order, and whether
    each is kept.

    Only integer arrays stay in memory (21 bytes a document), however large the corpus.
    """
    indexes = [_journal_index(journal) for journal in journals]
    positions = np.concatenate([np.zeros(0, np.int64), *(index[0] for index in indexes)])
    sources = np.concatenate([np.zeros(0, np.int32), *(np.full(len(i[0]), n, np.int32) for n, i in enumerate(indexes))])
    offsets = np.concatenate([np.zeros(0, np.int64), *(index[1] for index in indexes)])
    kept = np.concatenate([np.zeros(0, bool), *(index[2] for index in indexes)])
    # np.unique sorts by position and keeps its first index of a position seen twice: on the reversed
    # arrays that is the latest entry (a document retried by a rerun has its last outcome written)
    _, first = np.unique(positions[::-1], return_index=True)
    latest = len(positions) - 1 - first
    return sources[latest], offsets[latest], kept[latest]


def _journal_index(journal: Journal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, byte offset, kept) of each whole line of `journal`, in file order (a torn last line is
    not one). Arrow reads the two fields from the mapped file; where it cannot (a corrupt line), the
    Python reading does, and names the line."""
    if not journal.path.exists():
        return _python_index(journal)
    mapped = pa.memory_map(str(journal.path))
    try:
        data = mapped.read_buffer()
        ends = _line_ends(np.frombuffer(data, dtype=np.uint8))
        if ends.size == 0:
            return _python_index(journal)
        starts = np.concatenate([np.zeros(1, np.int64), ends[:-1] + 1])
        longest = int((ends - starts).max()) + 1
        try:
            table = pa_json.read_json(
                pa.BufferReader(data.slice(0, int(ends[-1]) + 1)),
                read_options=pa_json.ReadOptions(block_size=max(MIN_BLOCK, longest)),
                parse_options=pa_json.ParseOptions(explicit_schema=INDEX_SCHEMA, unexpected_field_behavior="ignore"),
            )
        except pa.ArrowInvalid:
            return _python_index(journal)
    finally:
        mapped.close()
    if table.num_rows != len(starts) or any(table.column(name).null_count for name in INDEX_SCHEMA.names):
        return _python_index(journal)  # a blank line or a field missing: the Python reading says which
    # NumPy views of Arrow's own buffers (no nulls, checked above): no Python object per line, and not
    # Arrow's `to_numpy`, which imports pandas
    # (nor `pyarrow.compute` with a Python string, whose scalar conversion imports it too)
    positions = table.column("position").combine_chunks()
    values = np.frombuffer(positions.buffers()[1], dtype=np.int64, count=len(positions), offset=positions.offset * 8)
    return values.copy(), starts, _equals(table.column("status").combine_chunks(), KEPT)


def _equals(column: pa.Array, value: str) -> np.ndarray:
    """Which items of a string Arrow array without nulls are `value`, compared on its UTF-8 bytes."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32, count=len(column) + 1, offset=column.offset * 4)
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)
    wanted = value.encode()
    hits = np.diff(offsets) == len(wanted)
    for at, byte in enumerate(wanted):
        hits[hits] = data[offsets[:-1][hits] + at] == byte
    return hits


def _line_ends(data: np.ndarray) -> np.ndarray:
    """The byte offsets of every newline in `data`, searched a bounded slice at a time."""
    found = [np.zeros(0, np.int64)]
    for begin in range(0, len(data), NEWLINE_SCAN):
        found.append(np.flatnonzero(data[begin : begin + NEWLINE_SCAN] == ord("\n")).astype(np.int64) + begin)
    return np.concatenate(found)


def _python_index(journal: Journal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_journal_index` by parsing each line in Python (`Journal.entries`: its errors name the line)."""
    positions, offsets, kept = array("q"), array("q"), array("b")
    for offset, entry in journal.entries():
        positions.append(entry["position"])
        offsets.append(offset)
        kept.append(entry["status"] == KEPT)
    return (
        np.frombuffer(positions, dtype=np.int64),
        np.frombuffer(offsets, dtype=np.int64),
        np.frombuffer(kept, dtype=np.int8).astype(bool),
    )


def _rows_table(lines: list[bytes]) -> pa.Table:
    """The rows of these journal lines in `RECORD_SCHEMA`: read by Arrow, or, for a batch Arrow would read
    otherwise than `StageRecord.from_dict` (module docstring), through the records in Python."""
    try:
        table = pa_json.read_json(
            pa.BufferReader(b"".join(lines)),
            read_options=pa_json.ReadOptions(block_size=max(MIN_BLOCK, *(len(line) + 1 for line in lines))),
            parse_options=pa_json.ParseOptions(explicit_schema=LINE_SCHEMA, unexpected_field_behavior="error"),
        )
    except pa.ArrowInvalid:
        table = None
    if table is None or table.num_rows != len(lines) or any(table.column(name).null_count for name in NOT_NULL):
        return pa.Table.from_pylist(
            [_row(StageRecord.from_dict(json.loads(line))) for line in lines], schema=RECORD_SCHEMA
        )
    return table.select(RECORD_SCHEMA.names).combine_chunks()  # one chunk a batch, as the Python reading gives


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
        self.buffer: list[bytes] = []
        self.rows = 0

    def add(self, line: bytes) -> None:
        """One journal line (its record, as JSON) as a row."""
        self.buffer.append(line)
        self.rows += 1
        if len(self.buffer) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(_rows_table(self.buffer))
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
        readers: dict[int, BinaryIO] = {}
        try:
            for source, offset, is_kept in zip(sources.tolist(), offsets.tolist(), kept_flags.tolist(), strict=True):
                if source not in readers:
                    readers[source] = open(journals[source].path, "rb")  # noqa: SIM115 (closed below)
                reader = readers[source]
                reader.seek(offset)  # lines are only ever appended: an offset stays valid
                line = reader.readline()
                if is_kept:
                    if kept is not None:
                        kept.add(line)
                else:
                    rejected.add(line)
        finally:
            for reader in readers.values():
                reader.close()
        if kept is not None:
            written.add(OUTPUT_CONFIG_NAMES[name], kept)
    written.add(REJECTED_CONFIG, rejected)
    return written
