"""Recognizing odd model replies: empty, repeating the prompt, or in another language than the document.

These checks run on the model's own reply before a stage keeps it (parsers and these checks never read
the document as if the model wrote it). Each returns a reason or None:

- `reply_empty`: nothing but whitespace (after the answer prefill bft sent itself);
- `reply_repeats_prompt`: the reply holds a run of `ECHO_WORDS` consecutive words of the prompt
  template's own text (not the document's): the model echoed its instructions;
- `reply_other_language`: the reply's letters are mostly of another script than the document's (Latin
  vs Cyrillic, CJK, Arabic, ...), or the document is English and a reply of at least `MIN_WORDS` words
  has almost none of English's commonest words. A heuristic, documented as such; `check_language:
  false` turns it off.

Replies that never stop (they hit `max_tokens`) are recognized by the parsers from the finish reason
(`instruction_truncated`, `rewrite_truncated`).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from bft.generation.method.markers import compare_view
from bft.generation.method.prompts import PromptTemplate
from bft.generation.reasons import REPLY_EMPTY, REPLY_OTHER_LANGUAGE, REPLY_REPEATS_PROMPT
from bft.generation.text import ngrams, words

ASCII_NON_LETTERS = bytes(b for b in range(128) if not chr(b).isalpha())
NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
ECHO_WORDS = 8
MIN_WORDS = 12
ENGLISH_COMMON = frozenset(
    [
        "the",
        "of",
        "and",
        "to",
        "a",
        "in",
        "is",
        "it",
        "that",
        "for",
        "on",
        "with",
        "as",
        "are",
        "be",
        "this",
        "was",
        "by",
        "or",
        "an",
        "at",
        "from",
        "you",
        "your",
        "can",
        "how",
        "what",
        "which",
        "why",
        "when",
        "do",
        "does",
        "i",
        "we",
        "they",
        "he",
        "she",
        "not",
        "have",
        "has",
        "will",
        "would",
        "should",
    ]
)


@lru_cache(maxsize=16)
def _template_shingles(template: PromptTemplate) -> frozenset[tuple[str, ...]]:
    """Every run of ECHO_WORDS words in the template's fixed text (between its placeholders)."""
    pieces = re.split("|".join(re.escape(f"<{p}>") for p in template.placeholders) or "$^", template.text)
    shingles = set()
    for piece in pieces:
        shingles.update(ngrams(words(piece), ECHO_WORDS))
    return frozenset(shingles)


def repeats_prompt(reply: str, template: PromptTemplate, document: str = "") -> bool:
    """Whether the reply holds `ECHO_WORDS` consecutive words of the template that the document does
    not also hold (a document may quote the prompt; a model copying that document is not echoing)."""
    shingles = _template_shingles(template)
    echoed = [gram for gram in ngrams(words(compare_view(reply)), ECHO_WORDS) if gram in shingles]
    if not echoed:
        return False
    quoted = set(ngrams(words(compare_view(document)), ECHO_WORDS))
    return any(gram not in quoted for gram in echoed)


def dominant_script(text: str, sample: int = 4000) -> str | None:
    """The Unicode script most of the letters of `text` (its first `sample` characters) belong to."""
    head = text[:sample]
    # ASCII letters are Latin: counted by a regex, so only other letters pay for a Unicode name lookup
    counts: dict[str, int] = {"LATIN": len(head.encode("ascii", "ignore").translate(None, ASCII_NON_LETTERS))}
    for char in NON_ASCII_RE.findall(head):
        if char.isalpha():
            name = unicodedata.name(char, "")
            script = "CJK" if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")) else name.split(" ")[0]
            counts[script] = counts.get(script, 0) + 1
    if sum(counts.values()) < 10:
        return None
    return max(counts, key=counts.get)


def english_share(words: list[str]) -> float:
    return sum(w in ENGLISH_COMMON for w in words) / len(words) if words else 0.0


def other_language(reply: str, document: str) -> bool:
    reply_script, document_script = dominant_script(reply), dominant_script(document)
    if reply_script and document_script and reply_script != document_script:
        return True
    reply_words, document_words = words(reply), words(document[:4000])
    return (
        document_script == "LATIN"
        and english_share(document_words) >= 0.2
        and len(reply_words) >= MIN_WORDS
        and english_share(reply_words) < 0.04
    )


def check_reply(
    generated: str, finish_reason: str | None, document: str, template: PromptTemplate, language: bool, echo: bool
) -> str | None:
    """The reason to reject the model's own text `generated` (without bft's prefill), or None.

    A reply cut off by the token limit is left to the parsers, which name it `..._truncated`.
    """
    if not generated.strip():
        return REPLY_EMPTY
    if finish_reason == "length":
        return None
    if echo and repeats_prompt(generated, template, document):
        return REPLY_REPEATS_PROMPT
    if language and other_language(generated, document):
        return REPLY_OTHER_LANGUAGE
    return None
