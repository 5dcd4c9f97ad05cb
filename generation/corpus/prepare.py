"""The prepare stage: rules that make a raw web document safe and sized for the prompts.

Each rule either cleans the text and adds a flag to the record, or rejects the document with a reason;
which one is set in `PrepareConfig` (`prepare:` in a run config). In order:

1. control characters (NUL, other C0/C1 controls except tab and newlines): `strip` (flag
   `control_characters_removed`) or `reject` (`control_characters`);
2. HTML left in the text (`looks_like_html`: one active-content tag such as `<script>`, `<style>` or
   `<iframe>`, one element opened and closed, one tag with an attribute, a doctype, or three tags;
   a stray `<`, a `<3` or code's `a<b && c>d` are not HTML): `strip` to its text, dropping
   `<script>`/`<style>` bodies (flag `html_stripped`), `keep`, or `reject` (`html`);
3. size: over `max_document_chars`, `truncate` at a word boundary (flag `truncated:N->M_chars`) or
   `reject` (`document_too_large`); under `min_document_chars` after cleaning, `document_too_short`;
4. exact duplicates: a document whose cleaned text repeats an earlier one is `duplicate_text`
   (`dedup`; only a 64-bit hash of each text is kept);
5. context: with `context_tokens` set, a document whose backtranslation prompt would not fit the backward
   model's context is `exceeds_context` (BAFT keeps whole documents rather than cutting them);
6. markers: documents holding the prompts' markers are flagged `markers:...`; the stages escape them
   when building prompts (`escaping.py`).
"""

from __future__ import annotations

import re
from dataclasses import replace

from bft.generation.config import PrepareConfig
from bft.generation.corpus.segments import page_blocks
from bft.generation.method.escaping import Escaper
from bft.generation.method.fitting import cut_at_whitespace
from bft.generation.reasons import (
    CONTROL_CHARACTERS,
    DOCUMENT_TOO_LARGE,
    DOCUMENT_TOO_SHORT,
    DUPLICATE_TEXT,
    EMPTY_TEXT,
    EXCEEDS_CONTEXT,
    HTML_IN_TEXT,
)
from bft.generation.records import Document, Rejected
from bft.generation.text import stable_hash64

CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Active content: one of these tags is HTML enough, wherever it stands.
ACTIVE_TAGS = "script|style|iframe|frame|frameset|object|embed|applet|noscript"
ACTIVE = frozenset(ACTIVE_TAGS.split("|"))
# The tags of page structure that count. Words a web tutorial writes in angle brackets as placeholders or
# names (`<title>`, `<code>`, `<pre>`, `<label>`, `<option>`, `<template>`...) do not: such a text is prose
# about HTML, and stripping it would lose them.
HTML_TAGS = (
    f"{ACTIVE_TAGS}|html|head|body|meta|link|p|div|span|br|hr|a|ul|ol|li|table|tr|td|th|h[1-6]|img|strong|em|"
    "b|i|nav|footer|header|section|article|form|input|button"
)
# A tag: its name, then nothing, blanks and attributes, or a self-closing slash: `<p>`, `<br/>`, `<a href="x">`,
# never `<3`, `a < b` or `<bold>`.
OPEN_TAG_RE = re.compile(rf"<({HTML_TAGS})(\s[^<>]{{0,500}})?/?>", re.IGNORECASE)
CLOSE_TAG_RE = re.compile(rf"</({HTML_TAGS})\s*>", re.IGNORECASE)
ATTRIBUTE_RE = re.compile(r"""\s[a-z][\w:-]*\s*=\s*(?:"[^"]*"|'[^']*')""", re.IGNORECASE)  # name="value"
DOCTYPE_RE = re.compile(r"<!doctype\s+html", re.IGNORECASE)
HTML_MIN_TAGS = 3  # bare tags (no attribute, none closed) that make a text HTML
HTML_SCAN_CHARS = 200_000
UNCLOSED_SKIPPED_RE = re.compile(r"<(script|style)\b", re.IGNORECASE)


def looks_like_html(text: str) -> bool:
    """Whether the text holds HTML markup, not prose or code that happens to use `<` and `>`.

    HTML is: a doctype; one active-content tag (`<script>`, `<style>`, `<iframe>`, ...); one element
    opened and closed (`<b>...</b>`); one tag with an attribute (`<a href="...">`) or a self-closing one
    (`<br/>`); or `HTML_MIN_TAGS` bare tags. A `<3`, `a < b`, `List<String>` or `a<b && c>d` is not.
    """
    head = text[:HTML_SCAN_CHARS]
    if DOCTYPE_RE.search(head):
        return True
    opened: set[str] = set()
    tags = 0
    for match in OPEN_TAG_RE.finditer(head):
        name, rest = match.group(1).lower(), match.group(2) or ""
        if name in ACTIVE or ATTRIBUTE_RE.search(rest) or match.group(0).endswith("/>"):
            return True
        opened.add(name)
        tags += 1
    for match in CLOSE_TAG_RE.finditer(head):
        if match.group(1).lower() in opened:
            return True
        tags += 1
    return tags >= HTML_MIN_TAGS


