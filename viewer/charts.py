"""What `bft view` draws, as small summaries: the page gets bins and counts, never rows.

- **funnel**: per stage, the documents that entered it and those it kept (`stats.json`, the run's own
  counters, so the chart says what the Stages table says);
- **reasons**: rejected documents per stage and reason (`stats.json`), most frequent first;
- **scores**: the curation score of every scored candidate, one bar per whole score (`unparsed`: the
  curate stage read no score), and the expected scores (sum p(k)*k, fractional) in quarter-point bins when
  the run recorded them. The candidates are those of the data report (`builders/report.py`): in a
  `bft generate` output the `curated` rows and the `rejected` rows of stage `curate`; in a `bft build`
  folder the `backtranslated` rows, which carry their curation outcome;
- **lengths**: per config, the lengths in words (as `str.split` counts them, the data report's unit) of
  instructions and responses (the `sft` config: its prompt and completion turns), in bins shared by
  every config so the charts compare; the top 1% fall in one open bin.

Everything is read a row group at a time, only the columns needed, once per `bft view` (the server keeps
the result), and words are counted on the arrow text buffers with numpy, never as Python strings: the page
gets a few kilobytes whatever the folder's size.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bft.generation.layout import REJECTED_CONFIG
from bft.generation.records import KEPT, REJECTED
from bft.generation.run.stats import stage_counts
from bft.viewer.data import Folder, Part

MAX_BINS = 20  # bins of a binned histogram, at most
SCORE_BIN = 0.25  # expected scores: quarter points, so thresholds such as 4.5 fall on a bin's edge
OPEN_TOP_QUANTILE = 0.99  # lengths above this quantile share the last (open) bin
UNPARSED = "unparsed"
PAIR_FIELDS = ("instruction", "response")  # the text columns of record configs
TURN_FIELDS = ("prompt", "completion")  # the {role, content} turns of conversational configs (sft)


# -- counting words -------------------------------------------------------------------------------


@functools.cache
def whitespace_bytes() -> tuple[np.ndarray, np.ndarray, tuple[bytes, ...]]:
    """Python's whitespace (what `str.split()` cuts on) as UTF-8: a lookup table of the one-byte ones, one
    of the first bytes of the longer ones, and the longer ones (no-break space, U+2000..U+200A, ...)."""
    single, leads = np.zeros(256, dtype=bool), np.zeros(256, dtype=bool)
    longer = []
    for code in range(sys.maxunicode + 1):
        if chr(code).isspace():
            encoded = chr(code).encode("utf-8")
            if len(encoded) == 1:
                single[encoded[0]] = True
            else:
                leads[encoded[0]] = True
                longer.append(encoded)
    return single, leads, tuple(longer)


def word_counts(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(words in each string of `array`, which strings are not null), words as `len(text.split())` counts
    them, read from the arrow buffers without making a Python string; a column of no strings counts none."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_large_string(array.type):
        offset_type = np.int64
    elif pa.types.is_string(array.type):
        offset_type = np.int32
    else:  # no text in it (a column all null is stored as arrow's null type): nothing to count
        return np.zeros(len(array), dtype=np.int64), np.zeros(len(array), dtype=bool)
    size = len(array)
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else np.ones(size, dtype=bool)
    _, offsets_buffer, data_buffer = array.buffers()
    if size == 0 or offsets_buffer is None:
        return np.zeros(size, dtype=np.int64), valid
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[array.offset : array.offset + size + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, dtype=np.uint8)
    data = data[offsets[0] : offsets[-1]]
    starts = (offsets - offsets[0]).astype(np.int64)
    return _words_per_string(data, starts) * valid, valid


def _words_per_string(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Words in each string laid end to end in `data` (UTF-8): string i runs from starts[i] to starts[i + 1]."""
    single, leads, longer = whitespace_bytes()
    space = data <= 0x20  # spaces, tabs, newlines...
    control = data[data < 0x20]
    if len(control) and not single[control].all():  # ...and a control byte that is not a space: look it up
        space = single[data]
    lowest_lead = min(encoded[0] for encoded in longer)
    if (data >= lowest_lead).any():  # multi-byte spaces (no-break space, U+2000..U+200A, ...)
        candidates = np.flatnonzero(data >= lowest_lead)
        candidates = candidates[leads[data[candidates]]]
        for encoded in longer:
            at = candidates[candidates + len(encoded) <= len(data)]
            for shift, byte in enumerate(encoded):
                at = at[data[at + shift] == byte]
            for shift in range(len(encoded)):
                space[at + shift] = True
    begins = ~space  # a word begins at a non-space byte after a space...
    begins[1:] &= space[:-1]
    first = starts[:-1][starts[:-1] < len(data)]
    begins[first] = ~space[first]  # ...or at the start of a string, whatever ended the one before
    before = np.searchsorted(np.flatnonzero(begins), starts)  # word starts ahead of each string's start
    return np.diff(before)


