"""Instruction sets: what `bft eval` answers and what the data report checks for contamination.

An instruction set is bft's own (`bft`: 60 instructions written for the project,
`builders/data/eval_instructions.jsonl`), a JSON/JSONL/Parquet file, or a Hub dataset (`ORG/NAME`),
loaded by the one dataset loader (`builders/sources.py`). Every row needs a text `instruction`, and no
instruction may repeat (AlpacaEval joins outputs on it).
"""

from __future__ import annotations

from pathlib import Path

from bft.builders.sources import load_table
from bft.generation.errors import ConfigError

BFT_EVAL_SET = Path(__file__).parent / "data" / "eval_instructions.jsonl"
BFT_EVAL_NAME = "bft-eval"


def load_instructions(spec: str, split: str = "train") -> tuple[list[dict], str]:
    """An instruction set as records with `instruction` (and `id`, `dataset` when known); and its name."""
    path, name = (str(BFT_EVAL_SET), BFT_EVAL_NAME) if spec == "bft" else (spec, spec)
    dataset, _ = load_table(path, split=split)
    rows = dataset.to_list()
    if not rows:
        raise ConfigError(f"instruction set {spec} is empty")
    seen = set()
    for index, row in enumerate(rows):
        text = row.get("instruction")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"instruction set {spec}: row {index} has no text `instruction`")
        if text in seen:
            raise ConfigError(f"instruction set {spec}: row {index} repeats an instruction (AlpacaEval joins on it)")
        seen.add(text)
        row.setdefault("dataset", name)
    return rows, name
