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
from collections import Counter
from pathlib import Path

from bft.generation.corpus.files import HUB_ID_RE, corpus_files
from bft.generation.corpus.rows import iter_hub_rows, iter_jsonl_rows, iter_parquet_rows
from bft.generation.errors import ConfigError
from bft.generation.method.tags import reversed_row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="Hub dataset id (e.g. OpenAssistant/oasst1) or local JSONL/Parquet file or folder"
    )
    parser.add_argument("--out", required=True, help="Seed pairs, JSON lines")
    parser.add_argument("--reversed", help="Also write reversed pairs (response -> instruction) for the backward model")
    parser.add_argument("--split", default="train", help="Hub datasets: split (default: train)")
    parser.add_argument("--language", default="en", help="Open Assistant: keep this language (default: en)")
    parser.add_argument("--limit", type=int, help="Keep at most N pairs")


def read_rows(source: str, split: str):
    local = Path(source)
    if local.exists():
        for file in corpus_files(local):
            reader = iter_parquet_rows if file.suffix == ".parquet" else iter_jsonl_rows
            for _, row in reader(file):
                yield row
    elif HUB_ID_RE.match(source):
        for _, row in iter_hub_rows(source, split, None):
            yield row
    else:
        raise ConfigError(f"seed source {source!r}: no such file or folder, and not a Hub id")


def is_oasst(row: dict) -> bool:
    return {"message_id", "parent_id", "role", "text"} <= set(row)


def oasst_pairs(rows, language: str, dropped: Counter) -> list[dict]:
    """First-turn prompts in `language` with their rank-0 assistant reply, in the order prompts appear."""
    prompts: dict[str, dict] = {}
    best: dict[str, dict] = {}
    for row in rows:
        if row.get("deleted"):
            dropped["deleted"] += 1
        elif row["role"] == "prompter" and row["parent_id"] is None:
            if row.get("lang") != language:
                dropped["other_language"] += 1
            else:
                prompts[row["message_id"]] = row
        elif row["role"] == "assistant":
            if row.get("rank") == 0:
                best[row["parent_id"]] = row
            else:
                dropped["assistant_not_rank_0"] += 1
        else:
            dropped["not_first_turn"] += 1
    pairs = []
    for message_id, prompt in prompts.items():
        reply = best.pop(message_id, None)
        if reply is None:
            dropped["no_rank_0_reply"] += 1
            continue
        pairs.append({"id": message_id, "instruction": prompt["text"], "response": reply["text"], "source": "oasst"})
    dropped["reply_not_to_a_kept_first_turn"] += len(best)
    return pairs


def plain_pair(row: dict, number: int) -> dict | None:
    """A pair from instruction/response columns or chat `messages`; None when the row has neither."""
    instruction = row.get("instruction", row.get("prompt"))
    response = row.get("response", row.get("output"))
    if isinstance(instruction, str) and isinstance(response, str):
        return {
            "id": str(row.get("id") or f"seed-{number}"),
            "instruction": instruction,
            "response": response,
            "source": "pairs",
        }
    messages = row.get("messages")
    if isinstance(messages, list):
        roles = [m.get("role") for m in messages if isinstance(m, dict)]
        if "user" in roles and "assistant" in roles[roles.index("user") :]:
            first = roles.index("user")
            answer = roles.index("assistant", first)
            return {
                "id": str(row.get("id") or f"seed-{number}"),
                "instruction": messages[first]["content"],
                "response": messages[answer]["content"],
                "source": "messages",
            }
    return None


def build_seed(
    source: str, split: str = "train", language: str = "en", limit: int | None = None
) -> tuple[list[dict], Counter]:
    rows = iter(read_rows(source, split))
    first = next(rows, None)
    if first is None:
        raise ConfigError(f"seed source {source!r} holds no rows")
    dropped: Counter = Counter()

    def everything():
        yield first
        yield from rows

    if is_oasst(first):
        pairs = oasst_pairs(everything(), language, dropped)
    else:
        pairs = []
        for number, row in enumerate(everything(), start=1):
            pair = plain_pair(row, number)
            if pair is None:
                dropped["no_instruction_response"] += 1
            elif not pair["instruction"].strip() or not pair["response"].strip():
                dropped["empty"] += 1
            else:
                pairs.append(pair)
    if limit is not None:
        dropped["over_limit"] += max(0, len(pairs) - limit)
        pairs = pairs[:limit]
    if not pairs:
        raise ConfigError(f"seed source {source!r} gave no pairs (dropped: {dict(dropped)})")
    return pairs, dropped


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(args: argparse.Namespace) -> int:
    pairs, dropped = build_seed(args.source, args.split, args.language, args.limit)
    write_jsonl(Path(args.out), pairs)
    if args.reversed:
        write_jsonl(Path(args.reversed), (reversed_row(p) for p in pairs))
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(dropped.items()) if n)
    print(
        f"bft seed: {len(pairs)} pairs to {args.out}" + (f" (and reversed to {args.reversed})" if args.reversed else "")
    )
    print(f"  dropped: {reasons or 'none'}")
    return 0
