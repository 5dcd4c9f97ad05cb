"""Why nothing got through: the likely cause when every record is rejected, in the user's terms.

A run (or a dry run) in which no document enters the first stage points at the input or a setting,
not at the documents: a wrong `--text-field`, a corpus that is not JSON lines, Humpback's header
segments over plain text. `bft generate` says so and exits non-zero instead of "succeeding" with
nothing, naming each reason with its count and what to check. The same hints serve a later stage that
rejects every document for one such reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice

from bft.generation.config import GenerateConfig
from bft.generation.corpus.documents import corpus_rows
from bft.generation.errors import BftError
from bft.generation.reasons import (
    CONTROL_CHARACTERS,
    DOCUMENT_TOO_LARGE,
    DOCUMENT_TOO_SHORT,
    EMPTY_TEXT,
    EXCEEDS_CONTEXT,
    HTML_IN_TEXT,
    INPUT_INVALID,
    INVALID_UNICODE,
    INVALID_UTF8,
    MALFORMED_JSON,
    MISSING_TEXT,
    NO_HEADER_SEGMENTS,
    NOT_A_JSON_OBJECT,
    RECORD_TOO_LARGE,
    SEGMENT_TOO_LONG,
    SEGMENT_TOO_SHORT,
    TEXT_NOT_A_STRING,
)

FIELDS_LOOK_AHEAD = 1000  # lines read to find a record that parses, when the first ones do not
TEXT_FIELD = "is --text-field right? (the first record's fields: {fields})"
# The reasons that point at the input or a setting, each with what to check. `{text_field}` and
# `{fields}` are filled in from the config and the corpus's first record.
REASON_HINTS = {
    MISSING_TEXT: "the records have no text field {text_field!r}; " + TEXT_FIELD,
    TEXT_NOT_A_STRING: "the field {text_field!r} holds no text; " + TEXT_FIELD,
    EMPTY_TEXT: "the field {text_field!r} is empty; " + TEXT_FIELD,
    MALFORMED_JSON: "lines that are not JSON: bft reads JSON lines, one object a line (.jsonl, .json, "
    "compressed or not), Parquet, HTML or WARC files",
    NOT_A_JSON_OBJECT: 'JSON lines that are not objects: each line must be one record, {{"id": ..., "text": ...}}',
    INVALID_UTF8: "lines that are not UTF-8 (corpus.invalid_utf8: replace decodes them with U+FFFD)",
    INVALID_UNICODE: "text that cannot be UTF-8 (corpus.invalid_unicode: replace)",
    RECORD_TOO_LARGE: "lines over corpus.max_record_bytes",
    NO_HEADER_SEGMENTS: "segment.mode is headers (Humpback's header segments, as --config humpback sets): it "
    "takes the text under the <h1>-<h6> headers of web pages, and these records hold none. It needs HTML "
    "pages (.html or .htm files), WARC files (.warc, .warc.gz) or rows whose text is HTML; a plain-text "
    "corpus such as Dolma runs with segment.mode: none (--config baft, or no --config)",
    SEGMENT_TOO_SHORT: "header segments under segment.min_chars ({min_chars} characters)",
    SEGMENT_TOO_LONG: "header segments over segment.max_chars ({max_chars} characters)",
    HTML_IN_TEXT: "text holding HTML, with prepare.html: reject (strip keeps the text)",
    CONTROL_CHARACTERS: "text holding control characters, with prepare.control_characters: reject (strip removes them)",
    DOCUMENT_TOO_LARGE: "documents over prepare.max_document_chars, with prepare.oversize: reject (truncate cuts them)",
    DOCUMENT_TOO_SHORT: "documents under prepare.min_document_chars after cleaning",
    EXCEEDS_CONTEXT: "documents over prepare.context_tokens in some stage (the flag names which); "
    "prepare.context_overflow: cut keeps their beginnings",
    INPUT_INVALID: "the server refused the stage's requests as invalid; check its settings (sampling "
    "parameters, model, mode)",
}


def likely_cause(reason: str, config: GenerateConfig) -> str | None:
    """What to check when records are rejected for `reason`, or None for a reason about the documents
    themselves (`duplicate_text`, a model's reply)."""
    hint = REASON_HINTS.get(reason)
    if hint is None:
        return None
    fields = first_record_fields(config) if "{fields}" in hint else ""
    segment = config.segment
    return hint.format(
        text_field=config.corpus.text_field, fields=fields, min_chars=segment.min_chars, max_chars=segment.max_chars
    )


def nothing_enters(config: GenerateConfig, records: int, rejected: Mapping[str, int], would: bool = False) -> str:
    """Why no document enters the run's first stage: `records` read, all rejected by prepare for `rejected`
    (reason -> count). `would`: said of a dry run."""
    first = config.stages[0]
    enters = "would enter" if would else "entered"
    if not records:
        return f"no record in the corpus {config.corpus.path}: no document {enters} {first}"
    reasons = {reason: count for reason, count in sorted(rejected.items()) if count}
    if len(reasons) == 1:
        (reason,) = reasons
        cause = likely_cause(reason, config)
        return f"prepare: all {records} documents rejected as {reason}, so none {enters} {first}" + (
            f": {cause}" if cause else ""
        )
    counts = ", ".join(f"{reason}: {count}" for reason, count in reasons.items())
    causes = [f"{reason}: {cause}" for reason in reasons if (cause := likely_cause(reason, config))]
    return f"prepare: all {records} documents rejected ({counts}), so none {enters} {first}" + (
        ". " + "; ".join(causes) if causes else ""
    )


def first_record_fields(config: GenerateConfig) -> str:
    """The fields of the corpus's first readable record, to set beside a text field it lacks."""
    corpus = config.corpus
    try:
        rows = corpus_rows(corpus.path, corpus.split, corpus.revision, "replace", malformed_lines="reject")
        for _, row in islice(rows, FIELDS_LOOK_AHEAD):
            if isinstance(row, dict):
                return ", ".join(sorted(k for k in row if not k.startswith("__"))) or "none"
    except BftError:
        pass
    return "unknown"
