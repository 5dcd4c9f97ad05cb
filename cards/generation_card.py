"""The dataset card written into every `bft generate` output folder.

Facts in, text out: this module imports nothing of bft's other floors; the run hands it its tables.
The card is the folder's README.md: YAML metadata (through `huggingface_hub.DatasetCardData`, including
the `configs:` that make `load_dataset(OUT, CONFIG)` work) and a body rendered from
`cards/templates/generation_card.md`.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from bft.cards.common import CITATION, CONFIGS_ABOUT, bft_version, size_category, with_default

TEMPLATE = Path(__file__).parent / "templates" / "generation_card.md"


def render_generation_card(
    out: Path,
    configs: list[dict],
    counts: dict[str, int],
    empty: dict[str, str],
    main_config: str,
    stage_table: list[dict],
    rejects: list[dict],
    documents_in: int,
    corpus: str,
    note: str = "",
    license: str = "other",
) -> DatasetCard:
    """Render and write OUT/README.md from a run's facts; return the card.

    `configs` are the README `configs:` entries, `counts` the rows per config, `empty` the configs not
    written for having no rows (config -> why), `stage_table` and
    `rejects` the per-stage tables (`RunStats.stage_table` / `rejects`).
    """
    card_data = DatasetCardData(
        license=license,
        language=["en"],
        task_categories=["text-generation"],
        annotations_creators=["machine-generated"],
        size_categories=[size_category(max(counts.values(), default=0))],
        tags=["synthetic", "instruction-backtranslation", "back-and-forth-translation", "bft"],
        configs=with_default(configs, main_config),
    )
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        pretty_name=f"bft back-and-forth translation data ({Path(out).name})",
        bft_version=bft_version(),
        config_rows=[{"name": c, "rows": n, "about": CONFIGS_ABOUT.get(c, "")} for c, n in counts.items()],
        empty_configs=empty,
        load_path=str(Path(out).resolve()),
        main_config=main_config,
        corpus_line=f"Corpus: `{corpus}`; {documents_in} documents read.",
        stages=stage_table,
        stages_with_rejects=rejects,
        relaxed=note,
        citation=CITATION.read_text(encoding="utf-8").strip(),
    )
    card.save(Path(out) / "README.md")
    return card
