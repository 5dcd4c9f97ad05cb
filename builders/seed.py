"""`bft seed`: build Humpback's seed set, and the reversed pairs that train the backward model.

    bft seed OpenAssistant/oasst1 --out seed.jsonl --reversed reversed.jsonl [--split train] [--language en]
    bft seed my-pairs.jsonl --out seed.jsonl

Humpback's seed is 3,200 examples from Open Assistant: the **first turn** of each conversation tree
(a root prompter message), in **English**, with its **rank-0** assistant reply. Three input shapes are read:

- Open Assistant message rows (oasst1/oasst2: `message_id`, `parent_id`, `role` prompter/assistant,
  `lang`, `rank`, `text`), from a Hub id or local JSONL/Parquet;
- pairs with `instruction` (or `prompt`) and `response` (or `output`) columns;
- chat rows with `messages`: the first user turn and the assistant turn after it.

`--out` gets JSON lines `{id, instruction, response, source}` (what `bft build --seed` reads);
`--reversed` gets TRL prompt/completion rows with the response (inside P2, the prompt `bft generate` sends
a backward model) as the user turn and the instruction as the completion: Humpback's backward model M_yx
learns to write the instruction a text answers. Every input message or row that does not make a pair is
counted with its reason.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bft.builders.seed_set import build_seed
from bft.generation.method.tags import reversed_row

HUMPBACK_SEED_SIZE = 3200  # Humpback's seed: 3,200 first turns of Open Assistant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="Hub dataset id (e.g. OpenAssistant/oasst1) or local JSONL/Parquet file or folder"
    )
    parser.add_argument("--out", required=True, help="Seed pairs, JSON lines")
    parser.add_argument("--reversed", help="Also write reversed pairs (response -> instruction) for the backward model")
    parser.add_argument("--split", default="train", help="Hub datasets: split (default: train)")
    parser.add_argument("--language", default="en", help="Open Assistant: keep this language (default: en)")
    parser.add_argument(
        "--limit",
        type=int,
        default=HUMPBACK_SEED_SIZE,
        help="Keep at most N pairs (default: %(default)s, Humpback's seed size; 0 keeps every pair)",
    )


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(args: argparse.Namespace) -> int:
    pairs, dropped = build_seed(args.source, args.split, args.language, args.limit or None)
    write_jsonl(Path(args.out), pairs)
    if args.reversed:
        write_jsonl(Path(args.reversed), (reversed_row(p) for p in pairs))
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(dropped.items()) if n)
    print(
        f"bft seed: {len(pairs)} pairs to {args.out}" + (f" (and reversed to {args.reversed})" if args.reversed else "")
    )
    print(f"  dropped: {reasons or 'none'}")
    return 0
