"""The seed set: Open Assistant's first turns with their rank-0 replies, or pairs given as they are.

Humpback's seed (method.md, HB 1): the first turn of each conversation tree, in English, with its
rank-0 (best) assistant reply. A source is an Open Assistant message dump (rows with `message_id`,
`parent_id`, `role`, `text`, ...), or rows that are already pairs (`instruction`/`response`,
`prompt`/`output`, or chat `messages`); a local file or folder, or a Hub dataset id. Every row that
does not become a pair is counted by reason. `bft seed` (the command) writes the result.
"""

from __future__ import annotations

from collections import Counter

from bft.generation.corpus.documents import corpus_rows
from bft.generation.corpus.rows import Unreadable
from bft.generation.errors import ConfigError, CorpusError


def read_rows(source: str, split: str):
    """The rows of a seed source: a local file or folder, or a Hub dataset id, streamed."""
    try:
        rows = corpus_rows(source, split)
    except CorpusError:
        raise ConfigError(f"seed source {source!r}: no such file or folder, and not a Hub id") from None
    for _, row in rows:
        if not isinstance(row, Unreadable):
            yield row


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
