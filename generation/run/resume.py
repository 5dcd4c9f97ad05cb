"""Resume: what an earlier run in an output folder finished, what it left to do, and whether it may go on.

The journals (`journal.py`) are the only record of work done: each stage's latest line for a document is
its outcome there. Everything a rerun decides from them is decided here, for both executors:

- **what is finished, what is pending** (`read_journals`): the ids the engine skips at each stage, and the
  kept records whose next stage has not run yet, found again by byte offset. A transient failure
  (`request_failed`, its retries used up) is not a verdict while `retry_failed` is set: the document is
  sent again (`sent_again`);
- **whether a folder may be resumed with this config** (`check_resumable`): the same settings resume;
  other settings (`differing_settings`, operational keys such as endpoints aside) set the earlier run aside
  under `.bft/earlier/TIME/` (`set_aside`) and start afresh, the request cache answering what did not
  change; a start that journaled nothing (`finished_anything`) binds nothing;
- **whether the whole run is finished** (`record_finished`, `finished_outputs`): the last run wrote its
  outputs and then `.bft/finished.json`, no journal changed since, and every item the run reads has its
  outcome, so a rerun prints the summary with no server started and no request sent. A corpus that grew,
  a larger `--limit` or one stage more is not finished: the run goes on as usual;
- **Ray's blocks** (`finished_block`, `record_block_done`, `check_files`): a block whose `done.json` names
  the same stages and records is skipped (unless it lost documents to transient failures), a block cut
  short resumes from its own journals, and a corpus whose file list changed is refused (blocks are named
  by file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from bft.generation.config import ALL_STAGES, GenerateConfig
from bft.generation.config.files import load_config
from bft.generation.corpus.blocks import BlockWork
from bft.generation.errors import ConfigError
from bft.generation.layout import PREPARE, RUN_CONFIG_FILE, blocks_dir, earlier_runs_dir, journal_dir
from bft.generation.reasons import TRANSIENT_REASONS
from bft.generation.records import KEPT, REJECTED
from bft.generation.run.journal import Journal
from bft.generation.run.stats import StageStats

FINISHED_FILE = "finished.json"  # under OUT/.bft/
DONE_FILE = "done.json"  # under OUT/.bft/blocks/KEY/: a Ray block finished
FILES_RECORD = "ray-files.json"  # under OUT/.bft/: the corpus files a Ray run's blocks are named after
# Keys that may change between a run and its resumption without changing what the data means.
# `stages` may grow: a later run goes on with the next stage from the earlier one's journals.
OPERATIONAL_KEYS = {
    "endpoints",
    "out",
    "stages",
    "request_timeout",
    "stream",
    "max_retries",
    "retry_failed",
    "token_env",
    "note",
    "dead_after",
    "probe_interval",
    "endpoints_down_timeout",
    "cache",  # where replies come from does not change them (a cached reply is the reply a server gave)
}
# The keys of a `serve` setting that say how its servers run, not which model answers (engine, model, name and
# the engine's arguments do).
SERVE_OPERATIONAL_KEYS = ("python", "replicas", "startup_timeout", "max_restarts", "order")


# -- what is finished, what is pending --------------------------------------------------------------


def sent_again(status: str | None, reason: str | None, retry_failed: bool) -> bool:
    """Whether a document's outcome at a stage is no verdict and this run sends it again: a transient failure
    (`request_failed`, its retries used up) while `retry_failed` is set."""
    return retry_failed and status == REJECTED and reason in TRANSIENT_REASONS


def latest_entries(journal: Journal) -> dict[str, tuple[int, str, str | None]]:
    """Each document's latest line in `journal` (its outcome at that stage): (byte offset, status, reason)."""
    latest: dict[str, tuple[int, str, str | None]] = {}
    for offset, entry in journal.entries():
        latest[entry["id"]] = (offset, entry["status"], entry.get("reason"))
    return latest


def read_journals(
    journals: dict[str, Journal], stats: dict[str, StageStats], retry_failed: bool
) -> tuple[dict[str, set[str]], dict[str, tuple[str, int]]]:
    """Ids finished per stage, and where the kept records whose next stage has not run yet are.

    `journals` are prepare's and each stage's, in run order; each is repaired first (a torn last line cut).
    Finished outcomes are counted into `stats` (`resumed`), documents sent again too
    (`retried_from_previous_run`); the journal keeps every attempt's entry, and the output the latest.
    Only (journal, byte offset) pairs stay in memory; a record is read back when its turn comes.
    """
    names = list(journals)
    done: dict[str, set[str]] = {}
    kept_offsets: dict[str, dict[str, int]] = {}
    for name in names:
        journal = journals[name]
        journal.repair()
        done[name], kept_offsets[name] = set(), {}
        counts = stats[name]
        for doc_id, (offset, status, reason) in latest_entries(journal).items():
            if sent_again(status, reason, retry_failed):
                counts.retried_from_previous_run += 1
                continue
            done[name].add(doc_id)
            counts.count_outcome(status, reason)
            counts.resumed += 1
            if status == KEPT:
                kept_offsets[name][doc_id] = offset
    pending: dict[str, tuple[str, int]] = {}
    for previous, current in zip(names[1:], names[2:], strict=False):
        for doc_id, offset in kept_offsets[previous].items():
            if doc_id not in done[current]:
                pending[doc_id] = (previous, offset)
    return done, pending


# -- whether a folder may be resumed with this config -----------------------------------------------


