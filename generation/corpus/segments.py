"""Humpback's header segments: web pages cut into the text that follows each HTML header.

Humpback's unlabelled data are "portions of text following an HTML header" (method.md, section 1.2).
With `segment.mode: headers`, each page (an HTML file, a WARC response record, or a corpus row whose
text field holds HTML) becomes one candidate per header `<h1>`-`<h6>`: the text under that header up to
the next header of the same or a higher level, lower-level sub-headers and their text included. Then,
each rule with its reason (configurable in `SegmentConfig`):

- `empty_header`: a header with no text;
- `uppercase_header`: a header in capitals only (Humpback filters on the share of capitals);
- `navigation_header`: a header that is site furniture as a whole phrase ("Advertisement", "Quick
  links", "Free newsletter", "Related posts", "Comments (12)", ...; not "Menu planning");
- `segment_too_short` / `segment_too_long`: outside 600-3,000 characters;
- `repeated_sentences`: two sentences of the segment whose word-trigram Jaccard similarity reaches
  `repeated_sentence_jaccard` (boilerplate repeated down a page);
- `no_header_segments`: a page without any header.

Every segment, kept or dropped, becomes a record (`PAGE_ID#N`), so every drop is counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from itertools import combinations

from bft.generation.config import SegmentConfig
from bft.generation.reasons import (
    EMPTY_HEADER,
    NAVIGATION_HEADER,
    NO_HEADER_SEGMENTS,
    REPEATED_SENTENCES,
    SEGMENT_TOO_LONG,
    SEGMENT_TOO_SHORT,
    TOO_MANY_SEGMENTS,
    UPPERCASE_HEADER,
)
from bft.generation.records import Document, Rejected
from bft.generation.text import ngrams, words

HEADER_TAGS = {f"h{level}": level for level in range(1, 7)}
SKIPPED_TAGS = {"script", "style", "noscript", "template"}
BLOCK_TAGS = {"p", "div", "br", "li", "tr", "table", "section", "article", "blockquote", "pre", "ul", "ol"}
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Block:
    level: int  # 1-6 for a header, 0 for text
    text: str


class _Blocks(HTMLParser):
    """Headers and the text between them, in page order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.parts: list[str] = []
        self.header_level = 0
        self.skipping = 0

    def _flush(self) -> None:
        text = re.sub(r"[ \t]+", " ", "".join(self.parts))
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()
        if text or self.header_level:
            self.blocks.append(Block(self.header_level, text))
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag in SKIPPED_TAGS:
            self.skipping += 1
        elif tag in HEADER_TAGS:
            self._flush()
            self.header_level = HEADER_TAGS[tag]
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in HEADER_TAGS and self.header_level:
            self._flush()
            self.header_level = 0
        elif tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)

    def close(self):
        super().close()
        self._flush()


def page_blocks(html: str) -> list[Block]:
    parser = _Blocks()
    parser.feed(html)
    parser.close()
    return parser.blocks


def header_segments(blocks: list[Block]) -> list[tuple[str, str]]:
    """(header, text under it) for every header; sub-headers and their text are part of the text."""
    segments = []
    for index, block in enumerate(blocks):
        if not block.level:
            continue
        lines = []
        for later in blocks[index + 1 :]:
            if later.level and later.level <= block.level:
                break
            lines.append(later.text)
        segments.append((block.text, "\n".join(line for line in lines if line)))
    return segments


def has_repeated_sentences(text: str, threshold: float) -> bool:
    grams = [g for g in (set(ngrams(words(s), 3)) for s in SENTENCE_RE.split(text)) if g]
    return any(len(a & b) / len(a | b) >= threshold for a, b in combinations(grams, 2))


def is_navigation(header: str, phrases: list[str]) -> bool:
    """Whether the header is one of the navigation `phrases` as a whole (numbers aside, a plural allowed):
    "Quick Links" and "Comments (12)" are navigation, "Menu planning for a week" is not."""
    said = [w for w in words(header) if not w.isdigit()]
    for phrase in phrases:
        wanted = words(phrase)
        if said == wanted:
            return True
        if (
            wanted
            and len(said) == len(wanted)
            and said[:-1] == wanted[:-1]
            and said[-1]
            in (
                wanted[-1] + "s",
                wanted[-1] + "es",
            )
        ):
            return True
    return False


def verdict(header: str, text: str, config: SegmentConfig) -> str | None:
    """Why this segment is dropped, or None when it is kept."""
    letters = [c for c in header if c.isalpha()]
    if not header.strip():
        return EMPTY_HEADER
    if config.drop_uppercase_headers and len(letters) > 1 and all(c.isupper() for c in letters):
        return UPPERCASE_HEADER
    if is_navigation(header, config.navigation_headers):
        return NAVIGATION_HEADER
    if len(text) < config.min_chars:
        return SEGMENT_TOO_SHORT
    if len(text) > config.max_chars:
        return SEGMENT_TOO_LONG
    if has_repeated_sentences(text, config.repeated_sentence_jaccard):
        return REPEATED_SENTENCES
    return None


SEGMENTS_PER_PAGE = 1 << 16  # segment N of the page at position P sits at P * SEGMENTS_PER_PAGE + N


class Segmenter:
    """Turns a stream of pages (HTML in `text`) into a stream of segments.

    A segment's position is derived from its page's (see `SEGMENTS_PER_PAGE`), not counted along the
    stream, so pages read in separate blocks (`--executor ray`) get the same positions as read in one.
    """

    def __init__(self, config: SegmentConfig):
        self.config = config

    def __call__(self, items):
        for item in items:
            page = item.position * SEGMENTS_PER_PAGE
            if isinstance(item, Rejected):
                yield replace(item, position=page)
                continue
            segments = header_segments(page_blocks(item.text))
            if not segments:
                yield Rejected(
                    item.id,
                    NO_HEADER_SEGMENTS,
                    item.location,
                    page,
                    item.url,
                    item.source,
                    raw=item.text[:10_000],
                )
                continue
            for number, (header, text) in enumerate(segments, start=1):
                segment_id = f"{item.id}#{number}"
                position = page + number
                reason = TOO_MANY_SEGMENTS if number >= SEGMENTS_PER_PAGE else verdict(header, text, self.config)
                if reason:
                    yield Rejected(
                        segment_id, reason, item.location, position, item.url, item.source, raw=text[:10_000]
                    )
                else:
                    flags = [*item.flags, f"header:{header[:200]}"]
                    yield Document(segment_id, text, item.url, item.source, item.location, position, flags=flags)
