"""Content filters on parsed model output: degenerate instructions, refusals, grounding.

- `copy_overlap(instruction, document)`: the share of the instruction's word 5-grams that occur in the
  document. Under-trained backward models copy the document instead of asking about it (method.md,
  section 4); above `backtranslate.max_copy_overlap` the pair is rejected `instruction_copies_document`.
- `meta_text(instruction, patterns)`: instructions that talk about the task ("the most likely
  question", "the text below", "instruction backtranslation") are rejected `instruction_meta_text`.
- `refusal(response, patterns)`: a rewrite that declines ("I'm sorry, but I cannot ...") is rejected
  `rewrite_refusal`.
- `grounding(response, document)`: the share of the rewrite's word 3-grams found in the document,
  recorded on every rewritten row; `rewrite.min_grounding` optionally rejects low ones
  (`rewrite_ungrounded`).

All comparisons are on lower-cased word sequences (`\\w+`), so punctuation and spacing do not matter.
"""

from __future__ import annotations

import re

WORD_RE = re.compile(r"\w+", re.UNICODE)
COPY_NGRAM = 5
GROUNDING_NGRAM = 3
MIN_COPY_WORDS = 8  # shorter instructions share too few 5-grams to judge

DEFAULT_META_PATTERNS = [
    r"\bmost likely question\b",
    r"\bthe (text|passage|answer|response) (below|above)\b",
    r"\bcandidate answer\b",
    r"\binstruction backtranslation\b",
    r"\b(write|generate) (a|the) (question|instruction) (for|to which)\b",
]
DEFAULT_REFUSAL_PATTERNS = [
    r"^\W*(i'?m|i am) (sorry|afraid)\b",
    r"^\W*i (cannot|can'?t|won'?t|am unable to|'m unable to)\b",
    r"^\W*as an ai( language model)?\b",
    r"^\W*i apologi[sz]e\b",
    r"^\W*unfortunately,? i (cannot|can'?t)\b",
]


def words(text: str) -> list[str]:
    """Lower-cased words, the unit of every overlap measure here and in `replies`/`segments`."""
    return [w.lower() for w in WORD_RE.findall(text or "")]


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def copy_overlap(instruction: str, document: str) -> float:
    """Share of the instruction's word 5-grams found in the document (0 for short instructions)."""
    tokens = words(instruction)
    if len(tokens) < MIN_COPY_WORDS:
        return 0.0
    grams = ngrams(tokens, COPY_NGRAM)
    present = set(ngrams(words(document), COPY_NGRAM))
    return sum(g in present for g in grams) / len(grams)


def grounding(response: str, document: str) -> float:
    """Share of the response's word 3-grams found in the document (1.0 for responses under 3 words)."""
    grams = ngrams(words(response), GROUNDING_NGRAM)
    if not grams:
        return 1.0
    present = set(ngrams(words(document), GROUNDING_NGRAM))
    return sum(g in present for g in grams) / len(grams)


def matches_any(text: str, patterns: list[str]) -> bool:
    """Whether `text` matches one of `patterns` (case-insensitive; `^` anchors at the start of the text)."""
    return any(re.search(p, text or "", re.IGNORECASE) for p in patterns)
