"""Each stage's model served in turn on the same GPUs (`serve.order: in_turn`, `bft generate --serve-in-turn`).

BAFT's backward model, scorer and rewriter need not fit the GPUs at once: the run is cut into turns, each a run of
consecutive stages served by the same servers (`serving_turns`; a stage with endpoints of its own goes with the
turn it falls in). A turn starts its servers only (`RunServers(only=...)`, every GPU theirs), runs the engine over
every document with the stages up to its last one, and stops them before the next turn starts. The journals
carry each document from one turn to the next, as they carry it from one run to the next: turn 2 resumes every
document kept by turn 1 at its next stage.

Within a turn, only its own stages are sent to: a document whose outcome at an earlier turn's stage is to be
sent again (a transient failure with `retry_failed`) waits for the next run of the command, which serves that
turn again (`next_stages`). A turn with nothing to send is skipped, its servers not started: rerunning a run
cut short in its third turn starts only the third turn's servers.

The stats are each stage's own turn's (its requests, tokens and time), prepare's as every turn counts them;
`stats.json` `servers` says for each server the stages it served, its start-up and work seconds
(`serving`).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bft.generation.config import GenerateConfig
from bft.generation.endpoints.client import Endpoint
from bft.generation.layout import PREPARE, journal_dir
from bft.generation.records import KEPT, Rejected
from bft.generation.run.engine import Engine
from bft.generation.run.finishing import RunSummary, finish_run
from bft.generation.run.inputs import input_items
from bft.generation.run.journal import Journal
from bft.generation.run.local import run_engine
from bft.generation.run.resume import latest_entries, sent_again
from bft.generation.run.servers import RunServers, ServeSpec, served_stages
from bft.generation.run.stages import build_stages
from bft.generation.run.stats import RunStats


@dataclass(frozen=True)
class ServedBefore:
    """What the card says of a stage no turn of this run sent to (an earlier run of the command served it)."""

    model_id: str | None
    server_kind: str | None


def serving_turns(stages: list[str], served: dict[str, ServeSpec]) -> list[list[str]]:
    """The run's stages cut where the served model changes: consecutive stages served alike form one turn, and
    a stage bft does not serve goes with the turn it falls in."""
    turns: list[list[str]] = []
    spec: ServeSpec | None = None
    for name in stages:
        own = served.get(name)
        if turns and (own is None or spec is None or own == spec):
            turns[-1].append(name)
            spec = spec or own
        else:
            turns.append([name])
            spec = own
    return turns


def outcomes(out: Path, stages: list[str], retry_failed: bool) -> dict[str, dict[str, bool]]:
    """Per stage, each document with a finished outcome there (not one to send again): whether it was kept."""
    found = {}
    for name in stages:
        latest = latest_entries(Journal(journal_dir(out) / f"{name}.jsonl"))
        found[name] = {
            doc_id: status == KEPT
            for doc_id, (_, status, reason) in latest.items()
            if not sent_again(status, reason, retry_failed)
        }
    return found


def next_stages(doc_id: str, stages: list[str], done: dict[str, dict[str, bool]]) -> str | None:
    """The stage a document goes to next, as the engine decides it from the journals; None when it is finished
    (rejected somewhere, or through every stage)."""
    for name in stages:
        if doc_id not in done[name]:
            return name
        if not done[name][doc_id]:
            return None
    return None


class TurnItems:
    """The run's input items for one turn: those whose next stage is an earlier turn's are held back (and
    counted, so that prepare's counts stay those of the whole input)."""

    def __init__(self, items: Iterable, stages: list[str], earlier: set[str], done: dict[str, dict[str, bool]]):
        self.items, self.stages, self.earlier, self.done = items, stages, earlier, done
        self.held = 0

    def __iter__(self) -> Iterator:
        for item in self.items:
            if not isinstance(item, Rejected) and next_stages(item.id, self.stages, self.done) in self.earlier:
                self.held += 1
                continue
            yield item


def has_work(config: GenerateConfig, turn: list[str]) -> bool:
    """Whether any document's next stage is one of `turn`'s (a pass over the input, nothing sent)."""
    upto = config.stages[: config.stages.index(turn[-1]) + 1]
    done = outcomes(Path(config.out), [PREPARE, *upto], config.retry_failed)
    return any(
        next_stages(item.id, upto, done) in turn
        for item in input_items(config, build_stages(config))
        if not isinstance(item, Rejected) and item.id not in done[PREPARE]  # (prepare journals its rejections)
    )


def generate_in_turn(config: GenerateConfig, progress: bool, log: Callable[[str], None]) -> tuple[RunSummary, dict]:
    """Run the stages turn by turn, each turn's servers started before it and stopped after it; write the output
    folder from the journals; return the summary and the `servers` entry of `stats.json`."""
    out = Path(config.out)
    served = served_stages(config)
    turns = serving_turns(config.stages, served)
    ran: dict[str, RunStats] = {}  # each stage's stats, from its own turn
    first_endpoints: dict[str, Endpoint] = {}
    facts: dict[str, dict] = {}
    wall = 0.0
    for turn in turns:
        if not has_work(config, turn):
            log(f"bft generate: {', '.join(turn)}: every document is through; its servers are not started")
            continue
        with RunServers(config, out, log=log, only=turn, served=served) as servers:
            stats, endpoints = asyncio.run(run_turn(config, turn, progress))
        add_facts(facts, servers.facts())
        wall += stats.wall_seconds
        for name in [PREPARE, *turn]:
            ran[name] = stats
        first_endpoints.update(endpoints)
    stages = build_stages(config)
    whole = journal_counts(config, stages)
    for name, stats in ran.items():
        whole.stages[name] = stats.stages[name]
        whole.endpoints.update(stats.endpoints)
    whole.wall_seconds = wall
    for stage in stages:  # a stage served by an earlier run of the command: its model as this run would serve it
        spec = served.get(stage.name)
        model = stage.config.model or (spec.served_name if spec else None)
        first_endpoints.setdefault(stage.name, ServedBefore(model, spec.engine if spec else None))
    return finish_run(config, whole, stages, first_endpoints), facts


async def run_turn(config: GenerateConfig, turn: list[str], progress: bool) -> tuple[RunStats, dict[str, Endpoint]]:
    """The engine over every document with the stages up to the turn's last, sending to the turn's only (as the
    local executor sends: `local.run_engine`, batch senders for `send: batch` stages)."""
    upto = copy.copy(config)
    upto.stages = config.stages[: config.stages.index(turn[-1]) + 1]
    stages = build_stages(upto)
    earlier = set(upto.stages) - set(turn)
    done = outcomes(Path(config.out), upto.stages, config.retry_failed)
    items = TurnItems(input_items(config, build_stages(config)), upto.stages, earlier, done)
    sending = [stage for stage in stages if stage.name in turn]
    stats, sent_by = await run_engine(upto, stages, items, progress, sending)
    stats.stages[PREPARE].entered += items.held  # (held back here, passed by prepare all the same)
    stats.stages[PREPARE].kept += items.held
    return stats, sent_by


def journal_counts(config: GenerateConfig, stages) -> RunStats:
    """Every stage's outcomes as its journal holds them (a stage no turn of this run sent to)."""
    engine = Engine.for_run(config, stages, {}, journal_dir(Path(config.out)), False)
    asyncio.run(engine.run(iter(())))
    return engine.run_stats()


def add_facts(facts: dict[str, dict], turn: dict[str, dict]) -> None:
    """One turn's servers into the run's `servers` entry: a server served again in a later turn adds its
    serving time there (its replicas are those of its first turn)."""
    for name, server in turn.items():
        if name in facts:
            facts[name]["serving"] += server["serving"]
            facts[name]["gpu_hours"] = round(facts[name]["gpu_hours"] + server["gpu_hours"], 4)
        else:
            facts[name] = server
