"""What every card shares: bft's version, the papers' citations, the Hub's size categories."""

from __future__ import annotations

import importlib.metadata
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
