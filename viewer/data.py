"""What `bft view` shows, read from a folder's parquet files on demand: never a whole config in memory.

A folder is a `bft generate` output or a `bft build` dataset: its README's `configs:` name each config's
files and splits. Each (config, split) is a `Part`: its files' row groups, indexed by their first global
row, so a page of rows reads only the row groups that hold it (`bft generate` writes groups of 512 rows;
`datasets` larger ones). Filters (status, stage, reason, flag, score range, full-text search) are applied
by scanning only the columns they need, a row group at a time, with pyarrow's compute kernels; the
matching row numbers (4 bytes a row) are kept for the last few filters, so paging through them is cheap.

Counts come from the files themselves (parquet metadata) and from `stats.json`, the run's own counters,
so the page shows what `stats.json` says.
"""

from __future__ import annotations

import json
import random
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from bft.builders.facts import FACTS_FILE
from bft.generation.errors import ConfigError
from bft.generation.layout import STATS_FILE
from bft.generation.records import REJECTED
from bft.generation.run.stats import ENDPOINTS_KEY, stage_counts
from bft.generation.text import GROUNDING_NGRAM, WORD_RE, ngrams, words

TEXT_COLUMNS = ("id", "instruction", "response", "document", "reason", "url")  # what full-text search reads
LIST_COLUMNS = ("id", "stage", "status", "reason", "score", "expected_score", "grounding", "instruction", "flags")
SNIPPET = 240  # characters of the instruction a list row shows
CACHED_FILTERS = 8
CACHED_GROUPS = 16


@dataclass
class Filters:
    """Which rows of a part to show; empty fields do not filter."""

    status: str = ""
    stage: str = ""
    reason: str = ""
    flag: str = ""  # rows with a flag that starts with this (e.g. `markers_copied` or `previous_score:5`)
    min_score: float | None = None
    max_score: float | None = None
    search: str = ""  # case-insensitive substring of any text column

    @classmethod
    def from_query(cls, query) -> Filters:
        def number(name):
            value = query.get(name, "")
            try:
                return float(value) if value != "" else None
            except ValueError:
                raise ConfigError(f"filter {name}={value!r} is not a number") from None

        return cls(
            status=query.get("status", ""),
            stage=query.get("stage", ""),
            reason=query.get("reason", ""),
            flag=query.get("flag", ""),
            min_score=number("min_score"),
            max_score=number("max_score"),
            search=query.get("q", "").strip(),
        )

    @property
    def active(self) -> bool:
        return any((self.status, self.stage, self.reason, self.flag, self.search)) or (
            self.min_score is not None or self.max_score is not None
        )

    def key(self) -> tuple:
        return (self.status, self.stage, self.reason, self.flag, self.min_score, self.max_score, self.search.lower())


