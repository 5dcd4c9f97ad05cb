"""Reading a corpus as documents: ids, the duplicate-id rule, and records without usable text.

Records follow Dolma's format (`id`, `text`, `source`, `metadata.url`, ...); other datasets work with
`text_field` / `id_field`. Everything is streamed, one record at a time, so memory does not grow with
the corpus (only a 64-bit hash of each id seen, to catch duplicates).

Two kinds of trouble, handled differently:

- a corpus that cannot be read (missing, not JSON lines, unknown Hub id) raises `CorpusError` naming
  the file: the user must fix the input;
- a line that cannot become a row (malformed JSON, not an object, invalid UTF-8, too large) and a
  record that cannot be used (no text, empty text, text that is not a string) are yielded as
  `Rejected` records with a reason, so they are counted and written, never lost; the corpus settings
  (`malformed_lines`, `invalid_utf8`: `error`) make the broken lines fatal instead.

`row_id`, `DuplicateIds` and `row_item` are the pieces `read_corpus` is made of; the Ray executor's
block plan (`corpus/blocks.py`) uses the same pieces so both executors decide alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bft.generation.corpus.files import HUB_ID_RE, JSONL_SUFFIXES, PARQUET_SUFFIXES, corpus_files, has_suffix
from bft.generation.corpus.rows import Unreadable, iter_hub_rows, rows_of_file
from bft.generation.errors import CorpusError
from bft.generation.reasons import EMPTY_TEXT, INVALID_UNICODE, MISSING_TEXT, TEXT_NOT_A_STRING
from bft.generation.records import Document, Rejected
from bft.generation.text import has_lone_surrogates, replace_lone_surrogates, stable_hash64

LOCATION_ID_PREFIX = "location:"


def content_id(text: str) -> str:
    """Stable id for documents without one: derived from the text."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _url_of(row: dict[str, Any]) -> str | None:
    metadata = row.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("url"), str):
        return metadata["url"]
    return row["url"] if isinstance(row.get("url"), str) else None


def corpus_rows(
    path: str,
    split: str = "train",
    revision: str | None = None,
    invalid_utf8: str = "error",
    max_record_bytes: int = 64 << 20,
    malformed_lines: str = "error",
) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
    """(location, row) for every record of a local file or folder, or of a Hub dataset id, streamed."""
    local = Path(path)
    if local.exists():
        return (
            row
            for file in corpus_files(local)
            for row in rows_of_file(file, invalid_utf8, max_record_bytes, malformed_lines)
        )
    if HUB_ID_RE.match(path) and not has_suffix(path, JSONL_SUFFIXES + PARQUET_SUFFIXES):
        return iter_hub_rows(path, split, revision)
    raise CorpusError(f"corpus {path!r}: no such file or folder (and not a Hub dataset id of the form org/name)")


def read_corpus(
    path: str,
    text_field: str = "text",
    id_field: str = "id",
    split: str = "train",
    revision: str | None = None,
    limit: int | None = None,
    duplicate_ids: str = "error",
    invalid_utf8: str = "error",
    max_record_bytes: int = 64 << 20,
    invalid_unicode: str = "reject",
    malformed_lines: str = "error",
) -> Iterator[Document | Rejected]:
    """Stream documents from a local path or a Hub dataset id.

    Raises `CorpusError` for unreadable input and for a document id seen twice (two records must never
    merge silently) unless `duplicate_ids` is "rename": the later record becomes `ID#2`, `ID#3`, ...
    and is flagged `duplicate_id`. Yields `Rejected` for records without usable text, and for lines that
    are too large, not UTF-8 or not a JSON object, as the settings say (see `iter_jsonl_rows`).
    """
    rows = corpus_rows(path, split, revision, invalid_utf8, max_record_bytes, malformed_lines)
    ids = DuplicateIds(duplicate_ids)
    for position, (location, row) in enumerate(rows):
        if limit is not None and position >= limit:
            return
        if isinstance(row, Unreadable):
            doc_id, _ = ids.admit(location_id(location), True, location, position)
            yield unreadable_item(location, row, position, doc_id)
            continue
        doc_id, derived = row_id(row, location, text_field, id_field)
        doc_id, flags = ids.admit(doc_id, derived, location, position)
        yield row_item(row, location, position, doc_id, flags, text_field, invalid_unicode, id_field)


