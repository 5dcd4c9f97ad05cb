"""Whether a run in an output folder is finished, so that running it again prints its summary and sends nothing.

A rerun of a finished run has nothing to ask: it needs no server started (the embedded one takes a minute
to load) and no endpoint answering. The run is finished when:

- the last run in the folder wrote all its outputs (stats, parquet configs, card) and then the record
  `OUT/.bft/finished.json` (`record_finished`), naming its stages, the rows per config and each journal's
  size, and no journal has changed since (nothing was journaled after the outputs were written);
- every item the run reads (the corpus through the prepare rules, an earlier output's pool or an
  instruction set, within `--limit`) has its outcome in the journals: rejected by prepare, or taken through
  the stages until one rejected it or the last kept it, as `Engine.run` decides what it skips (a transient
  failure, `request_failed`, is not an outcome while `retry_failed` is set).

A corpus that grew, a larger `--limit` or one stage more is not finished: the run goes on as usual.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from bft.generation.config import GenerateConfig
from bft.generation.layout import PREPARE, blocks_dir, journal_dir
from bft.generation.reasons import TRANSIENT_REASONS
from bft.generation.records import KEPT
from bft.generation.run.journal import Journal

FINISHED_FILE = "finished.json"  # under OUT/.bft/


def finished_file(out: Path) -> Path:
    return out / ".bft" / FINISHED_FILE


def journal_files(out: Path) -> list[Path]:
    """Every journal of the folder: the local executor's, and each Ray block's."""
    return sorted([*journal_dir(out).glob("*.jsonl"), *blocks_dir(out).glob("*/journal/*.jsonl")])


def journal_sizes(out: Path) -> dict[str, int]:
    return {str(path.relative_to(out)): path.stat().st_size for path in journal_files(out)}


def record_finished(out: Path, stages: list[str], counts: dict[str, int], empty: dict[str, str]) -> None:
    """Say that the run's outputs are all written, from the journals as they are now (written last)."""
    record = {"stages": list(stages), "counts": counts, "empty": empty, "journals": journal_sizes(out)}
    path = finished_file(out)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)


def latest_outcomes(out: Path, names: list[str]) -> dict[str, dict[str, tuple[str, str | None]]]:
    """Each stage's latest (status, reason) per document id, over every journal of the folder."""
    outcomes: dict[str, dict[str, tuple[str, str | None]]] = {name: {} for name in names}
    for path in journal_files(out):
        if path.stem in outcomes:
            for _, entry in Journal(path).entries():
                outcomes[path.stem][entry["id"]] = (entry["status"], entry.get("reason"))
    return outcomes


def finished_outputs(config: GenerateConfig, items: Iterable) -> tuple[dict[str, int], dict[str, str]] | None:
    """The rows per config and the empty configs (with why) of the finished run in `config.out`, or None when
    the run has anything left to do (module docstring). `items` are what the run reads, in order."""
    out = Path(config.out)
    try:
        record = json.loads(finished_file(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("stages") != list(config.stages) or record.get("journals") != journal_sizes(out):
        return None
    outcomes = latest_outcomes(out, [PREPARE, *config.stages])
    for item in items:
        if item.id not in outcomes[PREPARE] and not through_the_stages(item.id, outcomes, config):
            return None
    return record["counts"], record["empty"]


def through_the_stages(doc_id: str, outcomes: dict, config: GenerateConfig) -> bool:
    """Whether the document has its outcome: rejected by a stage, or kept by every one."""
    for stage in config.stages:
        status, reason = outcomes[stage].get(doc_id, (None, None))
        if status is None or (config.retry_failed and reason in TRANSIENT_REASONS):
            return False
        if status != KEPT:
            return True
    return True
