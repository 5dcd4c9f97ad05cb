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
  splits); `file_sha256(path)`: a file's SHA-256, read in chunks;
- `first_repeat(text, min_chars)`: where a reply starts repeating one of its own sentences or lines (a small
  model's loop), which the stream reader and the stages cut at when a stage asks (`sampling.stop_on_repeat`).
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
    """Consecutive n-tuples of `tokens` (none when fewer than n). Zipped shifted copies: three times faster
    than slicing a tuple at each start, and every document is cut into them at several stages."""
    return list(zip(*(tokens[shift:] for shift in range(n)), strict=False))


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


UNIT_END_RE = re.compile(r"[.!?](?=\s)|\n")  # a sentence's end (its mark, then white space) or a line's


def first_repeat(text: str, min_chars: int) -> int | None:
    """Where `text` starts saying again what it already said: the start of the first sentence or line of at
    least `min_chars` characters (stripped) equal to an earlier one; None while none is.

    A small model past its answer often loops on one paragraph until its token limit (measured on the demo:
    7 of 17 rewrites). A unit counts once it has ended (its mark and a space, or a new line), so a reply
    still arriving is judged on what is whole, and the answer is the same however the text came in pieces.
    """
    return RepeatFinder(min_chars).find(text)


class RepeatFinder:
    """`first_repeat` over a text that grows (a streamed reply): each `find` reads only the units that ended
    since the last, so watching a reply costs its length once, not once per piece."""

    def __init__(self, min_chars: int):
        self.min_chars = min_chars
        self._seen: set[str] = set()
        self._begin = 0  # where the unit not yet ended begins
        self._scanned = 0  # how much of the text the last `find` searched

    def find(self, text: str) -> int | None:
        """Where `text` (the earlier text, grown) starts repeating itself, or None."""
        # from the last character searched: a mark there may have been waiting for its space
        searched_from, self._scanned = max(self._begin, self._scanned - 1), len(text)
        for match in UNIT_END_RE.finditer(text, searched_from):
            begin, end = self._begin, match.end()
            unit = text[begin:end].strip()
            if len(unit) >= self.min_chars:
                if unit in self._seen:
                    return begin + len(text[begin:end]) - len(text[begin:end].lstrip())
                self._seen.add(unit)
            self._begin = end
        return None
