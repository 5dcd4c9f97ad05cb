"""Humpback's header segments: web pages cut into the text that follows each HTML header.

Humpback's unlabelled data are "portions of text following an HTML header" (method.md, section 1.2).
With `segment.mode: headers`, each page (an HTML file, a WARC response record, or a corpus row whose
text field holds HTML) becomes one candidate per header `<h1>`-`<h6>`: the text under that header up to
the next header of the same or a higher level, lower-level sub-headers and their text included. The
page's text comes from Resiliparse, with its main-content extraction: the site's menus, banners, footers
and sidebars are left out before segmenting (chosen by measurement on 300 annotated real pages, see
`benchmarks/html_to_text.py`: 12 % of the hand-marked boilerplate in kept segments where bft's former
`html.parser` loop kept 40 %, as much main text in them, and 3.6 ms a page instead of 34 ms). Then, each
rule with its reason (configurable in `SegmentConfig`):

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

import html
import re
from dataclasses import dataclass, replace
from itertools import combinations

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

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

SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
# Resiliparse's "minimal HTML": headers as `<hN>...</hN>`, the rest `<p>`, `<ul>`/`<li>`, `<pre>`, `<br>`,
# every `<`, `>` and `&` of the text escaped, so these tags are the library's and never the page's.
HEADER_RE = re.compile(r"<h([1-6])>(.*?)</h\1>", re.DOTALL)
TAG_RE = re.compile(r"<[^>]*>")
EMPTY_HEADER_RE = re.compile(r"<(h[1-6])(?:\s[^<>]*)?>(?=</\1\s*>)", re.IGNORECASE)  # `<h2></h2>`


@dataclass
class Block:
    level: int  # 1-6 for a header, 0 for text
    text: str


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", html.unescape(TAG_RE.sub("\n", text)))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()


def page_blocks(page: str, main_content: bool = False) -> list[Block]:
    """Headers and the text between them, in page order; scripts, styles and hidden templates dropped.

    Resiliparse parses the page (Lexbor: the HTML5 parsing rules browsers follow, so broken markup is
    read as a browser reads it) and writes its text with the headers marked. With `main_content`, its
    boilerplate removal leaves out menus, headers and footers of the site, sidebars and the like
    (`benchmarks/html_to_text.py` measured what it keeps and drops), readers' comment sections
    included. Images' alt texts are not text. A header with no text is kept, as an empty header, for
    the `empty_header` rule.
    """
    page = EMPTY_HEADER_RE.sub(r"\g<0> ", page)  # the library leaves an element with no child out
    tree = HTMLTree.parse_from_bytes(page.encode("utf-8", "replace"), "utf-8")  # "replace": lone surrogates
    minimal = extract_plain_text(
        tree, preserve_formatting="minimal_html", main_content=main_content, alt_texts=False, comments=False
    )
    blocks = []
    for number, piece in enumerate(HEADER_RE.split(minimal)):
        if number % 3 == 1:
            level = int(piece)
        elif number % 3 == 2:
            blocks.append(Block(level, " ".join(_tidy(piece).split())))
        elif text := _tidy(piece):
            blocks.append(Block(0, text))
    return blocks


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
            segments = header_segments(page_blocks(item.text, main_content=True))
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
