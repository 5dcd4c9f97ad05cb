"""Neutralizing the prompts' own markers inside untrusted text, reversibly.

Web documents (and instructions a model wrote from them) go verbatim into prompts whose replies are
parsed by markers: `[INST]`/`[/INST]` frame a Llama-2 prompt, `[RES]`/`[/RES]` delimit a rewrite,
`Score: N` carries a curation score, and chat-template tokens such as `<|im_start|>` frame turns. A page
that contains them could steer the model, or be copied into a reply and parsed as if the model wrote it.

Escaping inserts U+2060 WORD JOINER (invisible, not whitespace) after the first character of every
marker occurrence: `[RES]` becomes `[\u2060RES]`, `<|im_start|>` becomes `<\u2060|im_start|>`, and
`Score:` becomes `S\u2060core:`. Which occurrences count is `method/markers.py`'s one definition:
everything the parser would accept, in every form, also where invisible characters split a marker.
The escaped text reads the same to a model but no longer matches a marker, so a reply that copies it
cannot be mistaken for the model's own `[RES]` or `Score:` (a model that drops the joiner is caught by
the copy check, `markers.Sources`). It is reversible: a word joiner already in the text is doubled, and
`unescape` maps a doubled joiner back to one and drops the single ones.
"""

from __future__ import annotations

import re

from bft.generation.config import DEFAULT_MARKERS
from bft.generation.method.markers import JOINER, find_markers


class Escaper:
    """Escapes the parsed markers and a fixed set of others (`prepare.markers`) in text bound for a prompt."""

    def __init__(self, markers=DEFAULT_MARKERS):
        self.markers = tuple(sorted(set(markers), key=len, reverse=True))
        alternatives = "|".join(re.escape(m) for m in self.markers)
        self.marker_re = re.compile(alternatives, re.IGNORECASE) if self.markers else None

    def found(self, text: str) -> list[str]:
        """The markers present in `text` (in any form the parser or the escaper knows), by their names
        (the configured marker, `[RES]`, `[/RES]`, `Score:` last), for flags."""
        canonical = {m.lower(): m for m in self.markers} | {"[res]": "[RES]", "[/res]": "[/RES]"}
        names = {canonical.get(name.lower(), name) for name, _ in find_markers(text, self.marker_re)}
        return sorted(names - {"score"}) + (["Score:"] if "score" in names else [])

    def escape(self, text: str) -> str:
        points = {index for _, index in find_markers(text, self.marker_re)}
        if JOINER not in text and not points:
            return text
        out = []
        for index, char in enumerate(text):
            out.append(JOINER * 2 if char == JOINER else char)
            if index in points:
                out.append(JOINER)
        return "".join(out)


def unescape(text: str) -> str:
    """Undo `Escaper.escape`: a doubled joiner was the text's own, a single one was inserted."""
    return re.sub(JOINER + "{1,2}", lambda m: JOINER if len(m.group(0)) == 2 else "", text)
