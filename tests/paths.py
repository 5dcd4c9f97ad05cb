"""Where the tests find the repository's files and the project's shared data."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # real Dolma documents and the papers' text, beside the repository
DEMO_CORPUS = REPO / "generation" / "demo" / "corpus.jsonl"
DEMO_CONFIG = REPO / "generation" / "demo" / "demo.yaml"
