"""What a run reads: the corpus through the prepare rules, an earlier output's pool, or an instruction set.

`input_items` is the one answer, for the engine, the finished-run check and the executors: a run that starts
with backtranslation reads the corpus (`corpus/stream.py`, with prepare's context check,
`method/fitting.py`); one that starts with `curate` or `distill` reads an earlier `bft generate` output's
pool, or (`distill`) any instruction set.

Humpback's iteration: curate the same instruction pool again with the next model.

Instructions are generated once; each later round re-scores the pool with a better model (M_1, ...):

    bft generate round1/ --out round2/ --stages curate --endpoint http://m1:8080

A run whose first stage is `curate` reads its records from an earlier `bft generate` output (its
`backtranslated` config: the pool), not from a corpus, and sends no backtranslation request. Each record
keeps its id, instruction, document and provenance, and gets the flag `previous_score:N` (or
`previous_score:none` when the earlier round could not parse a score, `previous_score:not_curated` when
it did not curate), so each round's score stands beside the earlier one. Point every round at the same
pool folder; each round's output folder holds that round's scores.

BAFT's instruction-quality comparison (Fig. 2) has one teacher answer instructions from several sources.
A run that starts with `distill` reads the curated pairs of a bft output folder, or **any instruction set**:
a JSON/JSONL/Parquet file or folder, or a Hub dataset (Alpaca's, ShareGPT's first turns, ...), whose
column `--text-field` (corpus.text_field) holds the instruction. Its records go through the corpus reader
(ids, duplicates, invalid text as for documents: nothing is dropped silently) and enter `distill` with no
document, so the distilled rows carry the instruction, the answer and the record's id.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from bft.generation.config import GenerateConfig
from bft.generation.config.files import load_config
from bft.generation.corpus.stream import corpus_documents, corpus_records
from bft.generation.errors import ConfigError
from bft.generation.layout import PREPARE, RUN_CONFIG_FILE, config_file, read_rows
from bft.generation.method.fitting import context_check
from bft.generation.method.stages import Stage
from bft.generation.records import KEPT, Document, Rejected, StageRecord

POOL_OF = {"curate": "backtranslated", "distill": "curated"}  # first stage -> the config it reads


def input_items(config: GenerateConfig, stages: list[Stage] | None = None):
    """What the run's first stage reads, in order: an instruction set (`distill`), an earlier output's pool
    (`curate`, `distill`), or the corpus through the prepare rules (with the context check of `stages`)."""
    corpus, first = config.corpus, config.stages[0]
    if reads_instruction_set(config):  # distill over any instruction set
        return read_instruction_set(config)
    if first in ("curate", "distill"):  # an earlier output's pool: re-scored, or its pairs distilled
        return read_pool(Path(corpus.path), corpus.limit, first)
    return corpus_documents(config, context_check(config, stages) if stages is not None else None)


def reads_instruction_set(config: GenerateConfig) -> bool:
    """A distill-first run over something that is not a `bft generate` output folder."""
    folder = Path(config.corpus.path)
    is_output = folder.is_dir() and ((folder / RUN_CONFIG_FILE).is_file() or config_file(folder, "curated"))
    return config.stages[0] == "distill" and not is_output


def read_instruction_set(config: GenerateConfig) -> Iterator[StageRecord | Rejected]:
    """The instruction set's records, ready for `distill` (module docstring); unusable ones as `Rejected`."""
    rows = corpus_records(config)
    for item in rows:
        yield _instruction_record(item) if isinstance(item, Document) else item


def _instruction_record(item: Document) -> StageRecord:
    return StageRecord(
        id=item.id,
        stage=PREPARE,
        status=KEPT,
        document="",
        position=item.position,
        input_location=item.location,
        url=item.url,
        source=item.source,
        instruction=item.text.strip(),
        flags=list(item.flags),
    )


def pool_file(folder: Path, first_stage: str = "curate") -> Path:
    config = POOL_OF[first_stage]
    pool = config_file(folder, config) if folder.is_dir() else None
    if pool is None:
        raise ConfigError(
            f"{folder}: a run that starts with {first_stage} reads the {config}/ config of an earlier "
            f"`bft generate` output folder (a run that starts with curate re-scores the instruction pool), "
            "and there is none here"
        )
    return pool


def pool_size(folder: Path, limit: int | None = None, first_stage: str = "curate") -> int:
    rows = pq.ParquetFile(pool_file(folder, first_stage)).metadata.num_rows
    return min(rows, limit) if limit is not None else rows


def read_pool(folder: Path, limit: int | None = None, first_stage: str = "curate") -> Iterator[StageRecord]:
    """The pool's records, ready for `first_stage`, with the earlier round's score as a flag.

    `distill` reads the curated pairs instead (BAFT's filtering + distilling); their score is kept.
    """
    pool = pool_file(folder, first_stage)
    if first_stage == "distill":
        for position, row in enumerate(read_rows(pool)):
            if limit is not None and position >= limit:
                return
            yield StageRecord.from_dict({**row, "position": position})
        return
    previous: dict[str, int | None] = {row["id"]: row["score"] for row in read_rows(config_file(folder, "curated"))}
    for row in read_rows(config_file(folder, "rejected")):
        if row["stage"] == "curate":
            previous[row["id"]] = row["score"]
    for position, row in enumerate(read_rows(pool)):
        if limit is not None and position >= limit:
            return
        score = previous.get(row["id"], "not_curated")
        record = StageRecord.from_dict({**row, "position": position})
        record.flags = [*record.flags, f"previous_score:{'none' if score is None else score}"]
        record.score = record.expected_score = record.mean_score = record.grounding = None
        yield record


# What a round that re-scores a pool keeps of the round that made it: how it scored, not where or with what
# (nor the servers bft started for it).
NOT_INHERITED = {"endpoints", "model", "max_concurrency", "serve"}


def scoring_rule_of_the_pool(config: GenerateConfig, overrides: dict) -> GenerateConfig:
    """A curate-first run over an earlier output scores by that output's rule (score mode, threshold,
    mode, prompt format, prefill, sampling, samples) unless a --config says otherwise; flags still win.

    Humpback's second round must score as the first did; run without its config, it would silently
    change the rule (for example from an expected score >= 4.5 on raw prompts to a written 5 on chat).
    """
    earlier = Path(config.corpus.path) / RUN_CONFIG_FILE
    if not earlier.is_file():
        return config
    pool = dataclasses.asdict(load_config(earlier).curate)
    inherited = {f"curate.{key}": value for key, value in pool.items() if key not in NOT_INHERITED}
    print(
        f"bft generate: scoring the pool by its own rule ({earlier}: curate score_mode {pool.get('score_mode')}, "
        f"min_score {pool.get('min_score')}, mode {pool.get('mode')}); pass --config to score otherwise",
        file=sys.stderr,
    )
    return load_config(None, {**inherited, **overrides})
