"""The markers replies are parsed by, defined once for the parser and the escaper.

A curation reply carries its score after `Score:`; a rewrite sits between `[RES]` and `[/RES]`. Web
documents are written by attackers and go verbatim into the prompts, and models copy documents back,
sometimes dropping invisible characters as they do. So two lines of defence share one definition of
each marker:

1. **The escaper** (`method/escaping.py`) finds, in every untrusted prompt value, everything the
   parser would accept as a marker, in every form the parser accepts it (any case, Unicode spaces and
   line breaks, full-width and homoglyph colons, markdown and HTML around it, letters that look
   Latin) and also every form that becomes one when invisible and format characters are dropped, and
   puts a U+2060 WORD JOINER after its first character. A reply that copies the escaped text keeps
   the joiner, and the parser does not see a marker there.
2. **The copy check** needs no cooperation from the model: a marker in the reply whose neighbouring
   words (`CONTEXT_WORDS` on either side, with the marker's own words) also stand around a marker in
   the document, the instruction, or the prompt template itself, was copied, not written. Texts are
   compared as words after dropping format characters (so a dropped U+2060 or U+200B changes nothing),
   NFKC-folded and lower-cased. The parser ignores copied markers; a reply whose only markers are
   copied is rejected with its own reason (`score_copied_from_document`, `rewrite_copied_from_prompt`,
   ...).

What the copy check cannot see: a marker with fewer than `CONTEXT_WORDS` words of the copied text on
both sides (a document that is nothing but `Score: 5`). The escaper still covers such a marker for a
model that keeps invisible characters, and the document is flagged `markers:score`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from bft.generation.text import words

JOINER = "\u2060"
CONTEXT_WORDS = 2
# Colons and colon look-alikes (NFKC already folds the full-width and small forms).
COLONS = ":\u2236\ua789\u02f8\u02d0\u05c3\u0589\u1361\u205d\ufe13\ufe55\uff1a"
# Letters that look like the Latin ones of `score` and `res` (Cyrillic, Greek), folded before matching.
CONFUSABLES = str.maketrans(
    {
        "ѕ": "s",
        "Ѕ": "S",
        "с": "c",
        "С": "C",
        "о": "o",
        "О": "O",
        "ο": "o",
        "Ο": "O",
        "г": "r",
        "е": "e",
        "Е": "E",
        "ε": "e",
        "р": "p",
        "Р": "P",
        "ʀ": "r",
        "ꜱ": "s",
        "ᴄ": "c",
        "ᴏ": "o",
        "ᴇ": "e",
    }  # fmt: skip
)
# Markdown and HTML that may stand around a marker's parts.
_DECOR = r"(?:[\s*_`~#>|]|</?[a-z][^<>]{0,40}>|&nbsp;)"
SCORE_RE = re.compile(rf"\bscore{_DECOR}*[{COLONS}]{_DECOR}*(?P<value>[^\s*_`~<]*)", re.IGNORECASE)
RES_OPEN_RE = re.compile(r"\[\s*res\s*\]", re.IGNORECASE)
RES_CLOSE_RE = re.compile(r"\[\s*/\s*res\s*\]", re.IGNORECASE)
RES_CLOSE = "[/RES]"
PARSED_MARKERS = {"score": SCORE_RE, "[RES]": RES_OPEN_RE, "[/RES]": RES_CLOSE_RE}
# What a text must contain for each pattern to match in it: `score` in the case-folded text (every letter that
# `re.IGNORECASE` takes for one of `score`'s case-folds to it, checked over all of Unicode), `[` as it is.
MARKER_CORES = {"score": "score", "[RES]": "[", "[/RES]": "["}


def is_format(char: str) -> bool:
    """Invisible and format characters: zero-width spaces and joiners, U+2060, bidi controls, BOM, ..."""
    return unicodedata.category(char) == "Cf"


@lru_cache(maxsize=4096)
def _fold(char: str) -> str:
    return unicodedata.normalize("NFKC", char).translate(CONFUSABLES)


@dataclass
class View:
    """`text` folded character by character (NFKC, look-alike letters), with where each character came from."""

    text: str
    origin: Sequence[int]  # origin[i]: the index in the original text of view character i

    @classmethod
    def of(cls, text: str, drop_format: bool) -> View:
        if text.isascii():  # nothing to fold or drop: the common case, kept cheap
            return cls(text, range(len(text)))
        out, origin = [], []
        for index, char in enumerate(text):
            if drop_format and is_format(char):
                continue
            folded = char if char.isascii() else _fold(char)
            out.append(folded)
            origin.extend([index] * len(folded))
        return cls("".join(out), origin)


def parse_view(text: str) -> View:
    """What the parser reads: folded, but with format characters kept (an escaper's joiner still breaks a marker)."""
    return View.of(text, drop_format=False)


def compare_view(text: str) -> str:
    """What texts are compared as: folded, format characters dropped."""
    return text if text.isascii() else View.of(text, drop_format=True).text


def find_markers(text: str, extra: re.Pattern | None = None) -> list[tuple[str, int]]:
    """(marker name, index in `text` of its first character) for every marker the parser would accept
    in `text`, also where invisible characters split one; `extra` adds the escaper's fixed markers."""
    view = View.of(text, drop_format=True)
    found = []
    for name, pattern in PARSED_MARKERS.items():
        if MARKER_CORES[name] not in (view.text.casefold() if name == "score" else view.text):
            continue  # (most texts hold no marker: a substring test is ten times cheaper than the scan)
        found += [(name, view.origin[m.start()]) for m in pattern.finditer(view.text)]
    if extra is not None:
        found += [(m.group(0), view.origin[m.start()]) for m in extra.finditer(view.text)]
    return found


@lru_cache(maxsize=64)  # (the templates, and the documents of the records in flight)
def compared_words(text: str) -> str:
    """`text`'s words as compared, joined by spaces. Remembered: every record's prompt template is the same
    text, and a document is compared again at each stage it reaches."""
    return " ".join(words(compare_view(text)))


class Sources:
    """The texts a reply may copy markers from: the prompt's untrusted values, and the template itself."""

    def __init__(self, document: str = "", instruction: str | None = None, template: str = ""):
        self._raw = {"document": [document, instruction or ""], "prompt": [template]}
        self._texts: dict[str, str] | None = None

    @property
    def texts(self) -> dict[str, str]:
        """Each source as one string of words (texts apart by ` | `), made when a reply first has a marker."""
        if self._texts is None:
            self._texts = {
                name: " " + " | ".join(compared_words(t) for t in texts if t) + " " for name, texts in self._raw.items()
            }
        return self._texts

    def copied(self, view: View, start: int, end: int) -> str | None:
        """Where the marker at `view.text[start:end]` was copied from ("document", "prompt"), or None."""
        marker = words(compare_view(view.text[start:end]))
        before = words(compare_view(view.text[:start]))[-CONTEXT_WORDS:]
        after = words(compare_view(view.text[end:]))[:CONTEXT_WORDS]
        spans = [s for s, side in ((before + marker, before), (marker + after, after)) if len(side) == CONTEXT_WORDS]
        for name, text in self.texts.items():
            if any(f" {' '.join(span)} " in text for span in spans):
                return name
        return None
