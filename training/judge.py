"""Judging model outputs against reference outputs, in both orders, as `bft eval judge` does.

A judge model compares each model output with the reference output for the same instruction, with
bft's judge prompt (`training/prompts/judge.txt`), **twice, in both orders**; the two verdicts are
averaged, so a judge that always picks one position ends at a tie. Ties are allowed. The records are
AlpacaEval's annotations (`output_1` the reference, `output_2` the model).
"""

from __future__ import annotations

import re
from pathlib import Path

from bft.generation.config import SamplingConfig
from bft.generation.endpoints.chat_batch import ask_endpoint
from bft.generation.errors import ConfigError
from bft.generation.method.prompts import load_template

JUDGE_PROMPT = Path(__file__).parent / "prompts" / "judge.txt"
VERDICT_RE = re.compile(r"preferred\s*:\s*\(?\s*(a|b|tie)\s*\)?", re.I)


def parse_verdict(text: str) -> str | None:
    """`a`, `b` or `tie` from the judge's last `Preferred:` line; None when there is none."""
    found = VERDICT_RE.findall(text or "")
    return found[-1].lower() if found else None


def model_preference(verdict: str | None, model_is_a: bool) -> float | None:
    """AlpacaEval's encoding of one verdict: 2 the model preferred, 1 the reference, 1.5 a tie."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 1.5
    return 2.0 if (verdict == "a") == model_is_a else 1.0


def combine(first: float | None, second: float | None) -> float | None:
    """The two orders' preferences averaged; one order alone when the other did not parse; None if neither."""
    parsed = [p for p in (first, second) if p is not None]
    return sum(parsed) / len(parsed) if parsed else None


def join_outputs(model: list[dict], reference: list[dict]) -> list[tuple[dict, dict]]:
    by_instruction = {r["instruction"]: r for r in reference}
    missing = [m["instruction"] for m in model if m["instruction"] not in by_instruction]
    if missing:
        raise ConfigError(
            f"{len(missing)} instruction(s) of --outputs have no reference output (first: {missing[0][:80]!r}); "
            "both files must answer the same instruction set"
        )
    return [(m, by_instruction[m["instruction"]]) for m in model]


async def judge_pairs(
    url: str, model: str | None, pairs: list[tuple[dict, dict]], max_tokens: int, concurrency: int
) -> tuple[list, str]:
    """The judge's replies, two per pair (reference first, then model first), and the judge's name."""
    template = load_template(str(JUDGE_PROMPT))
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=max_tokens)
    requests = []
    for model_output, reference in pairs:  # order 1: the reference first; order 2: the model first
        for a, b in ((reference, model_output), (model_output, reference)):
            text = template.fill(instruction=model_output["instruction"], output_a=a["output"], output_b=b["output"])
            requests.append({"message": text})
    replies, judge = await ask_endpoint(url, model, requests, sampling, concurrency, "judge requests")
    return replies, judge or "judge"


def annotate(pairs: list[tuple[dict, dict]], replies: list[str], annotator: str) -> list[dict]:
    """AlpacaEval annotation records from the judge's replies (two per pair, reference-first then model-first)."""
    records = []
    for index, (model, reference) in enumerate(pairs):
        first, second = replies[2 * index], replies[2 * index + 1]
        orders = [model_preference(parse_verdict(first), False), model_preference(parse_verdict(second), True)]
        records.append(
            {
                "instruction": model["instruction"],
                "output_1": reference["output"],
                "generator_1": reference.get("generator", "reference"),
                "output_2": model["output"],
                "generator_2": model.get("generator", "model"),
                "annotator": annotator,
                "preference": combine(*orders),
                "preference_by_order": orders,  # bft: [reference shown first, model shown first]
                "raw_completions": [first, second],
            }
        )
    return records
