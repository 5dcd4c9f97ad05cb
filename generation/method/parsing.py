"""Parsers for model replies: instructions, curation scores and rewrites.

Each parser reads only the model's own reply (plus the answer prefill bft itself sent) and returns a
`Parsed` value: either a value with status `ok`, or no value and a machine-readable reason that becomes
a rejected record. Nothing is dropped silently.

Rules (see README, "Parsing"):

- markers are `method/markers.py`'s (one definition for the parser and the escaper); a marker the
  reply copied from the document, the instruction or the prompt template (`markers.Sources`) is not
  the model's and is ignored; when every marker of a reply was copied, the reply is rejected
  `score_copied_from_document` / `..._from_prompt` (`rewrite_copied_...` likewise).
- score: the **last** `Score:` the model wrote wins; the number after it must be an integer 1-5
  (`5`, `5.`, `5.0`, `5/5` and markdown emphasis such as `**Score:** 5` are accepted);
  anything else is `score_missing`, `score_unparseable` or `score_out_of_range`.
- rewrite: the text of the last `[RES] ... [/RES]` block the model wrote, stripped; a reply cut off by
  the token limit is `rewrite_truncated`, an unclosed block `rewrite_unclosed`, the model's own tags
  inside the block `rewrite_nested_tags`, an empty block `rewrite_empty`. When `[/RES]` was the stop
  sequence and the server reports a normal stop, the closing tag was consumed by the server and is
  implied.
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

from bft.generation.method.markers import RES_CLOSE, RES_CLOSE_RE, RES_OPEN_RE, SCORE_RE, Sources, parse_view
from bft.generation.reasons import (
    ANSWER_EMPTY,
    ANSWER_TRUNCATED,
    INSTRUCTION_EMPTY,
    INSTRUCTION_TOO_LONG,
    INSTRUCTION_TRUNCATED,
    REWRITE_COPIED_FROM,
    REWRITE_EMPTY,
    REWRITE_MISSING_TAGS,
    REWRITE_NESTED_TAGS,
    REWRITE_TRUNCATED,
    REWRITE_UNCLOSED,
    SCORE_COPIED_FROM,
    SCORE_MISSING,
    SCORE_OUT_OF_RANGE,
    SCORE_UNPARSEABLE,
)

SCORE_VALUE_RE = re.compile(r"(?P<n>[+-]?\d+)(?:\.0*)?(?:/5)?[.,;:!)]*")


@dataclass(frozen=True)
class Parsed:
    """A parser's verdict: `value` when `ok`, else `reason` (a short snake_case code).

    `copied` counts the markers of the reply that were copied from the prompt's texts and ignored.
    """

    value: object | None
    reason: str | None = None
    copied: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else self.reason


def _own_markers(view, pattern, sources: Sources | None) -> tuple[list, list[str]]:
    """The matches of `pattern` in the reply's view the model wrote, and where the copied ones came from."""
    own, copied = [], []
    for match in pattern.finditer(view.text):
        where = sources.copied(view, match.start(), match.end()) if sources is not None else None
        if where is None:
            own.append(match)
        else:
            copied.append(where)
    return own, copied


def _last_score(reply: str, sources: Sources | None):
    view = parse_view(reply)
    own, copied = _own_markers(view, SCORE_RE, sources)
    return view, (own[-1] if own else None), copied


def parse_score(reply: str, low: int = 1, high: int = 5, sources: Sources | None = None) -> Parsed:
    """Parse the rubric score from a curation reply (the last `Score:` the model wrote wins)."""
    _, match, copied = _last_score(reply, sources)
    if match is None:
        return Parsed(None, SCORE_COPIED_FROM[copied[-1]] if copied else SCORE_MISSING, len(copied))
    number = SCORE_VALUE_RE.fullmatch(match.group("value"))
    if number is None:
        return Parsed(None, SCORE_UNPARSEABLE, len(copied))
    value = int(number.group("n"))
    if not low <= value <= high:
        return Parsed(None, SCORE_OUT_OF_RANGE, len(copied))
    return Parsed(value, copied=len(copied))


def score_offset(reply: str, sources: Sources | None = None) -> int | None:
    """Where in `reply` the value of the score `parse_score` reads starts."""
    view, match, _ = _last_score(reply, sources)
    if match is None:
        return None
    start = match.start("value")
    return view.origin[start] if start < len(view.origin) else len(reply)


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


def parse_rewrite(
    reply: str, finish_reason: str | None, stop: tuple[str, ...] = (), sources: Sources | None = None
) -> Parsed:
    """Extract the rewritten response between the model's own `[RES]` and `[/RES]`."""
    view = parse_view(reply)
    opens, copied_opens = _own_markers(view, RES_OPEN_RE, sources)
    closes, copied_closes = _own_markers(view, RES_CLOSE_RE, sources)
    copied = [*copied_opens, *copied_closes]
    end_of_text = len(view.text)
    close_spans = [(m.start(), m.end()) for m in closes]
    implied = RES_CLOSE in stop and finish_reason == "stop" and opens
    if implied and not (close_spans and not view.text[close_spans[-1][1] :].strip()):
        # The server stopped on the `[/RES]` stop sequence and (OpenAI-style) did not return it.
        close_spans.append((end_of_text, end_of_text))
    if not close_spans:
        if finish_reason == "length":
            return Parsed(None, REWRITE_TRUNCATED, len(copied))
        if opens:
            return Parsed(None, REWRITE_UNCLOSED, len(copied))
        reason = REWRITE_COPIED_FROM[copied[-1]] if copied else REWRITE_MISSING_TAGS
        return Parsed(None, reason, len(copied))
    close_start, _ = close_spans[-1]
    before = [m for m in opens if m.end() <= close_start]
    if not before:
        reason = REWRITE_COPIED_FROM[copied[-1]] if copied_opens else REWRITE_MISSING_TAGS
        return Parsed(None, reason, len(copied))
    opening = before[-1]
    inside = [s for s, _ in close_spans if opening.end() <= s < close_start]
    if inside:  # the model's own closing tag inside the block
        return Parsed(None, REWRITE_NESTED_TAGS, len(copied))
    body = reply[_origin(view, opening.end()) : _origin(view, close_start)].strip()
    if not body:
        return Parsed(None, REWRITE_EMPTY, len(copied))
    return Parsed(body, copied=len(copied))


def _origin(view, index: int) -> int:
    """The index in the original text of view position `index` (its end maps to the text's end)."""
    return view.origin[index] if index < len(view.origin) else (view.origin[-1] + 1 if view.origin else 0)


def parse_answer(reply: str, finish_reason: str | None) -> Parsed:
    """A free answer (the distill stage): the stripped reply, not cut off by the token limit."""
    text = reply.strip()
    if finish_reason == "length":
        return Parsed(None, ANSWER_TRUNCATED)
    if not text:
        return Parsed(None, ANSWER_EMPTY)
    return Parsed(text)


def parse_instruction(reply: str, finish_reason: str | None, max_chars: int) -> Parsed:
    """Clean a backtranslated instruction."""
    text = reply.strip()
    if finish_reason == "length":
        return Parsed(None, INSTRUCTION_TRUNCATED)
    if not text:
        return Parsed(None, INSTRUCTION_EMPTY)
    if len(text) > max_chars:
        return Parsed(None, INSTRUCTION_TOO_LONG)
    return Parsed(text)
