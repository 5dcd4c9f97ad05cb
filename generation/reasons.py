"""Every reason bft gives for rejecting a record, defined once: its kind, the stages that give it, its meaning.

Ground floor: the code that rejects a record names its reason from here, and the code that reads reasons back
(the card's parse rates, what a rerun sends again, the hints when nothing gets through) asks this registry
instead of keeping a list of its own. Journals, `stats.json` (`rejected_by_reason`) and the `rejected` config
hold these strings, so a reason's value never changes.

Each reason is of one kind:

- `input`: the document or the corpus record is the problem (prepare's rules, header segments, a prompt the
  server refuses as too long or invalid);
- `parse`: the model's reply could not be read (no marker, markers only copied from the prompt's texts, an
  unclosed tag, a reply cut off by the token limit, an empty one): the card's parse rates count these;
- `filter`: a judgement on a reply that was read (a score under the threshold, an instruction that copies
  its document, a reply in another language);
- `transient`: not a verdict on the document (its retries used up): a rerun sends it again.

`stages` are the journals a reason is written to: `prepare` (records rejected before any request), or the
stages that send requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from bft.generation.layout import OUTPUT_CONFIG_NAMES, PREPARE

INPUT, PARSE, FILTER, TRANSIENT = "input", "parse", "filter", "transient"
KINDS = (INPUT, PARSE, FILTER, TRANSIENT)
REQUEST_STAGES = tuple(OUTPUT_CONFIG_NAMES)  # the stages that send requests, in run order
FREE_TEXT_STAGES = ("backtranslate", "rewrite", "distill")  # replies in the document's language (not a score)
COPY_SOURCES = ("document", "prompt")  # where a copied marker came from (`method/markers.py`, `Sources`)


@dataclass(frozen=True)
class Reason:
    """One rejection reason: the code journals and datasets hold, its kind, the stages that write it, what it means."""

    code: str
    kind: str
    stages: tuple[str, ...]
    description: str


REASONS: dict[str, Reason] = {}


def _reason(code: str, kind: str, stages: tuple[str, ...], description: str) -> str:
    """Register `code` and return it (each constant below is its own code)."""
    if kind not in KINDS or code in REASONS:
        raise ValueError(f"reason {code!r}: an unknown kind {kind!r}, or registered twice")
    REASONS[code] = Reason(code, kind, stages, description)
    return code


# the stages a group of reasons below is written to
_P, _B, _C, _W, _D = (PREPARE,), ("backtranslate",), ("curate",), ("rewrite",), ("distill",)

# -- corpus lines and records (corpus/rows.py, corpus/documents.py) ---------------------------------------
RECORD_TOO_LARGE = _reason("record_too_large", INPUT, _P, "a corpus line over corpus.max_record_bytes")
INVALID_UTF8 = _reason("invalid_utf8", INPUT, _P, "a corpus line that is not UTF-8 (corpus.invalid_utf8: reject)")
MALFORMED_JSON = _reason("malformed_json", INPUT, _P, "a corpus line that is not JSON (corpus.malformed_lines: reject)")
NOT_A_JSON_OBJECT = _reason("not_a_json_object", INPUT, _P, "a corpus line that is JSON but not an object")
MISSING_TEXT = _reason("missing_text", INPUT, _P, "a record without the text field")
TEXT_NOT_A_STRING = _reason("text_not_a_string", INPUT, _P, "a record whose text field holds no string")
INVALID_UNICODE = _reason("invalid_unicode", INPUT, _P, "a lone surrogate in a text, id, URL or source")
EMPTY_TEXT = _reason("empty_text", INPUT, _P, "a text that is empty, or nothing but whitespace and controls")

# -- Humpback's header segments (corpus/segments.py) -------------------------------------------------------
NO_HEADER_SEGMENTS = _reason("no_header_segments", INPUT, _P, "a page without any <h1>-<h6> header")
TOO_MANY_SEGMENTS = _reason("too_many_segments", INPUT, _P, "a page's segments past the positions one page has")
EMPTY_HEADER = _reason("empty_header", INPUT, _P, "a header with no text")
UPPERCASE_HEADER = _reason("uppercase_header", INPUT, _P, "a header in capitals only")
NAVIGATION_HEADER = _reason(
    "navigation_header", INPUT, _P, "a header that is site furniture (segment.navigation_headers)"
)
SEGMENT_TOO_SHORT = _reason("segment_too_short", INPUT, _P, "a segment under segment.min_chars")
SEGMENT_TOO_LONG = _reason("segment_too_long", INPUT, _P, "a segment over segment.max_chars")
REPEATED_SENTENCES = _reason("repeated_sentences", INPUT, _P, "a segment repeating a sentence (boilerplate)")

# -- prepare's rules (corpus/prepare.py) ---------------------------------------------------------------------
CONTROL_CHARACTERS = _reason("control_characters", INPUT, _P, "control characters (prepare.control_characters: reject)")
HTML_IN_TEXT = _reason("html", INPUT, _P, "HTML left in the text (prepare.html: reject)")
DOCUMENT_TOO_LARGE = _reason("document_too_large", INPUT, _P, "over prepare.max_document_chars (oversize: reject)")
DOCUMENT_TOO_SHORT = _reason("document_too_short", INPUT, _P, "under prepare.min_document_chars after cleaning")
DUPLICATE_TEXT = _reason("duplicate_text", INPUT, _P, "the cleaned text of an earlier document (prepare.dedup)")
EXCEEDS_CONTEXT = _reason("exceeds_context", INPUT, _P, "a prompt of some stage over prepare.context_tokens")

# -- requests (endpoints/failures.py, endpoints/client.py, run/engine.py) --------------------------------------
INPUT_TOO_LONG = _reason(
    "input_too_long", INPUT, REQUEST_STAGES, "the server refused the prompt as longer than its context"
)
INPUT_INVALID = _reason(
    "input_invalid", INPUT, REQUEST_STAGES, "the server refused the request as invalid (400/413/422)"
)
REQUEST_FAILED = _reason(
    "request_failed", TRANSIENT, REQUEST_STAGES, "no reply after every retry (429, 5xx, timeouts, resets)"
)

# -- every reply, before it is parsed (method/replies.py) ----------------------------------------------------
REPLY_EMPTY = _reason("reply_empty", PARSE, REQUEST_STAGES, "nothing but whitespace after bft's own prefill")
REPLY_REPEATS_PROMPT = _reason(
    "reply_repeats_prompt", FILTER, FREE_TEXT_STAGES, "eight consecutive words of the prompt template's own text"
)
REPLY_OTHER_LANGUAGE = _reason(
    "reply_other_language", FILTER, FREE_TEXT_STAGES, "mostly another script or language than the document's"
)

# -- backtranslate (method/parsing.py, method/stages.py) ---------------------------------------------------------
INSTRUCTION_EMPTY = _reason("instruction_empty", PARSE, _B, "an empty instruction")
INSTRUCTION_TRUNCATED = _reason("instruction_truncated", PARSE, _B, "the instruction hit the token limit")
INSTRUCTION_TOO_LONG = _reason("instruction_too_long", PARSE, _B, "over backtranslate.max_instruction_chars")
INSTRUCTION_META_TEXT = _reason("instruction_meta_text", FILTER, _B, "talks about the task (meta_patterns)")
INSTRUCTION_COPIES_DOCUMENT = _reason(
    "instruction_copies_document", FILTER, _B, "more of its word 5-grams from the document than max_copy_overlap"
)

# -- curate -----------------------------------------------------------------------------------------------
SCORE_MISSING = _reason("score_missing", PARSE, _C, "no `Score:` the model wrote")
SCORE_UNPARSEABLE = _reason("score_unparseable", PARSE, _C, "the score is no integer (`4.5`, `five`)")
SCORE_OUT_OF_RANGE = _reason("score_out_of_range", PARSE, _C, "the score is outside 1-5")
SCORE_COPIED_FROM = {
    source: _reason(
        f"score_copied_from_{source}", PARSE, _C, f"the reply's only `Score:` markers copied from the {source}"
    )
    for source in COPY_SOURCES
}
SCORE_BELOW_THRESHOLD = _reason("score_below_threshold", FILTER, _C, "the score is under curate.min_score")
SCORE_PROBABILITIES_MISSING = _reason(
    "score_probabilities_missing", FILTER, _C, "score_mode: expected, and no probabilities came with the score"
)

# -- rewrite -----------------------------------------------------------------------------------------------
REWRITE_MISSING_TAGS = _reason("rewrite_missing_tags", PARSE, _W, "no [RES] ... [/RES] block the model wrote")
REWRITE_UNCLOSED = _reason("rewrite_unclosed", PARSE, _W, "a [RES] never closed")
REWRITE_NESTED_TAGS = _reason("rewrite_nested_tags", PARSE, _W, "the model's own tags inside the block")
REWRITE_EMPTY = _reason("rewrite_empty", PARSE, _W, "an empty block")
REWRITE_TRUNCATED = _reason("rewrite_truncated", PARSE, _W, "the rewrite hit the token limit")
REWRITE_COPIED_FROM = {
    source: _reason(f"rewrite_copied_from_{source}", PARSE, _W, f"the reply's only [RES] tags copied from the {source}")
    for source in COPY_SOURCES
}
REWRITE_REFUSAL = _reason("rewrite_refusal", FILTER, _W, "the rewrite declines (rewrite.refusal_patterns)")
REWRITE_UNGROUNDED = _reason("rewrite_ungrounded", FILTER, _W, "grounding under rewrite.min_grounding")

# -- distill -----------------------------------------------------------------------------------------------
ANSWER_EMPTY = _reason("answer_empty", PARSE, _D, "an empty answer")
ANSWER_TRUNCATED = _reason("answer_truncated", PARSE, _D, "the answer hit the token limit")


def reasons_of_kind(kind: str, stage: str | None = None) -> frozenset[str]:
    """The reasons of `kind` (one of `KINDS`), only those `stage` gives when it is named."""
    if kind not in KINDS:
        raise ValueError(f"no reason kind {kind!r}: one of {', '.join(KINDS)}")
    return frozenset(r.code for r in REASONS.values() if r.kind == kind and (stage is None or stage in r.stages))


TRANSIENT_REASONS = reasons_of_kind(TRANSIENT)  # not a verdict on the document: a rerun sends it again
