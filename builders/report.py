"""The data report of a generated dataset: the figures both papers use to compare instruction data.

For each config with instruction/response pairs (`curated`, `rewritten`, `distilled`, `seed`):

- **lengths** of instructions and responses, in tokens with a tokenizer (BAFT Table 6 reports tokens),
  else in words: mean and median;
- **diversity**: the number of distinct word trigrams of the responses (and of the instructions), as
  BAFT counts them (Fig. 3: "unique trigrams at equal data size"), and beside it their share of all
  trigrams, measured on the same number of rows for every config: the smallest config's size, capped at
  `diversity_size`; rows are picked by a hash of their id, so the sample is the same on every run;
- **overlap with the source**: the share of a response's word trigrams found in its source document
  (rewrites should stay grounded; distilled answers need not);

and for the dataset as a whole:

- **scores**: how many candidate pairs got each curation score (`unparsed`: no score could be read);
- **decontamination**: every generated instruction against an evaluation set. A row is flagged when it
  equals an evaluation instruction (case and punctuation aside) or contains at least half of the word
  5-grams of one (evaluation instructions of five words or more). Flagged rows are listed with the
  evaluation item they overlap;
- **tags** (when a tagger is given): InsTag-style tags per pair from a served model, a measure of
  complexity (`builders/instag_counts.py`);
- **comparisons** (when asked for): MAUVE between two configs' responses in a model's embedding space
  (BAFT Table 3; `builders/mauve_comparison.py`), config against config.

Every report carries `methods`: for each figure, how it was computed on this data (unit, rows compared,
model, sizes, seed), printed under the table and on the dataset card.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import datasets

from bft.builders.facts import FACTS_FILE
from bft.builders.sources import config_names
from bft.generation.errors import ConfigError
from bft.generation.text import grounding, ngrams, stable_hash64, words

PAIR_CONFIGS = ("curated", "rewritten", "distilled", "seed")
DECONTAMINATION_NGRAM = 5
DECONTAMINATION_SHARE = 0.5


def _summary(values: list[int]) -> dict:
    return {"mean": round(statistics.fmean(values), 1), "median": statistics.median(values)} if values else {}


def unique_trigrams(texts: list[str]) -> tuple[int, float]:
    """The number of distinct word trigrams over `texts` (BAFT Fig. 3 counts these at equal numbers of rows),
    and their share of all trigrams (1.0: nothing repeats; it falls as texts get longer, so longer data can
    look less diverse by the share while holding more distinct trigrams)."""
    seen, total = set(), 0
    for text in texts:
        grams = ngrams(words(text), 3)
        seen.update(grams)
        total += len(grams)
    return len(seen), (round(len(seen) / total, 4) if total else 0.0)


def sample_by_id(rows: list[dict], size: int) -> list[dict]:
    """`size` rows chosen by a hash of their id: the same rows on every run and machine."""
    return sorted(rows, key=lambda r: stable_hash64(str(r.get("id"))))[:size]


def normalized(text: str) -> str:
    return " ".join(words(text.lower()))


class Decontaminator:
    """Finds generated instructions that overlap an evaluation set (module docstring)."""

    def __init__(self, eval_items: list[dict]):
        self.items = eval_items
        self.exact = {normalized(item["instruction"]): item for item in eval_items}
        self.index: dict[tuple, list[int]] = {}
        self.sizes = []
        for number, item in enumerate(eval_items):
            grams = set(ngrams(words(item["instruction"].lower()), DECONTAMINATION_NGRAM))
            self.sizes.append(len(grams))
            for gram in grams:
                self.index.setdefault(gram, []).append(number)

    def match(self, instruction: str) -> tuple[dict, float] | None:
        """The evaluation item `instruction` overlaps and the share of its 5-grams found, or None."""
        if (item := self.exact.get(normalized(instruction))) is not None:
            return item, 1.0
        hits = Counter()
        for gram in set(ngrams(words(instruction.lower()), DECONTAMINATION_NGRAM)):
            for number in self.index.get(gram, ()):
                hits[number] += 1
        best = max(hits, key=lambda n: hits[n] / self.sizes[n], default=None)
        if best is not None and hits[best] / self.sizes[best] >= DECONTAMINATION_SHARE:
            return self.items[best], round(hits[best] / self.sizes[best], 3)
        return None


def data_report(
    rows_by_config: dict[str, list[dict]],
    count=None,
    unit: str = "words",
    eval_items: list[dict] | None = None,
    eval_name: str = "",
    diversity_size: int = 1000,
) -> dict:
    """The report (module docstring) from each config's rows (dicts with the record fields)."""
    count = count or _words
    pairs = {n: rows_by_config[n] for n in PAIR_CONFIGS if rows_by_config.get(n)}
    size = min([diversity_size, *(len(rows) for rows in pairs.values())]) if pairs else 0
    configs = []
    for name, rows in pairs.items():
        sample = sample_by_id(rows, size)
        with_document = [r for r in rows if r.get("document") and r.get("response")]
        response_count, response_share = unique_trigrams([r["response"] for r in sample])
        instruction_count, instruction_share = unique_trigrams([r["instruction"] for r in sample])
        entry = {
            "name": name,
            "rows": len(rows),
            "instruction_length": _summary([count(r["instruction"]) for r in rows]),
            "response_length": _summary([count(r["response"]) for r in rows]),
            "diversity_rows": size,
            "response_unique_trigrams": response_share,
            "instruction_unique_trigrams": instruction_share,
            # BAFT's own measure (Fig. 3): distinct trigrams at equal rows, beside the share
            "response_unique_trigram_count": response_count,
            "instruction_unique_trigram_count": instruction_count,
        }
        if with_document and name != "curated":  # curated responses are the documents themselves
            shares = [grounding(r["response"], r["document"]) for r in with_document]
            entry["source_overlap"] = {"mean": round(statistics.fmean(shares), 3), "median": statistics.median(shares)}
        configs.append(entry)

    candidates = rows_by_config.get("backtranslated") or []
    if "rejected" in rows_by_config:  # a generate output: the curated pairs and the pairs curation rejected
        rejected = [r for r in rows_by_config["rejected"] if r.get("stage") == "curate"]
        scored = [*(rows_by_config.get("curated") or []), *rejected]
    else:  # a build's candidates carry their curation outcome
        scored = [r for r in candidates if r.get("status") in ("kept", "rejected")]
    scores = Counter(str(r["score"]) if r.get("score") is not None else "unparsed" for r in scored)
    report = {"unit": unit, "configs": configs, "scores": dict(sorted(scores.items()))}
    report["methods"] = figure_methods(unit, size)
    if eval_items:
        instructions = {}
        for name in ("backtranslated", "curated", "rewritten", "distilled"):
            for row in rows_by_config.get(name) or []:
                instructions.setdefault(row["id"], row["instruction"])
        finder = Decontaminator(eval_items)
        flagged = []
        for doc_id, instruction in instructions.items():
            if instruction and (found := finder.match(instruction)):
                item, share = found
                flagged.append({"id": doc_id, "instruction": instruction, "eval_id": item.get("id"),
                                "eval_instruction": item["instruction"], "overlap": share})  # fmt: skip
        report["decontamination"] = {
            "eval_set": eval_name,
            "eval_instructions": len(eval_items),
            "checked": len(instructions),
            "flagged": flagged,
        }
        report["methods"]["decontamination"] = (
            f"each generated instruction against the {len(eval_items)} instructions of {eval_name}: flagged when "
            f"equal after lower-casing and dropping punctuation, or holding >= {DECONTAMINATION_SHARE:.0%} of the "
            f"word {DECONTAMINATION_NGRAM}-grams of one (evaluation instructions of {DECONTAMINATION_NGRAM} words "
            "or more)"
        )
    return report


