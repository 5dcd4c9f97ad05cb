"""Training data for `bft train`: load each source, turn it into prompt/completion rows, check, mix.

Everything here runs before a model is loaded, so bad input (a missing column, an empty dataset, an
empty completion) stops the run in seconds with a message naming the source and the row, instead of
after minutes of model loading or mid-training.

Rows are TRL's *conversational* prompt/completion: `prompt` a list of messages ending with the user
turn, `completion` the assistant turn. The SFT trainer then computes the loss on completion tokens only
(`completion_only_loss`), as both papers train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from bft.builders.sources import load_table
from bft.generation.errors import ConfigError
from bft.generation.method.tags import reversed_row, sft_row
from bft.training.config import DataArguments, DataSource

PAIR_COLUMNS = ("instruction", "response")
CHAT_COLUMNS = ("prompt", "completion")
ROLES = {"system", "user", "assistant"}


@dataclass
class SourceSummary:
    """What one source gave the mixture; printed at start and written on the model card."""

    label: str
    path: str
    name: str | None
    revision: str | None
    commit: str | None  # the Hub commit a revision resolved to, when the source is on the Hub
    rows: int  # rows loaded
    used: int  # rows in the mixture (fewer when fractions cap it)
    kind: str  # prompt/completion, pairs tagged S_a/S_w, untagged pairs, reversed pairs


def load_source(source: DataSource, recipe_dir: Path | None) -> tuple[datasets.Dataset, str | None]:
    """Load one source's rows as a `datasets.Dataset`; also returns the Hub commit it resolved to."""
    dataset, commit = load_table(
        source.path,
        label=source.label,
        name=source.name,
        split=source.split,
        revision=source.revision,
        data_dir=source.data_dir,
        data_files=source.data_files,
        search_dirs=[Path.cwd(), recipe_dir],
        empty_note="; nothing to train on",
    )
    if source.columns is not None:
        missing = sorted(set(source.columns) - set(dataset.column_names))
        if missing:
            raise ConfigError(f"dataset {source.label}: `columns` names {missing}, not in {dataset.column_names}")
        dataset = dataset.select_columns(source.columns)
    return dataset, commit


def row_label(row: dict, index: int) -> str:
    return f"row {index}" + (f" (id {row['id']!r})" if row.get("id") not in (None, "") else "")


def check_messages(messages, what: str, where: str) -> list[dict]:
    """The messages of a prompt or completion, reduced to role/content, or a ConfigError naming the row."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError(
            f"{where}: `{what}` must be a non-empty list of {{role, content}} messages (conversational rows), "
            f"got {type(messages).__name__}"
        )
    clean = []
    for message in messages:
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise ConfigError(f"{where}: `{what}` has a message that is not {{role: system|user|assistant, content}}")
        clean.append({"role": message["role"], "content": message["content"]})
    return clean


def to_chat_row(row: dict, index: int, source: DataSource, placement: str) -> dict:
    """One source row as a checked conversational prompt/completion row."""
    where = f"dataset {source.label}, {row_label(row, index)}"
    if all(c in row for c in CHAT_COLUMNS):
        if source.tag or source.reverse:
            raise ConfigError(
                f"dataset {source.label}: `tag`/`reverse` apply to instruction/response rows; these rows are "
                "prompt/completion already (a bft build's sft config is tagged at build time)"
            )
        prompt = check_messages(row["prompt"], "prompt", where)
        completion = check_messages(row["completion"], "completion", where)
    else:
        instruction, response = row.get("instruction"), row.get("response")
        for name, value in (("instruction", instruction), ("response", response)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: `{name}` is empty or not text")
        doc_id = str(row.get("id") or index)
        if source.reverse:
            made = reversed_row({"id": doc_id, "instruction": instruction, "response": response})
        elif source.tag:
            made = sft_row(doc_id, source.tag, instruction, response, placement)
        else:
            made = {
                "prompt": [{"role": "user", "content": instruction}],
                "completion": [{"role": "assistant", "content": response}],
            }
        prompt, completion = made["prompt"], made["completion"]
    if prompt[-1]["role"] != "user":
        raise ConfigError(f"{where}: the prompt must end with a user turn, not {prompt[-1]['role']!r}")
    if [m["role"] for m in completion] != ["assistant"] or not completion[0]["content"].strip():
        raise ConfigError(f"{where}: the completion must be one non-empty assistant turn")
    return {"prompt": prompt, "completion": completion}


def source_kind(source: DataSource, columns: list[str]) -> str:
    if all(c in columns for c in CHAT_COLUMNS):
        return "prompt/completion"
    if source.reverse:
        return "reversed pairs (backward model)"
    return f"pairs tagged {source.tag}" if source.tag else "untagged pairs"


def convert(dataset: datasets.Dataset, source: DataSource, placement: str) -> datasets.Dataset:
    """Check a loaded source and turn it into conversational prompt/completion rows."""
    columns = dataset.column_names
    if not all(c in columns for c in CHAT_COLUMNS) and not all(c in columns for c in PAIR_COLUMNS):
        raise ConfigError(
            f"dataset {source.label}: missing columns: training rows need `prompt` and `completion` "
            f"(conversational) or `instruction` and `response`; it has {columns}"
        )
    if len(dataset) == 0:
        raise ConfigError(f"dataset {source.label} is empty (split {source.split!r}); nothing to train on")
    rows = [to_chat_row(row, index, source, placement) for index, row in enumerate(dataset)]
    return datasets.Dataset.from_list(rows)


def mixture_sizes(sizes: list[int], fractions: list[float | None]) -> list[int]:
    """Rows taken from each source: all of them, or TRL's fraction rule (largest mixture, none oversampled)."""
    if all(f is None for f in fractions):
        return list(sizes)
    if any(f is None for f in fractions):
        raise ConfigError("`fraction` must be set on every dataset of the mixture or on none")
    weights = [f / sum(fractions) for f in fractions]
    total = min(size / weight for size, weight in zip(sizes, weights, strict=True))
    return [round(weight * total) for weight in weights]


def load_training_data(
    args: DataArguments, recipe_dir: Path | None = None
) -> tuple[datasets.DatasetDict, list[SourceSummary]]:
    """All sources loaded, checked, converted and mixed: a DatasetDict with `train` (and `test` if asked)."""
    if not args.datasets:
        raise ConfigError("no training data: give `datasets:` (a mixture) or `dataset_name`")
    parts, summaries = [], []
    for source in args.datasets:
        raw, commit = load_source(source, recipe_dir)
        kind = source_kind(source, raw.column_names)
        parts.append(convert(raw, source, args.tag_placement))
        summaries.append(
            SourceSummary(source.label, source.path, source.name, source.revision, commit, len(raw), len(raw), kind)
        )
    sizes = mixture_sizes([len(p) for p in parts], [s.fraction for s in args.datasets])
    for summary, size in zip(summaries, sizes, strict=True):
        summary.used = size
    mixed = datasets.concatenate_datasets([part.select(range(size)) for part, size in zip(parts, sizes, strict=True)])
    if len(mixed) == 0:
        raise ConfigError("the mixture has no rows; check the fractions")
    if args.test_split_size:
        return mixed.train_test_split(test_size=args.test_split_size, seed=0), summaries
    return datasets.DatasetDict({"train": mixed}), summaries
