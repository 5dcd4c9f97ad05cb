"""Humpback's tags and the SFT rows they go in: what the builders write and the trainer reads.

Humpback (sec. 2.3) tags seed examples `S_a` ("Answer in the style of an AI Assistant.") and augmented
web examples `S_w` ("Answer with knowledge from web search."); at inference both together worked best
(HB Table 8). Where a tag goes is not stated in the papers (method.md, open points):
`user_end` (default) appends it to the user turn after a blank line; `system` makes it a system
message (Humpback calls the tags "system prompts"). One definition here serves `bft build`'s `sft`
config, `bft train`'s data mixtures and `bft eval`'s prompts, so the three cannot drift apart.

Rows are TRL's conversational prompt/completion, so the SFT trainer puts the loss on completions only.
"""

from __future__ import annotations

from bft.generation.method.prompts import load_template

SEED_TAG = "Answer in the style of an AI Assistant."  # S_a, Humpback sec. 2.3
WEB_TAG = "Answer with knowledge from web search."  # S_w
TAGS = {"S_a": SEED_TAG, "S_w": WEB_TAG}
# BAFT's second inference suffix: S_w softened, for the model to search only when it must. Inference only
# (training data is tagged S_a/S_w), so `bft eval generate --tags S_a,S_w_if_needed` asks as BAFT did.
WEB_IF_NEEDED_TAG = "Answer with knowledge from web search if needed."
INFERENCE_TAGS = {**TAGS, "S_w_if_needed": WEB_IF_NEEDED_TAG}
TAG_PLACEMENTS = ("user_end", "system")


def tagged_turns(instruction: str, tags: list[str], placement: str = "user_end") -> list[dict]:
    """The prompt messages for `instruction` with `tags` (S_a, S_w, both, or none; at inference also
    S_w_if_needed) placed as trained."""
    text = " ".join(INFERENCE_TAGS[tag] for tag in tags)
    if not text:
        return [{"role": "user", "content": instruction}]
    if placement == "system":
        return [{"role": "system", "content": text}, {"role": "user", "content": instruction}]
    return [{"role": "user", "content": f"{instruction}\n\n{text}"}]


def sft_row(doc_id: str, tag: str, instruction: str, response: str, placement: str = "user_end") -> dict:
    """One prompt/completion row: `instruction` tagged `tag`, answered by `response`."""
    return {
        "id": doc_id,
        "tag": tag,
        "prompt": tagged_turns(instruction, [tag], placement),
        "completion": [{"role": "assistant", "content": response}],
    }


def reversed_row(pair: dict) -> dict:
    """M_yx's training row: the response inside P2 as the prompt, the instruction as the completion.

    The user turn is exactly what `bft generate` sends a backward model through a chat endpoint (P2
    without its Llama-2 wrapper), so the model is trained on the prompt it will be served.
    """
    return {
        "id": pair["id"],
        "prompt": [{"role": "user", "content": load_template("backtranslate").user_message(response=pair["response"])}],
        "completion": [{"role": "assistant", "content": pair["instruction"]}],
    }
