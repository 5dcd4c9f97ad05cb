"""Text measures every floor shares: words, n-grams, overlap, and stable hashes.

Ground floor: imports nothing of bft. Filters (`method/filters.py`), reply checks, header segments,
the data report and the builders all count in the same unit, so a figure means the same thing
wherever it is printed:

- `words(text)`: lower-cased `\\w+` runs, so punctuation and spacing never matter;
- `ngrams(tokens, n)`: consecutive n-tuples of those words;
- `copy_overlap(instruction, document)`: the share of the instruction's word 5-grams found in the
  document (an instruction that copies its document instead of asking about it);
- `grounding(response, document)`: the share of a rewrite's word 3-grams found in the document;
- `stable_hash64(text)`: a 64-bit hash stable across runs and machines (ids, duplicate texts, test
  splits); `file_sha256(path)`: a file's SHA-256, read in chunks.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

WORD_RE = re.compile(r"\w+", re.UNICODE)
ASCII_WORD_RE = re.compile(r"\w+", re.ASCII)  # the same runs on ASCII text
SURROGATE_RE = re.compile("[\ud800-\udfff]")  # lone UTF-16 surrogates: a str that cannot be UTF-8
COPY_NGRAM = 5
GROUNDING_NGRAM = 3
MIN_COPY_WORDS = 8  # shorter instructions share too few 5-grams to judge


def words(text: str) -> list[str]:
    """Lower-cased words, the unit of every overlap measure in bft."""
    return list(_words(text or ""))


@lru_cache(maxsize=64)  # a document is measured by several checks at each stage it reaches
def _words(text: str) -> tuple[str, ...]:
    if text.isascii():  # lower-casing first finds the same words (no letter changes length), in a third less time
        return tuple(ASCII_WORD_RE.findall(text.lower()))
    return tuple(w.lower() for w in WORD_RE.findall(text))


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


def stable_hash64(text: str) -> int:
    """A 64-bit hash of `text`, stable across runs and machines (ids, duplicate texts, test splits)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (the file may be larger than memory should grow)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def has_lone_surrogates(text: str) -> bool:
    """Whether `text` holds a lone UTF-16 surrogate, which cannot be written as UTF-8."""
    return SURROGATE_RE.search(text) is not None


def replace_lone_surrogates(text: str | None) -> str | None:
    """`text` with each lone surrogate replaced by U+FFFD (None stays None)."""
    if not text or text.isascii():  # the common case, kept cheap: ASCII holds no surrogate
        return text
    return SURROGATE_RE.sub("\ufffd", text)
