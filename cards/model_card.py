"""The model card of a model trained by `bft train`.

Metadata goes through `huggingface_hub.ModelCardData` (base model, datasets, library, pipeline, tags);
the body is `cards/templates/model_card.md`, filled from the run's facts (`training/train.py` writes them
to `bft_training.json` beside the model): base model, data sources with revisions and commits, the
recipe as run, hyperparameters and the batch rule, metrics, how to prompt the model with the S_a/S_w
tags, and both papers' citations. Facts in, text out: the tag sentences (`tag_texts`) and the
backward model's prompt (`backward_prompt`) come with the facts.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from bft.cards.common import CITATION, bft_version

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
HUB_ID_PREFIXES = (".", "/", "~", "embedded:")


def hub_id(name: str | None) -> str | None:
    """`name` when it looks like a Hub repo id (ORG/NAME), else None: local paths do not go in metadata."""
    if not name or name.startswith(HUB_ID_PREFIXES) or Path(name).exists() or name.count("/") != 1:
        return None
    return name


def render_model_card(folder: Path, facts: dict) -> ModelCard:
    """Write `folder`/README.md from the training facts; return the card."""
    datasets = sorted({s["path"] for s in facts["sources"] if hub_id(s["path"])})
    card_data = ModelCardData(
        base_model=hub_id(facts["base_model"]),
        datasets=datasets or None,
        library_name="peft" if facts.get("peft") else "transformers",
        pipeline_tag="text-generation",
        tags=["bft", "trl", "sft", "instruction-backtranslation", "back-and-forth-translation"],
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        bft_version=bft_version(),
        citation=CITATION.read_text(encoding="utf-8").strip(),
        **facts,
    )
    card.save(folder / "README.md")
    return card
