"""What every card shares: bft's version, the papers' citations, the Hub's size categories, the default
config, what each config holds, and the terms of use of the models that generated the data."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"
CITATION = TEMPLATES / "citation.bib"


def bft_version() -> str:
    try:
        return importlib.metadata.version("bft")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M"


# What each config of a `bft generate` output holds (the generation card), one line each.
CONFIGS_ABOUT = {
    "backtranslated": "documents with a backtranslated instruction (P2); `response` is the document",
    "curated": "pairs kept by curation (P1 score at or above the threshold); `response` is the document",
    "rewritten": "the method's dataset: `response` is the document rewritten for the instruction (P3)",
    "distilled": "instructions answered by a teacher model without the document (BAFT's distilling baseline)",
    "rejected": "every rejected record of every stage, with `stage`, `reason` and the raw model output",
}
# A built dataset's configs (the dataset card): the same, but `bft build` joins each candidate pair to its
# curation outcome, and adds the seed set and the SFT rows.
BUILT_CONFIGS_ABOUT = {
    **CONFIGS_ABOUT,
    "backtranslated": "every candidate pair (document + backtranslated instruction) with its curation score and outcome",
    "seed": "the seed set (human-written instruction/response pairs)",
    "sft": "TRL prompt/completion rows for fine-tuning: seed tagged S_a + web pairs tagged S_w",
}


def with_default(configs: list[dict], main: str) -> list[dict]:
    """The README `configs:` entries with `main` marked `default: true`, so `load_dataset(repo)` works
    without a config name (the Hub and `datasets` pick the default one)."""
    return [{**c, "default": True} if c["config_name"] == main else c for c in configs]


# Model families whose outputs come with terms of their own, by a pattern of the model id (case aside).
MODEL_TERMS = (
    (
        r"llama[-_ ]?2",
        "Llama 2 Community License and Acceptable Use Policy (https://ai.meta.com/llama/license/): "
        "outputs may not be used to improve other large language models, Llama 2 derivatives aside",
    ),
    (
        r"llama[-_ ]?3",
        "Llama 3 Community License and Acceptable Use Policy (https://www.llama.com/llama3/license/): "
        'models trained on the outputs must carry "Llama" at the start of their name',
    ),
    (r"gemma", "Gemma Terms of Use (https://ai.google.dev/gemma/terms) and Prohibited Use Policy"),
    (r"gpt-|openai|o1|o3", "OpenAI's terms of use (https://openai.com/policies/terms-of-use)"),
)


def model_terms(models: list[str]) -> list[str]:
    """A line per model naming the terms its outputs come with (or saying to check them)."""
    lines = []
    for model in dict.fromkeys(m for m in models if m):
        terms = next((text for pattern, text in MODEL_TERMS if re.search(pattern, model, re.I)), None)
        lines.append(
            f"`{model}`: {terms}" if terms else f"`{model}`: check its license and terms of use for generated outputs"
        )
    return lines