def html_to_text(text: str) -> str:
    """The text of an HTML page: headers and paragraphs as paragraphs, scripts and styles dropped.

    A `<script>` or `<style>` that is never closed is kept as text: an HTML parser would take everything
    after it for its body, and prose that names the tag ("put it in a <script> tag") would lose the rest.
    """
    return "\n\n".join(block.text for block in page_blocks(_unclosed_as_text(text)) if block.text)


def _unclosed_as_text(text: str) -> str:
    """`text` with the `<` of each `<script`/`<style` that has no closing tag after it written as `&lt;`."""
    parts, start = [], 0
    lowered = text.lower()
    for match in UNCLOSED_SKIPPED_RE.finditer(text):
        if lowered.find(f"</{match.group(1).lower()}", match.end()) < 0:
            parts += [text[start : match.start()], "&lt;"]
            start = match.start() + 1
    return "".join(parts) + text[start:] if parts else text


class Preparer:
    """Applies the prepare rules to each document of a stream."""

    def __init__(self, config: PrepareConfig, fits=None, duplicates: set[int] | None = None):
        """`fits` is the context check (`method/fitting.ContextFit`: `overflow(text)`, `cut(text)`), or None.

        `duplicates`, when given, are the positions already known to repeat an earlier text (decided
        over the whole corpus by `corpus/blocks.py`); otherwise texts are compared along the stream.
        """
        self.config = config
        self.escaper = Escaper(config.markers) if config.escape_markers else None
        self.fits = fits
        self.duplicates = duplicates
        self.seen_texts: set[int] = set()

    def __call__(self, items):
        for item in items:
            yield item if isinstance(item, Rejected) else self.prepare(item)

    def prepare(self, document: Document) -> Document | Rejected:
        cleaned = self.clean(document)
        if isinstance(cleaned, Rejected):
            return cleaned
        if self.config.dedup and self._repeats(cleaned):
            return self._rejected(document, cleaned.text, DUPLICATE_TEXT)
        if self.fits is not None and (stage := self.fits.overflow(cleaned.text)) is not None:
            cut = self.fits.cut(cleaned.text) if self.config.context_overflow == "cut" else None
            if cut is None or len(cut) < self.config.min_document_chars:
                return self._rejected(document, cleaned.text, EXCEEDS_CONTEXT, f"exceeds_context:{stage}")
            cleaned.flags.append(f"truncated_to_context:{len(cleaned.text)}->{len(cut)}_chars")
            cleaned.text = cut
        if self.escaper is not None:
            found = self.escaper.found(cleaned.text)
            if found:
                cleaned.flags.append("markers:" + ",".join(found))
        return cleaned

    def _repeats(self, cleaned: Document) -> bool:
        """Whether the cleaned text came earlier: from the known positions, else along the stream."""
        if self.duplicates is not None:
            return cleaned.position in self.duplicates
        key = stable_hash64(cleaned.text)
        if key in self.seen_texts:
            return True
        self.seen_texts.add(key)
        return False

    def _rejected(self, document: Document, text: str, reason: str, *flags: str) -> Rejected:
        return Rejected(
            document.id,
            reason,
            document.location,
            document.position,
            document.url,
            document.source,
            raw=text[: self.config.max_document_chars],
            flags=[*document.flags, *flags],
        )

    def clean(self, document: Document) -> Document | Rejected:
        """Rules 1-3 (characters, HTML, size): what each document gets on its own, before dedup."""
        config, text, flags = self.config, document.text, list(document.flags)
        original_chars, cut = len(text), False
        if config.oversize == "truncate" and len(text) > 4 * config.max_document_chars:
            # room for cleaning to shrink it, and a bound on the copies the rules below make
            text, cut = text[: 4 * config.max_document_chars], True

        def rejected(reason: str) -> Rejected:
            return self._rejected(document, text, reason)

        if CONTROL_RE.search(text):
            if config.control_characters == "reject":
                return rejected(CONTROL_CHARACTERS)
            text = CONTROL_RE.sub("", text)
            flags.append("control_characters_removed")
        if config.html != "keep" and looks_like_html(text):
            if config.html == "reject":
                return rejected(HTML_IN_TEXT)
            text = html_to_text(text)
            flags.append("html_stripped")
        if len(text) > config.max_document_chars:
            if config.oversize == "reject":
                return rejected(DOCUMENT_TOO_LARGE)
            text, cut = cut_at_whitespace(text, config.max_document_chars), True
        if cut:
            flags.append(f"truncated:{original_chars}->{len(text)}_chars")
        if len(text.strip()) < config.min_document_chars:
            return rejected(DOCUMENT_TOO_SHORT if text.strip() else EMPTY_TEXT)
        return replace(document, text=text, flags=flags)
