"""The dataset card of a built bft dataset (`bft build`), and the checks it must pass.

Metadata goes through `huggingface_hub.DatasetCardData` (license, task categories, creators, source
datasets, size category, tags, `configs:`); the body is `cards/templates/dataset_card.md`, filled with
the run's real figures: stages, models and revisions, prompts, sampling, the run config, rejects by
reason, parse rates, scores, lengths, plots, an example per config, the pre-release findings and the
changelog of releases.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from bft.cards.common import CITATION, bft_version, size_category, with_default

TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md"
REQUIRED_SECTIONS = (
    "## Dataset Description",
    "### Dataset Sources",
    "## Uses",
    "## Dataset Structure",
    "## How the data was made",
    "## Statistics",
    "## Personal and Sensitive Information",
    "## Bias, Risks, and Limitations",
    "## Changelog",
    "## Citation",
)
LOCAL_PATH_RE = re.compile(r"(?<![\w.:/~-])(/(?:home|root|tmp|Users|mnt|data|work|scratch|var|opt|srv)/[^\s`'\")]+)")
KNOWN_LICENSES = {"odc-by", "cc-by-4.0", "cc-by-sa-4.0", "cc0-1.0", "apache-2.0", "mit", "cc-by-nc-4.0", "other"}


def render_dataset_card(folder: Path, facts: dict) -> DatasetCard:
    """Write `folder`/README.md from `facts` (see `builders/build.py`); return the card."""
    card_data = DatasetCardData(
        pretty_name=facts["pretty_name"],
        license=facts["license"] if facts["license"] in KNOWN_LICENSES else "other",
        license_name=facts.get("license_name") or (None if facts["license"] in KNOWN_LICENSES else facts["license"]),
        license_link=facts.get("license_link") or None,
        language=["en"],
        task_categories=["text-generation"],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        source_datasets=facts["source_datasets"] or None,
        size_categories=[size_category(max(r["rows"] for r in facts["config_rows"]))],
        tags=["synthetic", "instruction-backtranslation", "back-and-forth-translation", "bft"],
        configs=with_default(facts["configs"], facts["main_config"]),
    )
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        bft_version=bft_version(),
        citation=CITATION.read_text(encoding="utf-8").strip(),
        **{k: v for k, v in facts.items() if k not in ("configs", "pretty_name")},
    )
    card.save(folder / "README.md")
    return card


def check_card(folder: Path) -> list[str]:
    """What is wrong with `folder`/README.md as a Hub dataset card (empty when nothing)."""
    path = folder / "README.md"
    if not path.is_file():
        return ["no README.md"]
    text = path.read_text(encoding="utf-8")
    front = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    if not front:
        return ["README.md has no YAML metadata block"]
    try:
        metadata = yaml.safe_load(front.group(1)) or {}
    except yaml.YAMLError as error:
        return [f"README.md metadata is not valid YAML: {error}"]
    problems = []
    license = metadata.get("license")
    if license not in KNOWN_LICENSES:
        problems.append(f"license {license!r} is not a known license id")
    if license == "other" and not metadata.get("license_name"):
        problems.append("license 'other' needs license_name")
    for key in ("task_categories", "size_categories", "configs", "language"):
        if not metadata.get(key):
            problems.append(f"metadata has no {key}")
    defaults = [c["config_name"] for c in metadata.get("configs") or [] if c.get("default")]
    if len(defaults) != 1:
        problems.append(f"configs: exactly one should be `default: true` (load_dataset(repo) needs it), not {defaults}")
    if local := LOCAL_PATH_RE.search(text):
        problems.append(f"the card names a local path ({local.group(1)}); released files name files, not paths")
    for config in metadata.get("configs") or []:
        for entry in config.get("data_files") or []:
            if not (folder / entry["path"]).is_file():
                problems.append(f"config {config['config_name']}: {entry['path']} does not exist")
    problems += [f"section {s!r} is missing" for s in REQUIRED_SECTIONS if s not in text]
    if "{{" in text or "{%" in text:
        problems.append("unrendered template syntax left in the card")
    return problems


def changelog_of(readme: str) -> list[str]:
    """The changelog entries of an existing card (to carry them into the next release's card)."""
    match = re.search(r"^## Changelog\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    if not match:
        return []
    return [line[2:].strip() for line in match.group(1).splitlines() if line.startswith("- ")]


def example_json(row: dict, limit: int = 300) -> str:
    """One row as JSON, long strings shortened, for the card."""

    def shorten(value):
        if isinstance(value, str) and len(value) > limit:
            return value[:limit] + f"... ({len(value)} characters)"
        if isinstance(value, dict):
            return {k: shorten(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shorten(v) for v in value[:3]] + ([f"... ({len(value)} items)"] if len(value) > 3 else [])
        return value

    return json.dumps(shorten(row), indent=2, ensure_ascii=False)