def turn_word_counts(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Words in each row's conversation turns (a list of {role, content}), all turns together."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    size = len(array)
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else np.ones(size, dtype=bool)
    turns = pc.list_flatten(array)
    contents = pc.struct_field(turns, "content")
    words, _ = word_counts(contents)
    parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
    counts = np.bincount(parents, weights=words, minlength=size).astype(np.int64)
    return counts, valid


# -- bins ------------------------------------------------------------------------------------------


def nice_width(span: float, bins: int = MAX_BINS, whole: bool = False) -> float:
    """The smallest width of the form 1, 2, 2.5 or 5 times a power of ten that covers `span` in `bins`
    bins or fewer (at least 1 and a whole number when `whole`)."""
    power = 10.0 ** math.floor(math.log10(span / bins)) if span > 0 else 1.0
    while True:
        for step in (1, 2, 2.5, 5):
            width = step * power
            if span / width <= bins and (not whole or (width >= 1 and width == int(width))):
                return float(width)
        power *= 10


def _number(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def histogram(values: np.ndarray, low: float, width: float, bins: int, open_top: bool = False) -> list[dict]:
    """`values` counted in `bins` bins of `width` from `low`: [low, high) each, the last one closed (or,
    when `open_top`, holding everything from its low edge up). Each bin has its label, edges and count."""
    index = np.floor(np.round((np.asarray(values, dtype=np.float64) - low) / width, 9)).astype(np.int64)
    counts = np.bincount(np.clip(index, 0, bins - 1), minlength=bins)[:bins] if len(index) else np.zeros(bins, int)
    whole = width == int(width) and low == int(low)
    out = []
    for number, count in enumerate(counts):
        start, end = low + number * width, low + (number + 1) * width
        last = number == bins - 1
        if last and open_top:
            label, end = f"≥ {_number(start)}", None
        elif whole and width == 1:
            label = _number(start)
        elif whole:
            label = f"{_number(start)}–{_number(end - 1)}"  # whole numbers: 0–9 means 0 to 9
        else:
            label = f"{start:.2f}–{end:.2f}"
        out.append({"label": label, "low": start, "high": end, "count": int(count)})
    return out


def _describe(values: np.ndarray) -> dict:
    if not len(values):
        return {"count": 0}
    return {
        "count": int(len(values)),
        "mean": round(float(np.mean(values)), 2),
        "median": round(float(np.median(values)), 2),
        "min": round(float(np.min(values)), 4),
        "max": round(float(np.max(values)), 4),
    }


# -- the charts ------------------------------------------------------------------------------------


def funnel(stats: dict) -> list[dict]:
    """Per stage in run order: documents entered, kept and rejected (`stats.json`)."""
    return [
        {"stage": stage, "entered": c.get("entered", 0), "kept": c.get("kept", 0), "rejected": c.get("rejected", 0)}
        for stage, c in stage_counts(stats).items()
    ]


def reasons(stats: dict) -> list[dict]:
    """Rejected documents per (stage, reason), most first (`stats.json`)."""
    found = [
        {"stage": stage, "reason": reason, "count": count}
        for stage, c in stage_counts(stats).items()
        for reason, count in (c.get("rejected_by_reason") or {}).items()
    ]
    return sorted(found, key=lambda r: -r["count"])


def _scored_columns(folder: Folder) -> list[tuple[Part, str | None]]:
    """The parts holding the scored candidates, each with the stage its rows must have (None: any)."""
    parts = {config for config, split in folder.layout if split == "train"}
    if folder.is_build:
        return [(folder.part("backtranslated"), None)] if "backtranslated" in parts else []
    return [
        (folder.part(name), stage) for name, stage in (("curated", None), (REJECTED_CONFIG, "curate")) if name in parts
    ]


def scores(folder: Folder) -> dict:
    """The candidates' parsed scores (whole numbers, one bin each) and expected scores (quarter points)."""
    parsed, unparsed, expected = [], 0, []
    for part, stage in _scored_columns(folder):
        wanted = [c for c in ("stage", "status", "score", "expected_score") if c in part.columns]
        for table in part.scan(wanted):
            keep = np.ones(table.num_rows, dtype=bool)
            if stage is not None and "stage" in table.column_names:
                keep &= pc.fill_null(pc.equal(table["stage"], stage), False).to_numpy(zero_copy_only=False)
            if folder.is_build and "status" in table.column_names:  # `not_curated` candidates have no score
                scored = pc.is_in(table["status"], pa.array([KEPT, REJECTED]))
                keep &= pc.fill_null(scored, False).to_numpy(zero_copy_only=False)
            if "score" in table.column_names:
                score = table["score"].to_numpy(zero_copy_only=False).astype(np.float64)[keep]
                parsed.append(score[~np.isnan(score)])
                unparsed += int(np.isnan(score).sum())
            if "expected_score" in table.column_names:
                value = table["expected_score"].to_numpy(zero_copy_only=False).astype(np.float64)[keep]
                expected.append(value[~np.isnan(value)])
    whole = np.concatenate(parsed) if parsed else np.zeros(0)
    fractional = np.concatenate(expected) if expected else np.zeros(0)
    result: dict = {"parsed": _describe(whole), "expected": _describe(fractional)}
    if len(whole):
        low, high = math.floor(whole.min()), math.ceil(whole.max())
        if high - low < MAX_BINS:
            result["parsed"]["bins"] = histogram(whole, low, 1, high - low + 1)
        else:
            width = nice_width(high - low + 1, whole=True)
            result["parsed"]["bins"] = histogram(whole, low, width, math.ceil((high - low + 1) / width))
    if unparsed:
        result["parsed"].setdefault("bins", []).append(
            {"label": UNPARSED, "low": None, "high": None, "count": unparsed}
        )
        result["parsed"]["unparsed"] = unparsed
    if len(fractional):
        low, high = math.floor(fractional.min()), max(math.ceil(fractional.max()), math.floor(fractional.min()) + 1)
        width = SCORE_BIN if (high - low) / SCORE_BIN <= 2 * MAX_BINS else nice_width(high - low)
        result["expected"]["bins"] = histogram(fractional, low, width, round((high - low) / width))
    return result


def _length_fields(part: Part) -> dict:
    """Column -> its word counter, for the columns of `part` whose lengths are drawn."""
    pairs = {column: word_counts for column in PAIR_FIELDS if column in part.columns}
    return pairs or {column: turn_word_counts for column in TURN_FIELDS if column in part.columns}


def lengths(folder: Folder) -> dict:
    """Per config (and split) and field, the lengths in words, binned alike across configs."""
    measured: dict[str, dict[str, np.ndarray]] = {}
    for config, split in folder.layout:
        if config == REJECTED_CONFIG:  # rows of every stage, some never given an instruction
            continue
        part = folder.part(config, split)
        fields = _length_fields(part)
        if not fields:
            continue
        found = {column: [] for column in fields}
        for table in part.scan(list(fields)):
            for column, counter in fields.items():
                counts, valid = counter(table[column])
                found[column].append(counts[valid])
        label = config if split == "train" else f"{config}/{split}"
        measured[label] = {name: np.concatenate(c) if c else np.zeros(0, np.int64) for name, c in found.items()}
    charts: dict = {"unit": "words", "fields": {}, "configs": []}
    for name in (*PAIR_FIELDS, *TURN_FIELDS):
        every = [values[name] for values in measured.values() if name in values and len(values[name])]
        if not every:
            continue
        pooled = np.concatenate(every)
        bottom, top = int(pooled.min()), math.floor(np.quantile(pooled, OPEN_TOP_QUANTILE))
        width = nice_width(top - bottom + 1, MAX_BINS - 1, whole=True)
        low = math.floor(bottom / width) * width
        regular = math.ceil((top + 1 - low) / width)
        open_top = bool(pooled.max() >= low + regular * width)  # some lie beyond the regular bins
        bins = regular + open_top
        charts["fields"][name] = {"low": low, "width": width, "bins": bins, "open_top": open_top}
    for label, values in measured.items():
        entry = {"config": label, "fields": {}}
        for name, found in values.items():
            shape = charts["fields"].get(name)
            summary = _describe(found)
            if shape and len(found):
                summary["bins"] = histogram(found, shape["low"], shape["width"], shape["bins"], shape["open_top"])
            entry["fields"][name] = summary
        charts["configs"].append(entry)
    return charts


def chart_data(folder: Folder) -> dict:
    """Everything the page draws, for `folder` (see the module docstring)."""
    return {
        "funnel": funnel(folder.stats),
        "reasons": reasons(folder.stats),
        "scores": scores(folder),
        "lengths": lengths(folder),
    }