def figure_methods(unit: str, rows_compared: int) -> dict[str, str]:
    """How each figure of the report is computed, worded for this report's unit and sample size."""
    counted = (
        "tokens of the given tokenizer, special tokens aside" if unit == "tokens" else "whitespace-separated words"
    )
    return {
        "lengths": f"mean and median over every row of the instruction's and the response's length in {counted}",
        "distinct trigrams": (
            f"distinct lower-cased word trigrams over the responses (instructions) of {rows_compared} rows per "
            "config, the same rows on every run (the lowest hashes of their ids), as BAFT Fig. 3 counts them at "
            "equal data size; the share in brackets is distinct / all trigrams"
        ),
        "overlap with source": (
            "per row, the share of the response's lower-cased word trigrams found in its source document; mean and "
            "median (not shown for curated rows, whose responses are the documents)"
        ),
        "scores": "curation score of every scored candidate as the curate stage recorded it; unparsed: no score read",
    }


def add_tag_counts(report: dict, counts: dict[str, dict], tagger: str, size: int) -> dict:
    """The tagger's counts per config (`builders/instag_counts.py`) into the report, with how they were computed."""
    for entry in report["configs"]:
        if entry["name"] in counts:
            entry["tags"] = counts[entry["name"]]
    report["methods"]["tags"] = (
        f"{tagger} tagged up to {size} pairs per config (the lowest hashes of their ids) with bft's InsTag-style "
        "prompt (builders/prompts/instag.txt, temperature 0); mean distinct tags per tagged pair (complexity) and "
        "distinct tags over the config; unparsed replies counted apart"
    )
    return report