@dataclass
class Part:
    """One config's split: its parquet files read by row group."""

    config: str
    split: str
    files: list[Path]
    groups: list[tuple[int, int, int]] = field(default_factory=list)  # (file, row group, first global row)
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    groups_read: int = 0  # row groups read for pages and records (tests check paging reads few)

    def __post_init__(self) -> None:
        self._readers = [pq.ParquetFile(f) for f in self.files]
        for number, reader in enumerate(self._readers):
            for group in range(reader.metadata.num_row_groups):
                self.groups.append((number, group, self.rows))
                self.rows += reader.metadata.row_group(group).num_rows
        self.columns = list(self._readers[0].schema_arrow.names) if self._readers else []
        self._starts = np.array([start for _, _, start in self.groups], dtype=np.int64)
        self._cache: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._matches: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def scan(self, columns: list[str]):
        """Every row group in order, with `columns` only (those this part has): for whole-part summaries."""
        wanted = [c for c in columns if c in self.columns] or self.columns[:1]
        for file, group, _ in self.groups:
            yield self._readers[file].read_row_group(group, columns=wanted)

    def _group(self, index: int, columns: tuple[str, ...]) -> pa.Table:
        key = (index, columns)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        file, group, _ = self.groups[index]
        table = self._readers[file].read_row_group(group, columns=list(columns))
        self.groups_read += 1
        self._cache[key] = table
        if len(self._cache) > CACHED_GROUPS:
            self._cache.popitem(last=False)
        return table

    def take(self, rows: list[int], columns: list[str] | None = None) -> list[dict]:
        """The rows numbered `rows` (global, in order given), with `columns` (default: all)."""
        wanted = tuple(c for c in (columns or self.columns) if c in self.columns)
        out = []
        for row in rows:
            if not 0 <= row < self.rows:
                raise ConfigError(f"{self.config}/{self.split}: no row {row} (it has {self.rows})")
            index = int(np.searchsorted(self._starts, row, side="right") - 1)
            table = self._group(index, wanted)
            out.append(table.slice(row - self.groups[index][2], 1).to_pylist()[0])
        return out

    def matching(self, filters: Filters) -> np.ndarray | range:
        """The row numbers that pass `filters` (all of them, as a range, when nothing filters)."""
        if not filters.active:
            return range(self.rows)
        key = filters.key()
        if key in self._matches:
            self._matches.move_to_end(key)
            return self._matches[key]
        needed = self._filter_columns(filters)
        found = []
        for file, group, start in self.groups:
            table = self._readers[file].read_row_group(group, columns=needed)
            mask = self._mask(table, filters)
            found.append(np.flatnonzero(mask.to_numpy(zero_copy_only=False)).astype(np.int64) + start)
        matches = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
        self._matches[key] = matches
        if len(self._matches) > CACHED_FILTERS:
            self._matches.popitem(last=False)
        return matches

    def _filter_columns(self, filters: Filters) -> list[str]:
        needed = set()
        for name, column in (("status", "status"), ("stage", "stage"), ("reason", "reason"), ("flag", "flags")):
            if getattr(filters, name):
                needed.add(column)
        if filters.min_score is not None or filters.max_score is not None:
            needed.add("score")
        if filters.search:
            needed.update(TEXT_COLUMNS)
        return [c for c in self.columns if c in needed] or self.columns[:1]

    def _mask(self, table: pa.Table, filters: Filters) -> pa.ChunkedArray | pa.Array:
        mask = pa.array(np.ones(table.num_rows, dtype=bool))
        names = table.column_names

        def both(other):
            return pc.and_kleene(mask, pc.fill_null(other, False))

        for name in ("status", "stage", "reason"):
            value = getattr(filters, name)
            if value:
                mask = both(pc.equal(table[name], value)) if name in names else pa.array(np.zeros(len(mask), bool))
        if filters.flag:
            if "flags" not in names:
                mask = pa.array(np.zeros(len(mask), bool))
            else:
                flags = table["flags"].combine_chunks()
                hits = pc.starts_with(pc.list_flatten(flags), filters.flag)
                parents = pc.list_parent_indices(flags).to_numpy()
                has = np.zeros(table.num_rows, dtype=bool)
                has[parents[hits.to_numpy(zero_copy_only=False)]] = True
                mask = both(pa.array(has))
        if filters.min_score is not None or filters.max_score is not None:
            if "score" not in names:
                mask = pa.array(np.zeros(len(mask), bool))
            else:
                if filters.min_score is not None:
                    mask = both(pc.greater_equal(table["score"], filters.min_score))
                if filters.max_score is not None:
                    mask = both(pc.less_equal(table["score"], filters.max_score))
        if filters.search:
            hit = pa.array(np.zeros(table.num_rows, dtype=bool))
            for name in TEXT_COLUMNS:
                if name in names and pa.types.is_string(table.schema.field(name).type):
                    found = pc.match_substring(table[name], filters.search, ignore_case=True)
                    hit = pc.or_kleene(hit, pc.fill_null(found, False))
            mask = both(hit)
        return mask

    def facets(self) -> dict:
        """Distinct values to filter by: statuses, stages, reasons (with counts), flag kinds, scores."""
        counts = {name: Counter() for name in ("status", "stage", "reason", "score", "flag")}
        columns = [c for c in ("status", "stage", "reason", "score", "flags") if c in self.columns]
        for file, group, _ in self.groups:
            if not columns:
                break
            table = self._readers[file].read_row_group(group, columns=columns)
            for name in ("status", "stage", "reason", "score"):
                if name in table.column_names:
                    for value, count in _value_counts(table[name]):
                        counts[name][str(value)] += count
            if "flags" in table.column_names:
                for flag, count in _value_counts(pc.list_flatten(table["flags"].combine_chunks())):
                    counts["flag"][flag_kind(flag)] += count
        return {name: dict(sorted(counter.items())) for name, counter in counts.items() if counter}


def _value_counts(array) -> list[tuple]:
    result = pc.value_counts(pc.drop_null(array))
    return [(item["values"], item["counts"]) for item in result.to_pylist()]


def flag_kind(flag: str) -> str:
    """A flag's kind, what the filter offers: `previous_score:5` -> `previous_score`."""
    return flag.split(":", 1)[0]


def grounding_segments(response: str, document: str) -> list[list]:
    """`response` cut into [text, shared] pieces: shared words are in a word trigram the document also has
    (the grounding measure of `generation/text.py`, shown word by word)."""
    present = set(ngrams(words(document), GROUNDING_NGRAM))
    spans = [(m.start(), m.end(), m.group(0).lower()) for m in WORD_RE.finditer(response or "")]
    shared = [False] * len(spans)
    tokens = [token for _, _, token in spans]
    for start in range(len(tokens) - GROUNDING_NGRAM + 1):
        if tuple(tokens[start : start + GROUNDING_NGRAM]) in present:
            for i in range(start, start + GROUNDING_NGRAM):
                shared[i] = True
    pieces: list[list] = []
    cursor = 0

    def add(text: str, is_shared: bool) -> None:
        if not text:
            return
        if pieces and pieces[-1][1] == is_shared:
            pieces[-1][0] += text
        else:
            pieces.append([text, is_shared])

    for (start, end, _), is_shared in zip(spans, shared, strict=True):
        gap_shared = is_shared and pieces and pieces[-1][1]  # the space between two shared words is shared
        add(response[cursor:start], bool(gap_shared))
        add(response[start:end], is_shared)
        cursor = end
    add(response[cursor:], False)
    return pieces


