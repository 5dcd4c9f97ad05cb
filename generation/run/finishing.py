"""Finishing a run: its stats, parquet configs and generation card written from the journals, and the summary.

`finish_run` writes them after the engine (both executors: the Ray executor passes each block's journals),
then the record that they are written (`resume.record_finished`). `finished_run` reads the summary of a run
already finished, so that running it again prints it with no server started and no request sent.
`RunSummary` is what `bft generate` prints; `why_empty` says why a config has no rows (the card and
`bft build` say it too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bft.cards.generation_card import render_generation_card
from bft.generation.config import GenerateConfig
from bft.generation.endpoints.client import Endpoint
from bft.generation.layout import OUTPUT_CONFIG_NAMES, REJECTED_CONFIG, dataset_configs, main_config
from bft.generation.method.stages import Stage
from bft.generation.run.inputs import input_items
from bft.generation.run.output import write_outputs
from bft.generation.run.resume import finished_outputs, record_finished
from bft.generation.run.stats import RunStats


@dataclass
class RunSummary:
    """What a finished run reports: its stats, the rows written per config, and the configs left
    empty (not written, since `load_dataset` cannot load them) with why."""

    stats: RunStats
    counts: dict[str, int]
    empty: dict[str, str] = field(default_factory=dict)

    @property
    def main_config(self) -> str | None:
        return main_config(self.counts) if self.counts else None


def why_empty(config: str, stats: RunStats) -> str:
    """Why a config has no rows, from the stage that makes it."""
    if config == REJECTED_CONFIG:
        return "no record was rejected"
    stage = next(s for s, c in OUTPUT_CONFIG_NAMES.items() if c == config)
    counts = stats.stages.get(stage)
    if counts is None or not counts.entered:
        return f"no document reached {stage}"
    reasons = ", ".join(f"{r}: {n}" for r, n in counts.rejected_by_reason.most_common(3))
    return f"{stage} kept none of {counts.entered} ({reasons})"


def finished_run(config: GenerateConfig) -> RunSummary | None:
    """The summary of the run in `config.out` when it is finished (`run/resume.py`): every item it reads has
    its outcome in the journals and the outputs were written from them. Nothing is started or asked."""
    finished = finished_outputs(config, input_items(config))
    return RunSummary(RunStats.read(Path(config.out)), *finished) if finished is not None else None


def finish_run(
    config: GenerateConfig,
    stats: RunStats,
    stages: list[Stage],
    first_endpoints: dict[str, Endpoint],
    journal_dirs: list[Path] | None = None,
) -> RunSummary:
    """Write stats, the parquet configs and the card; return the summary the command prints.

    `journal_dirs` are the journals the configs are made from (the run's one folder unless given:
    the Ray executor has one per block).
    """
    out = Path(config.out)
    stats.write(out)
    written = write_outputs(out, config.stages, journal_dirs)
    provenance = {stage.name: stage.provenance(None, "", 0, first_endpoints[stage.name]).__dict__ for stage in stages}
    summary = RunSummary(stats, written.counts, {name: why_empty(name, stats) for name in written.empty})
    render_generation_card(
        out,
        configs=dataset_configs(written.files),
        counts=summary.counts,
        empty=summary.empty,
        main_config=summary.main_config or "",
        stage_table=stats.stage_table(provenance),
        rejects=stats.rejects(),
        documents_in=stats.documents_in,
        corpus=config.corpus.path,
        note=config.note,
    )
    record_finished(out, config.stages, summary.counts, summary.empty)
    return summary