def add_comparisons(report: dict, comparisons: list) -> dict:
    """The MAUVE comparisons (`mauve_comparison.Comparison`) into the report, with how they were computed."""
    if not comparisons:
        return report
    report["comparisons"] = [c.to_dict() for c in comparisons]
    first = comparisons[0]
    report["methods"]["mauve"] = (
        f"mauve-text on each response's last-token final hidden state from {first.features_model} (texts cut at "
        f"{first.max_tokens} tokens), up to the rows shown of each side picked by a hash of their id, k-means into "
        f"min(rows)/10 buckets (at least 2), seed {first.seed}; 1: alike, near 0: apart (BAFT Table 3)"
    )
    return report


def format_report(report: dict) -> str:
    """The report as plain text for the terminal."""
    unit = report["unit"]
    lines = [
        f"{'config':<10} {'rows':>6}  instr. {unit} (mean/median)  response {unit}  distinct trigrams (share) "
        "resp / instr  overlap"
    ]
    for c in report["configs"]:
        overlap = c.get("source_overlap", {}).get("mean", "-")
        lines.append(
            f"{c['name']:<10} {c['rows']:>6}  {c['instruction_length'].get('mean', '-'):>8} / "
            f"{c['instruction_length'].get('median', '-'):<12} {c['response_length'].get('mean', '-'):>7} / "
            f"{c['response_length'].get('median', '-'):<8} {c['response_unique_trigram_count']} "
            f"({c['response_unique_trigrams']:.3f}) / {c['instruction_unique_trigram_count']} "
            f"({c['instruction_unique_trigrams']:.3f}) at {c['diversity_rows']} rows   {overlap}"
        )
    if report["scores"]:
        lines.append("scores: " + ", ".join(f"{k}: {v}" for k, v in report["scores"].items()))
    decon = report.get("decontamination")
    if decon:
        lines.append(
            f"decontamination against {decon['eval_set']} ({decon['eval_instructions']} instructions): "
            f"{len(decon['flagged'])} of {decon['checked']} generated instructions flagged"
        )
        lines += [f"  {f['id']}: {f['instruction']!r} ~ {f['eval_id']} ({f['overlap']})" for f in decon["flagged"][:20]]
    for c in report["configs"]:
        if tags := c.get("tags"):
            lines.append(
                f"tags {c['name']}: {tags['mean_tags']} per pair, {tags['distinct_tags']} distinct, "
                f"{tags['tagged']} of {tags['pairs']} pairs tagged ({tags['unparsed']} unparsed)"
            )
    for c in report.get("comparisons", []):
        lines.append(f"MAUVE {c['p']} vs {c['q']}: {c['mauve']:.4f} ({c['p_rows']} vs {c['q_rows']} responses)")
    lines.append("how each figure was computed:")
    lines += [f"  {name}: {how}" for name, how in report.get("methods", {}).items()]
    return "\n".join(lines)


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def length_counter(tokenizer: str | None):
    """(unit, function counting a text's length): tokens of `tokenizer` when given, else words."""
    if not tokenizer:
        return "words", _words
    from transformers import AutoTokenizer  # heavy: only when lengths are counted in tokens

    try:
        loaded = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--tokenizer {tokenizer}: cannot be loaded ({str(error).splitlines()[0]})") from None
    return "tokens", lambda text: len(loaded(text, add_special_tokens=False)["input_ids"]) if text else 0


def dataset_rows(folder: Path) -> dict[str, list[dict]]:
    """Every pair config (and the candidates) of a generate output or build folder, as row dicts."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    names = config_names(folder)
    wanted = [n for n in ("backtranslated", "curated", "rewritten", "distilled", "seed", "rejected") if n in names]
    if not set(wanted) - {"rejected"}:
        raise ConfigError(f"{folder} has none of the configs backtranslated/curated/rewritten/distilled/seed")
    rows = {}
    for name in wanted:
        try:
            rows[name] = datasets.load_dataset(str(folder), name, split="train").to_list()
        except ValueError as error:  # `datasets` cannot read an empty config back
            if "corresponds to no data" not in str(error):
                raise
            rows[name] = []
    if not (folder / FACTS_FILE).is_file():  # a generate output: a `rejected` config left unwritten held none
        rows.setdefault("rejected", [])
    return rows