def _brief(part: Part, numbers: list[int]) -> dict:
    """Rows `numbers` of `part` as the list view shows them: its columns, the row number, instructions cut."""
    columns = [c for c in LIST_COLUMNS if c in part.columns] or part.columns[:6]
    rows = part.take(numbers, columns)
    for number, row in zip(numbers, rows, strict=True):
        row["_row"] = number
        if isinstance(row.get("instruction"), str) and len(row["instruction"]) > SNIPPET:
            row["instruction"] = row["instruction"][:SNIPPET] + "…"
    return {"rows": rows, "columns": columns}


class Folder:
    """A generate output or build folder, its parts opened lazily."""

    def __init__(self, path: Path):
        self.path = path
        readme = path / "README.md"
        if not path.is_dir() or not readme.is_file():
            raise ConfigError(f"{path}: not a `bft generate` output or `bft build` folder (no README.md with configs)")
        text = readme.read_text(encoding="utf-8")
        header = text.split("---\n", 2)[1] if text.startswith("---\n") else ""
        configs = (yaml.safe_load(header) or {}).get("configs") or []
        self.layout: dict[tuple[str, str], list[Path]] = {}
        for entry in configs:
            for files in entry.get("data_files") or []:
                paths = files["path"] if isinstance(files["path"], list) else [files["path"]]
                found = [p for pattern in paths for p in sorted(path.glob(pattern))]
                if found:
                    self.layout[(entry["config_name"], files.get("split", "train"))] = found
        if not self.layout:
            raise ConfigError(f"{path}: its README lists no config with parquet files")
        self._parts: dict[tuple[str, str], Part] = {}
        stats = path / STATS_FILE
        self.stats = json.loads(stats.read_text(encoding="utf-8")) if stats.is_file() else {}
        self.is_build = (path / FACTS_FILE).is_file()  # a `bft build` folder, not a generate output

    def part(self, config: str, split: str = "train") -> Part:
        key = (config, split)
        if key not in self.layout:
            known = ", ".join(f"{c}/{s}" for c, s in self.layout)
            raise ConfigError(f"no config {config!r} split {split!r} here (there are: {known})")
        if key not in self._parts:
            self._parts[key] = Part(config, split, self.layout[key])
        return self._parts[key]

    def summary(self) -> dict:
        """Rows per config and split (parquet metadata), and the run's counters (`stats.json`)."""
        parts = [{"config": c, "split": s, "rows": self.part(c, s).rows} for c, s in self.layout]
        stages = stage_counts(self.stats)
        return {
            "folder": self.path.name,
            "parts": parts,
            "stages": stages,
            "endpoints": self.stats.get(ENDPOINTS_KEY, {}),
        }

    def page(self, config: str, split: str, filters: Filters, offset: int = 0, limit: int = 50) -> dict:
        """Rows `offset`..`offset+limit` of those matching, in brief (the list view's columns)."""
        part = self.part(config, split)
        matches = part.matching(filters)
        numbers = [int(n) for n in matches[offset : offset + max(1, min(limit, 500))]]
        return {"total": len(matches), "offset": offset, **_brief(part, numbers)}

    def sample(self, config: str, split: str, filters: Filters, size: int = 10, seed: int | None = None) -> dict:
        """`size` rows picked at random among those matching (brief, as a page)."""
        part = self.part(config, split)
        matches = part.matching(filters)
        picked = sorted(random.Random(seed).sample(range(len(matches)), min(size, len(matches))))
        return {"total": len(matches), "offset": 0, **_brief(part, [int(matches[i]) for i in picked]), "sample": True}

    def record(self, config: str, split: str, row: int) -> dict:
        """One whole row, with the rewrite's grounding highlight and the curation replies pulled out."""
        record = self.part(config, split).take([row])[0]
        view: dict = {"config": config, "split": split, "row": row, "record": record}
        view["rejected_by"] = self.rejected_by(config, record)
        if isinstance(record.get("response"), str) and isinstance(record.get("document"), str) and record["document"]:
            view["response_segments"] = grounding_segments(record["response"], record["document"])
        provenance = record.get("provenance") or []
        view["curation"] = [p for p in provenance if isinstance(p, dict) and p.get("stage") == "curate"]
        return view

    def rejected_by(self, config: str, record: dict) -> str | None:
        """The stage that rejected `record` (None when it was not rejected), as the records say: its `stage`,
        except in a build's `backtranslated` config, whose `status` and `reason` are the curation outcome
        joined onto the backtranslated pair (`builders/bft_dataset.py`)."""
        if record.get("status") != REJECTED:
            return None
        if self.is_build and config == "backtranslated":
            return "curate"
        return record.get("stage")