def _meaning(config: GenerateConfig) -> dict:
    data = config.to_dict()
    for key in OPERATIONAL_KEYS:
        data.pop(key, None)
    data["corpus"].pop("limit", None)
    for key in ("address", "actors", "actor_cpus"):  # where and how wide a Ray run goes, not what it makes
        data["ray"].pop(key, None)
    for stage in ALL_STAGES:
        data.setdefault(stage, {}).pop("endpoints", None)
        data[stage].pop("max_concurrency", None)
        # how requests go out (live or by batch, polled how often) and what they cost change no reply: a rerun
        # that changes them resumes (and finds its pending batches) instead of setting the folder aside
        for key in ("send", "batch", "price"):
            data[stage].pop(key, None)
    for serve in (data.get("serve"), *(data[stage].get("serve") for stage in ALL_STAGES)):
        for key in SERVE_OPERATIONAL_KEYS if isinstance(serve, dict) else ():
            serve.pop(key, None)
    for stage in ALL_STAGES:  # a stage's own serve that sets only how its servers run is none at all
        if isinstance(data[stage].get("serve"), dict) and not any(data[stage]["serve"].values()):
            data[stage]["serve"] = None
    return data


def _flat(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    flat = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return flat


def differing_settings(old: GenerateConfig, new: GenerateConfig, shown: int = 8) -> list[str]:
    """The settings two runs differ in (those that change what a run makes), as `key: old -> new`."""
    before, after = _flat(_meaning(old)), _flat(_meaning(new))
    keys = [key for key in dict.fromkeys([*before, *after]) if before.get(key) != after.get(key)]
    lines = [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in keys[:shown]]
    return lines + ([f"... and {len(keys) - shown} more"] if len(keys) > shown else [])


def finished_anything(out: Path) -> bool:
    """Whether an earlier run in `out` journaled any record (a start that failed before did not)."""
    folder = journal_dir(out)
    return folder.is_dir() and any(path.stat().st_size for path in folder.rglob("*.jsonl"))


def check_resumable(out: Path, config: GenerateConfig) -> tuple[Path, list[str]] | None:
    """Never mix two different runs in one folder. The same settings resume. Other settings take the folder:
    the earlier run's files are set aside under `.bft/earlier/TIME/` (nothing is lost) and the run starts
    afresh, the request cache answering every request whose inputs did not change; returns (where they went,
    the settings that differ). A start that failed before finishing any record (a wrong endpoint, say) binds
    nothing: the corrected command runs."""
    previous = out / RUN_CONFIG_FILE
    if not previous.exists():
        if out.exists() and any(out.iterdir()) and not (out / ".bft").is_dir():
            raise ConfigError(f"--out {out} exists and is not a bft output folder; choose an empty or new folder")
        return None
    if not finished_anything(out):
        return None
    try:
        old = load_config(previous)
    except ConfigError as error:
        raise ConfigError(f"{previous} cannot be read to resume: {error}") from None
    differences = differing_settings(old, config)
    return (set_aside(out), differences) if differences else None


def set_aside(out: Path) -> Path:
    """Move everything an earlier run wrote in `out` (its data, card, stats, journals) to `.bft/earlier/TIME/`,
    keeping its layout there; earlier runs set aside before stay where they are."""
    earlier = earlier_runs_dir(out)
    target = earlier / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    while target.exists():  # two changes within a second
        target = target.with_name(target.name + "-1")
    (target / ".bft").mkdir(parents=True)
    for path in list(out.iterdir()):
        if path.name != ".bft":
            path.rename(target / path.name)
    for path in list((out / ".bft").iterdir()):
        if path != earlier:
            path.rename(target / ".bft" / path.name)
    return target


# -- whether the whole run is finished --------------------------------------------------------------


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
            for doc_id, (_, status, reason) in latest_entries(Journal(path)).items():
                outcomes[path.stem][doc_id] = (status, reason)
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
    """Whether the document has its outcome: rejected by a stage, or kept by every one (as `read_journals`
    decides what the engine skips)."""
    for stage in config.stages:
        status, reason = outcomes[stage].get(doc_id, (None, None))
        if status is None or sent_again(status, reason, config.retry_failed):
            return False
        if status != KEPT:
            return True
    return True


# -- Ray's blocks -----------------------------------------------------------------------------------


def record_block_done(folder: Path, done: dict) -> None:
    """Mark a Ray block finished: its `done.json` (stages, records, stats, its actor's endpoint limits), last."""
    temporary = folder / (DONE_FILE + ".tmp")
    temporary.write_text(json.dumps(done), encoding="utf-8")
    temporary.replace(folder / DONE_FILE)


def finished_block(folder: Path, config: GenerateConfig, work: BlockWork) -> dict | None:
    """A block's `done.json` when an earlier run finished it for these stages and records, else None."""
    try:
        done = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if done.get("stages") != list(config.stages) or done.get("rows") != work.rows:
        return None
    lost = (s["rejected_by_reason"].get(reason) for s in done["stats"].values() for reason in TRANSIENT_REASONS)
    if config.retry_failed and any(lost):
        return None  # run it again: its engine sends the documents lost to transient failures once more
    return done


def check_files(out: Path, files: list[str]) -> None:
    """Blocks are named by file index: refuse to resume over a corpus whose file list changed."""
    record = out / ".bft" / FILES_RECORD
    if record.exists():
        earlier = json.loads(record.read_text(encoding="utf-8"))
        if earlier != files:
            raise ConfigError(
                f"{out} was started on a corpus of {len(earlier)} files and it now has {len(files)} "
                f"(or other names, see {record}); blocks are named by file, so resume over the same files "
                "or use a new --out"
            )
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(files, indent=1) + "\n", encoding="utf-8")
