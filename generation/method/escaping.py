"""Neutralizing the prompts' own markers inside untrusted text, reversibly.

Web documents (and instructions a model wrote from them) go verbatim into prompts whose replies are
parsed by markers: `[INST]`/`[/INST]` frame a Llama-2 prompt, `[RES]`/`[/RES]` delimit a rewrite, a line
`Score: N` carries a curation score, and chat-template tokens such as `<|im_start|>` frame turns. A page
that contains them could steer the model, or be copied into a reply and parsed as if the model wrote it.

Escaping inserts U+2060 WORD JOINER (invisible, not whitespace) after the first character of every
marker occurrence: `[RES]` becomes `[\u2060RES]`, `<|im_start|>` becomes `<\u2060|im_start|>`, and a line
starting `Score:` becomes `Score\u2060:`. The escaped text reads the same to a model, but no longer
matches a marker, so even a reply that copies it cannot be mistaken for the model's own `[RES]` or
`Score:`. It is reversible: a word joiner already in the text is doubled first, and `unescape` maps a
doubled joiner back to one and drops the single ones.
"""

from __future__ import annotations

import re

from bft.generation.config import DEFAULT_MARKERS

JOINER = "\u2060"
SCORE_LINE_RE = re.compile(r"(?im)^(\W*score)(\W*:)")  # a line that starts like the rubric's "Score: N"


class Escaper:
    """Escapes a fixed set of markers (plus `Score:` lines) in text bound for a prompt."""

    def __init__(self, markers=DEFAULT_MARKERS):
        self.markers = tuple(sorted(set(markers), key=len, reverse=True))
        alternatives = "|".join(re.escape(m) for m in self.markers)
        self.marker_re = re.compile(alternatives, re.IGNORECASE) if self.markers else None

    def found(self, text: str) -> list[str]:
        """The markers (and `Score:` lines) present in `text`, for flags."""
        names = sorted({m.group(0) for m in self.marker_re.finditer(text)}) if self.marker_re else []
        if SCORE_LINE_RE.search(text):
            names.append("Score:")
        return names

    def escape(self, text: str) -> str:
        if JOINER not in text and not self.found(text):
            return text
        text = text.replace(JOINER, JOINER * 2)
        if self.marker_re is not None:
            text = self.marker_re.sub(lambda m: m.group(0)[0] + JOINER + m.group(0)[1:], text)
        return SCORE_LINE_RE.sub(lambda m: m.group(1) + JOINER + m.group(2), text)


def unescape(text: str) -> str:
    """Undo `Escaper.escape`: a doubled joiner was the text's own, a single one was inserted."""
    return re.sub(JOINER + "{1,2}", lambda m: JOINER if len(m.group(0)) == 2 else "", text)
