"""The facts a built dataset's card is made from, saved beside it as `bft_build.json`.

`bft build` gathers them (`builders/assemble.py`); `bft release` reads them back, adds its changelog
entry and the Hub address, and renders the card again. One typed object, so the builder, the release
and the card template agree on every field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from bft.builders.checks import Findings, scan_secrets
from bft.cards.dataset_card import check_card, render_dataset_card
from bft.generation.errors import BftError, ConfigError

FACTS_FILE = "bft_build.json"


@dataclass
class BuildFacts:
    """Everything the dataset card says; field names are the card template's."""

    pretty_name: str
    license: str
    source_datasets: list[str]
    corpus: str
    configs: list[dict]  # README `configs:` entries
    config_rows: list[dict]  # name, split, rows, about
    main_config: str
    load_path: str
    revision: str | None
    stages: list[dict]  # `RunStats.stage_table`
    stages_with_rejects: list[dict]
    parse_rates: dict[str, float]
    scores: dict[str, int]
    lengths: list[dict]
    length_unit: str
    plots: list[dict]
    examples: list[dict]
    note: str
    run_config: str
    tag_placement: str
    seed_tag: str
    web_tag: str
    pii: dict[str, dict]
    pii_redacted: bool
    changelog: list[str]
    empty_configs: list[str]
    report: dict = field(default_factory=dict)
    findings: dict = field(default_factory=dict)
    license_name: str = ""  # the Hub's `license_name` (and `license_link`) for `license: other`
    license_link: str = ""
    model_terms: list[str] = field(default_factory=list)  # the generating models' terms of use, one line each
    cost: str = ""  # what the run cost, one line (`run/money.py` `cost_line`); empty when no stage was priced
    servers: list[str] = field(default_factory=list)  # the model servers bft started, one line each

    def train_rows(self) -> dict[str, int]:
        """Rows of each config's train split."""
        return {row["name"]: row["rows"] for row in self.config_rows if row["split"] == "train"}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, folder: Path) -> BuildFacts:
        path = folder / FACTS_FILE
        if not path.is_file():
            raise ConfigError(f"{folder} was not written by `bft build` (no {FACTS_FILE}); build it first")
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, folder: Path, findings: Findings | None = None) -> None:
        """Render README.md, rescan for secrets, check the card, and save the facts beside it."""
        if findings is None:
            findings = Findings.from_dict(self.findings)
        self.findings = findings.as_dict()
        render_dataset_card(folder, self.to_dict())
        findings.secrets = scan_secrets(folder)
        if findings.secrets:  # the card says so
            self.findings = findings.as_dict()
            render_dataset_card(folder, self.to_dict())
        (folder / FACTS_FILE).write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        problems = check_card(folder)
        if problems:
            raise BftError(f"the dataset card of {folder} fails its checks: {'; '.join(problems)}")
