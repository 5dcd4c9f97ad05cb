"""Parsers for model replies: instructions, curation scores and rewrites.

Each parser reads only the model's own reply (plus the answer prefill bft itself sent) and returns a
`Parsed` value: either a value with status `ok`, or no value and a machine-readable reason that becomes
a rejected record. Nothing is dropped silently.

Rules (see README, "Parsing"):

- score: the **last** `Score:` in the reply wins; the number after it must be an integer 1-5
  (`5`, `5.`, `5.0`, `5/5` and markdown emphasis such as `**Score:** 5` are accepted);
  anything else is `score_missing`, `score_unparseable` or `score_out_of_range`.
- rewrite: the text of the last `[RES] ... [/RES]` block, stripped; a reply cut off by the token
  limit is `rewrite_truncated`, an unclosed block `rewrite_unclosed`, tags inside the block
  `rewrite_nested_tags`, an empty block `rewrite_empty`. When `[/RES]` was the stop sequence and
  the server reports a normal stop, the closing tag was consumed by the server and is implied.
- expected score: where the server returned the top alternatives for each generated token, the
  token that wrote the parsed score is found and its alternatives `1`-`5` give
  E[score] = sum p(k) * k, renormalized over those five (Humpback's "score >= 4.5" needs this).
- instruction: the stripped reply; empty is `instruction_empty`, cut off by the token limit is
  `instruction_truncated`, longer than the configured limit is `instruction_too_long`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

RES_OPEN = "[RES]"
RES_CLOSE = "[/RES]"
SCORE_RE = re.compile(r"\**\bscore\**\s*:\s*\**\s*(?P<value>[^\s*]*)", re.IGNORECASE)
SCORE_VALUE_RE = re.compile(r"(?P<n>[+-]?\d+)(?:\.0*)?(?:/5)?[.,;:!)]*")


@dataclass(frozen=True)
class Parsed:
    """A parser's verdict: `value` when `ok`, else `reason` (a short snake_case code)."""

    value: object | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else self.reason


def parse_score(reply: str, low: int = 1, high: int = 5) -> Parsed:
    """Parse the rubric score from a curation reply (the last `Score:` wins)."""
    matches = list(SCORE_RE.finditer(reply))
    if not matches:
        return Parsed(None, "score_missing")
    raw = matches[-1].group("value")
    number = SCORE_VALUE_RE.fullmatch(raw)
    if number is None:
        return Parsed(None, "score_unparseable")
    value = int(number.group("n"))
    if not low <= value <= high:
        return Parsed(None, "score_out_of_range")
    return Parsed(value)


def score_offset(reply: str) -> int | None:
    """Where in `reply` the value of the last `Score:` starts (the text `parse_score` reads)."""
    matches = list(SCORE_RE.finditer(reply))
    return matches[-1].start("value") if matches else None


def expected_score(choices: Sequence, text: str, offset: int, low: int = 1, high: int = 5) -> float | None:
    """E[score] from the alternatives of the token that starts at character `offset` of `text`.

    `choices` are the generated tokens (`.text`) with their top alternatives (`.top`: (text, logprob)
    pairs). When the tokens do not spell `text` exactly (some servers normalize token strings), the
    last token that is the score digit itself is used. None when no alternative is a score.
    """
    if not choices or offset < 0 or offset >= len(text):
        return None
    position = None
    if "".join(c.text for c in choices) == text:
        cursor = 0
        for index, choice in enumerate(choices):
            cursor += len(choice.text)
            if cursor > offset:
                position = index
                break
    if position is None:
        digit = text[offset]
        position = next((i for i in range(len(choices) - 1, -1, -1) if choices[i].text.strip() == digit), None)
        if position is None:
            return None
    mass: Counter = Counter()
    for alternative, logprob in choices[position].top:
        word = alternative.strip()
        if word.isdigit() and low <= int(word) <= high:
            mass[int(word)] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return sum(k * p for k, p in mass.items()) / total


def parse_rewrite(reply: str, finish_reason: str | None, stop: tuple[str, ...] = ()) -> Parsed:
    """Extract the rewritten response between `[RES]` and `[/RES]`."""
    text = reply
    if RES_CLOSE in stop and finish_reason == "stop" and RES_OPEN in text and not text.rstrip().endswith(RES_CLOSE):
        # The server stopped on the `[/RES]` stop sequence and (OpenAI-style) did not return it.
        text = text + RES_CLOSE
    close = text.rfind(RES_CLOSE)
    if close < 0:
        if finish_reason == "length":
            return Parsed(None, "rewrite_truncated")
        return Parsed(None, "rewrite_unclosed" if RES_OPEN in text else "rewrite_missing_tags")
    opening = text.rfind(RES_OPEN, 0, close)
    if opening < 0:
        return Parsed(None, "rewrite_missing_tags")
    body = text[opening + len(RES_OPEN) : close]
    if RES_CLOSE in body or RES_OPEN in body:
        return Parsed(None, "rewrite_nested_tags")
    body = body.strip()
    if not body:
        return Parsed(None, "rewrite_empty")
    return Parsed(body)


def parse_answer(reply: str, finish_reason: str | None) -> Parsed:
    """A free answer (the distill stage): the stripped reply, not cut off by the token limit."""
    text = reply.strip()
    if finish_reason == "length":
        return Parsed(None, "answer_truncated")
    if not text:
        return Parsed(None, "answer_empty")
    return Parsed(text)


def parse_instruction(reply: str, finish_reason: str | None, max_chars: int) -> Parsed:
    """Clean a backtranslated instruction."""
    text = reply.strip()
    if finish_reason == "length":
        return Parsed(None, "instruction_truncated")
    if not text:
        return Parsed(None, "instruction_empty")
    if len(text) > max_chars:
        return Parsed(None, "instruction_too_long")
    return Parsed(text)