def location_id(location: str) -> str:
    """The id of a record that has none and no text to derive one from: its location, in its own namespace."""
    return LOCATION_ID_PREFIX + replace_lone_surrogates(location)


def unreadable_item(location: str, row: Unreadable, position: int, doc_id: str) -> Rejected:
    """A line that could not become a row, as a rejected record (its id is its location's)."""
    return Rejected(doc_id, row.reason, replace_lone_surrogates(location), position, raw=row.raw)


def row_id(row: dict[str, Any], location: str, text_field: str, id_field: str) -> tuple[str, bool]:
    """A row's document id, and whether bft derived it: its `id_field`, else one derived from its text
    (`sha256:...`), else from its location (`location:...`). Text that cannot be written as UTF-8
    (lone surrogates) becomes U+FFFD in an id."""
    raw_id = row.get(id_field)
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise CorpusError(f"{location}: field {id_field!r} must be a string or integer, got {type(raw_id).__name__}")
    if raw_id is None or raw_id == "":
        text = row.get(text_field)
        return (content_id(text) if isinstance(text, str) else location_id(location)), True
    return replace_lone_surrogates(str(raw_id)), False


class DuplicateIds:
    """The one corpus-wide rule of reading: an id seen twice is an error, or renamed `ID#2`, `ID#3`, ...

    Only a 64-bit hash of each id is kept, so memory stays small however long the corpus. Fed ids in
    corpus order, it decides the same way wherever the rows were read (see `corpus/blocks.py`).
    """

    def __init__(self, mode: str = "error"):
        self.mode = mode
        self.seen: dict[int, int] = {}  # hash of each id -> its position

    def admit(self, doc_id: str, derived: bool = False, location: str = "", position: int = 0) -> tuple[str, list[str]]:
        """The id the document keeps and the flags that say why it changed (none when it did not).

        An id bft `derived` (from a text or a location) is always renamed on a clash: two records without
        ids and with the same text stay two records (the second is then prepare's `duplicate_text`).
        """
        key = stable_hash64(doc_id)
        flags: list[str] = []
        if key in self.seen:
            if self.mode != "rename" and not derived:
                raise CorpusError(
                    f"{location}: duplicate document id {doc_id!r} (first seen as record {self.seen[key] + 1} of the "
                    "corpus); fix the input, or set corpus.duplicate_ids: rename"
                )
            original, copy = doc_id, 2
            while stable_hash64(f"{original}#{copy}") in self.seen:
                copy += 1
            doc_id = f"{original}#{copy}"
            key = stable_hash64(doc_id)
            flags = [f"duplicate_id:{original}"]
        self.seen[key] = position
        return doc_id, flags


def row_item(
    row: dict[str, Any],
    location: str,
    position: int,
    doc_id: str,
    id_flags: list[str],
    text_field: str,
    invalid_unicode: str = "reject",
    id_field: str = "id",
) -> Document | Rejected:
    """One read row as a document, or as a rejected record when it has no usable text.

    Text that cannot be written as UTF-8 (lone UTF-16 surrogates, which JSON's `\\ud83d` escapes can
    make) is rejected `invalid_unicode`, or with `invalid_unicode: replace` becomes U+FFFD and the
    document is flagged `invalid_unicode_replaced`.
    """
    flags = [*row.pop("__flags__", []), *id_flags]
    text = row.get(text_field)
    location = replace_lone_surrogates(location)
    url, source = _url_of(row), row.get("source") if isinstance(row.get("source"), str) else None
    odd = [v for v in (text, row.get(id_field), url, source) if isinstance(v, str)]
    url, source = replace_lone_surrogates(url), replace_lone_surrogates(source)
    if text_field not in row or text is None:
        return Rejected(doc_id, MISSING_TEXT, location, position, url, source)
    if not isinstance(text, str):
        return Rejected(doc_id, TEXT_NOT_A_STRING, location, position, url, source, raw=json.dumps(text)[:1000])
    if any(has_lone_surrogates(v) for v in odd):
        text = replace_lone_surrogates(text)
        if invalid_unicode != "replace":
            return Rejected(doc_id, INVALID_UNICODE, location, position, url, source, raw=text[:10_000])
        flags.append("invalid_unicode_replaced")
    if not text or text.isspace():
        return Rejected(doc_id, EMPTY_TEXT, location, position, url, source, raw=text)
    return Document(doc_id, text, url, source, location, position, flags=flags)
