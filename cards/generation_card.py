"""The dataset card written into every `bft generate` output folder.

The card is the folder's README.md: YAML metadata (through `huggingface_hub.DatasetCardData`, including
the `configs:` that make `load_dataset(OUT, CONFIG)` work) and a body rendered from
`cards/templates/generation_card.md`.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

TEMPLATE = Path(__file__).parent / "templates" / "generation_card.md"
CITATION = Path(__file__).parent / "templates" / "citation.bib"
ABOUT = {
    "backtranslated": "documents with a backtranslated instruction (P2); `response` is the document",
    "curated": "pairs that passed curation (P1 score at or above the threshold); `response` is the document",
    "rewritten": "the method's dataset: `response` is the document rewritten for the instruction (P3)",
    "rejected": "every rejected record of every stage, with `stage`, `reason` and the raw model output",
}


def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M"


def _sampling(text: str) -> str:
    sampling = json.loads(text)
    return f"T={sampling['temperature']}, p={sampling['top_p']}, max {sampling['max_tokens']} tokens"


def render_generation_card(
    out: Path,
    written: dict[str, tuple[int, str]],
    stats: dict[str, dict],
    stage_provenance: dict[str, dict],
    corpus: str,
    note: str = "",
    license: str = "other",
) -> DatasetCard:
    """Render and write OUT/README.md; return the card. `written` maps config -> (rows, file)."""
    from bft.generation.output import dataset_configs

    counts = {name: rows for name, (rows, _) in written.items()}
    main_config = next((c for c in ("rewritten", "curated", "backtranslated") if c in counts), "rejected")
    card_data = DatasetCardData(
        license=license,
        language=["en"],
        task_categories=["text-generation"],
        annotations_creators=["machine-generated"],
        size_categories=[size_category(max(counts.values(), default=0))],
        tags=["synthetic", "instruction-backtranslation", "back-and-forth-translation", "bft"],
        configs=dataset_configs(written),
    )
    stages = []
    for name, provenance in stage_provenance.items():
        counters = stats.get(name, {})
        stages.append(
            {
                "name": name,
                "template": provenance.get("template"),
                "sha": provenance.get("template_sha256") or "",
                "model": provenance.get("model_id") or "unknown",
                "mode": provenance.get("mode"),
                "prefill": provenance.get("prefill"),
                "sampling": _sampling(provenance["sampling"]) if provenance.get("sampling") else "",
                "entered": counters.get("entered", 0),
                "kept": counters.get("kept", 0),
                "rejected": counters.get("rejected", 0),
            }
        )
    with_rejects = [
        {"name": name, "reasons": s["rejected_by_reason"]} for name, s in stats.items() if s.get("rejected_by_reason")
    ]
    try:
        version = importlib.metadata.version("bft")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    card = DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        pretty_name=f"bft back-and-forth translation data ({Path(out).name})",
        bft_version=version,
        config_rows=[{"name": c, "rows": n, "about": ABOUT.get(c, "")} for c, n in counts.items()],
        load_path=str(Path(out).resolve()),
        main_config=main_config,
        corpus_line=f"Corpus: `{corpus}`; {stats.get('prepare', {}).get('entered', 0)} documents read.",
        stages=stages,
        stages_with_rejects=with_rejects,
        relaxed=note,
        citation=CITATION.read_text(encoding="utf-8").strip(),
    )
    card.save(Path(out) / "README.md")
    return card
