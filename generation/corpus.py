"""Reading a corpus: local JSONL / gzip / Parquet files, folders of them, or a streamed Hub dataset.

Records follow Dolma's format (`id`, `text`, `source`, `metadata.url`, ...); other datasets work with
`text_field` / `id_field`. Everything is streamed, one record at a time, so memory does not grow with
the corpus (only the set of ids seen, to catch duplicates).

Two kinds of trouble, handled differently:

- a file that is broken (missing, malformed JSON line, invalid UTF-8, unknown Hub id) raises
  `CorpusError` naming the file and line: the user must fix the input;
- a well-formed record that cannot be used (no text, empty text, text that is not a string) is
  yielded as a `Rejected` record with a reason, so it is counted and written, never lost.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bft.generation.errors import CorpusError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")  # Dolma ships JSON lines as .json.gz
PARQUET_SUFFIXES = (".parquet",)
PAGE_SUFFIXES = (".html", ".htm", ".warc", ".warc.gz")  # web pages, for Humpback's header segments
ALL_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + PAGE_SUFFIXES
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Document:
    """One input document, with where it came from."""

    id: str
    text: str
    url: str | None
    source: str | None
    location: str  # "file:line" or "hub-id@revision/split#row", for error messages and provenance
    position: int  # order in the corpus, for stable output order
    flags: list[str] = field(default_factory=list)


@dataclass
class Rejected:
    """A record that was read but cannot enter the pipeline."""

    id: str
    reason: str
    location: str
    position: int
    url: str | None = None
    source: str | None = None
    raw: str | None = None


def content_id(text: str) -> str:
    """Stable id for documents without one: derived from the text."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def corpus_files(path: Path) -> list[Path]:
    """The data files of a local corpus path, in a stable order."""
    if path.is_file():
        if not path.name.endswith(ALL_SUFFIXES):
            raise CorpusError(f"{path}: unsupported file type; expected one of {ALL_SUFFIXES}")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(ALL_SUFFIXES))
    if not files:
        raise CorpusError(f"{path}: folder holds no {', '.join(ALL_SUFFIXES)} files")
    return files


def iter_page_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """An HTML file as one row, or each HTML response of a WARC file (read with `warcio`)."""
    if path.name.endswith((".html", ".htm")):
        yield str(path), {"id": str(path), "text": path.read_bytes().decode("utf-8", "replace")}
        return
    try:
        from warcio.archiveiterator import ArchiveIterator
    except ImportError:
        raise CorpusError(f"{path}: reading WARC files needs warcio: pip install 'bft[warc]'") from None
    with open(path, "rb") as handle:
        try:
            for number, record in enumerate(ArchiveIterator(handle), start=1):
                if record.rec_type != "response":
                    continue
                content_type = record.http_headers.get_header("Content-Type", "") if record.http_headers else ""
                if "html" not in content_type:
                    continue
                page = record.content_stream().read().decode("utf-8", "replace")
                url = record.rec_headers.get_header("WARC-Target-URI")
                record_id = record.rec_headers.get_header("WARC-Record-ID") or f"{path}#record{number}"
                yield f"{path}#record{number}", {"id": record_id, "text": page, "url": url}
        except Exception as error:  # warcio raises several types for broken archives
            raise CorpusError(f"{path}: not a readable WARC file: {error}") from None


@dataclass
class Unreadable:
    """A line that cannot become a row but does not break the file: it becomes a rejected record."""

    reason: str
    raw: str = ""


TOO_LARGE = object()


def _read_line(handle, max_bytes: int, chunk: int = 1 << 20) -> bytearray | object | None:
    """The next line, read in bounded pieces; `TOO_LARGE` (nothing held) over `max_bytes`; None at the end."""
    line = bytearray(handle.readline(chunk))
    if not line:
        return None
    too_large = False
    while not line.endswith(b"\n"):
        piece = handle.readline(chunk)
        if not piece:
            break
        if not too_large and len(line) + len(piece) > max_bytes:
            too_large, line = True, bytearray()  # read on to the end of the line, keeping nothing
        if too_large:
            if piece.endswith(b"\n"):
                break
            continue
        line += piece
    return TOO_LARGE if too_large or len(line) > max_bytes else line


def iter_jsonl_rows(
    path: Path | str, invalid_utf8: str = "error", max_bytes: int = 64 << 20
) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
    """Yield (location, row) for each non-blank line; broken lines raise `CorpusError`.

    Lines over `max_bytes`, and lines that are not UTF-8 when `invalid_utf8` is "reject", are yielded
    as `Unreadable` (rejected records, never silently dropped); "replace" decodes them with U+FFFD and
    flags the row. A large record is held once at a time, not once per step of reading it.
    """
    try:
        with open_binary(path) as handle:
            number = 0
            while (raw := _read_line(handle, max_bytes)) is not None:
                number += 1
                location = f"{path}:{number}"
                if raw is TOO_LARGE:
                    yield location, Unreadable("record_too_large")
                    continue
                flags = []
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    if invalid_utf8 == "error":
                        raise CorpusError(f"{location}: invalid UTF-8 at byte {error.start} of the line") from None
                    line = raw.decode("utf-8", "replace")
                    if invalid_utf8 == "reject":
                        yield location, Unreadable("invalid_utf8", line[:10_000])
                        continue
                    flags = ["invalid_utf8_replaced"]
                del raw
                if not line or line.isspace():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CorpusError(f"{location}: malformed JSON ({error.msg} at column {error.colno})") from None
                del line
                if not isinstance(row, dict):
                    raise CorpusError(f"{location}: expected a JSON object, got {type(row).__name__}")
                if flags:
                    row["__flags__"] = flags
                yield location, row
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise CorpusError(f"{path}: cannot read: {error}") from None


def iter_parquet_rows(path: Path | str) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path if isinstance(path, Path) else open_binary(path))
    except Exception as error:  # pyarrow raises several unrelated types for broken files
        raise CorpusError(f"{path}: not a readable Parquet file: {error}") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            number += 1
            yield f"{path}#row{number}", row


def iter_hub_rows(dataset_id: str, split: str, revision: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    import datasets

    where = f"{dataset_id}@{revision or 'main'}/{split}"
    try:
        stream = datasets.load_dataset(dataset_id, split=split, streaming=True, revision=revision)
        for number, row in enumerate(stream, start=1):
            yield f"{where}#row{number}", row
    except CorpusError:
        raise
    except Exception as error:  # datasets and huggingface_hub raise many types; the message is what matters
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CorpusError(
            f"cannot load Hub dataset {dataset_id!r} (split {split!r}, revision {revision or 'main'}): {message}"
        ) from None


def _url_of(row: dict[str, Any]) -> str | None:
    metadata = row.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("url"), str):
        return metadata["url"]
    return row["url"] if isinstance(row.get("url"), str) else None


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
) -> Iterator[Document | Rejected]:
    """Stream documents from a local path or a Hub dataset id.

    Raises `CorpusError` for unreadable input and for a document id seen twice (two records must never
    merge silently) unless `duplicate_ids` is "rename": the later record becomes `ID#2`, `ID#3`, ...
    and is flagged `duplicate_id`. Yields `Rejected` for records without usable text, and for lines that
    are too large or not UTF-8 (see `iter_jsonl_rows`).
    """
    local = Path(path)
    if local.exists():
        rows = (row for file in corpus_files(local) for row in _rows_of(file, invalid_utf8, max_record_bytes))
    elif HUB_ID_RE.match(path) and not path.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES):
        rows = iter_hub_rows(path, split, revision)
    else:
        raise CorpusError(f"corpus {path!r}: no such file or folder (and not a Hub dataset id of the form org/name)")

    ids = DuplicateIds(duplicate_ids)
    for position, (location, row) in enumerate(rows):
        if limit is not None and position >= limit:
            return
        if isinstance(row, Unreadable):
            yield unreadable_item(location, row, position)
            continue
        doc_id, flags = ids.admit(row_id(row, location, text_field, id_field), location, position)
        yield row_item(row, location, position, doc_id, flags, text_field)


def unreadable_item(location: str, row: Unreadable, position: int) -> Rejected:
    """A line that could not become a row, as a rejected record (its location is its id)."""
    return Rejected(location, row.reason, location, position, raw=row.raw)


def row_id(row: dict[str, Any], location: str, text_field: str, id_field: str) -> str:
    """A row's document id: its `id_field`, else one derived from its text (or its location)."""
    raw_id = row.get(id_field)
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise CorpusError(f"{location}: field {id_field!r} must be a string or integer, got {type(raw_id).__name__}")
    if raw_id is None or raw_id == "":
        text = row.get(text_field)
        return content_id(text) if isinstance(text, str) else f"{location}"
    return str(raw_id)


class DuplicateIds:
    """The one corpus-wide rule of reading: an id seen twice is an error, or renamed `ID#2`, `ID#3`, ...

    Only a 64-bit hash of each id is kept, so memory stays small however long the corpus. Fed ids in
    corpus order, it decides the same way wherever the rows were read (see `ray_blocks.py`).
    """

    def __init__(self, mode: str = "error"):
        self.mode = mode
        self.seen: dict[int, int] = {}  # hash of each id -> its position

    def admit(self, doc_id: str, location: str, position: int) -> tuple[str, list[str]]:
        """The id the document keeps and the flags that say why it changed (none when it did not)."""
        key = stable_hash64(doc_id)
        flags: list[str] = []
        if key in self.seen:
            if self.mode != "rename":
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
    row: dict[str, Any], location: str, position: int, doc_id: str, id_flags: list[str], text_field: str
) -> Document | Rejected:
    """One read row as a document, or as a rejected record when it has no usable text."""
    flags = [*row.pop("__flags__", []), *id_flags]
    text = row.get(text_field)
    url, source = _url_of(row), row.get("source") if isinstance(row.get("source"), str) else None
    if text_field not in row or text is None:
        return Rejected(doc_id, "missing_text", location, position, url, source)
    if not isinstance(text, str):
        return Rejected(doc_id, "text_not_a_string", location, position, url, source, raw=json.dumps(text)[:1000])
    if not text or text.isspace():
        return Rejected(doc_id, "empty_text", location, position, url, source, raw=text)
    return Document(doc_id, text, url, source, location, position, flags=flags)


def count_documents(path: str, limit: int | None = None) -> int | None:
    """How many records a local corpus holds (for progress bars), or None for Hub datasets.

    Parquet files say so in their metadata; JSON lines are counted (non-blank lines), which reads the
    files once more, so callers run this in a thread beside the real work.
    """
    local = Path(path)
    if not local.exists():
        return None
    import pyarrow.parquet as pq

    total = 0
    try:
        for file in corpus_files(local):
            if file.name.endswith(PARQUET_SUFFIXES):
                total += pq.ParquetFile(file).metadata.num_rows
                continue
            with open_binary(file) as handle:
                total += sum(1 for line in handle if line.strip())
            if limit is not None and total >= limit:
                break
    except Exception:  # a broken file is reported by the reader itself, with its line; no total then
        return None
    return min(total, limit) if limit is not None else total


def stable_hash64(text: str) -> int:
    """A 64-bit hash of `text`, stable across runs and machines (ids, duplicate texts, test splits)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _rows_of(file: Path | str, invalid_utf8: str, max_bytes: int) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
    name = str(file)
    if name.endswith(PARQUET_SUFFIXES):
        return iter_parquet_rows(file)
    if name.endswith(PAGE_SUFFIXES):
        if not isinstance(file, Path):
            raise CorpusError(f"{file}: HTML and WARC corpora are read from local files only")
        return iter_page_rows(file)
    return iter_jsonl_rows(file, invalid_utf8, max_bytes)


def rows_of_file(
    file: str, invalid_utf8: str = "error", max_bytes: int = 64 << 20
) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
    """(location, row) for each record of one corpus file: a local path or an fsspec URL (s3://, hf://, ...)."""
    return _rows_of(file if is_url(file) else Path(file), invalid_utf8, max_bytes)


def is_url(path: str) -> bool:
    return "://" in path


def open_binary(path: Path | str):
    """A local file or fsspec URL opened for binary reading, gunzipped when its name ends in .gz."""
    name = str(path)
    if isinstance(path, Path):
        return gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")  # noqa: SIM115 (caller closes)
    import fsspec

    try:
        handle = fsspec.open(name, "rb").open()
    except Exception as error:  # fsspec backends raise their own types
        raise CorpusError(f"{name}: cannot open: {error}") from None
    # both wrappers give the bounded readline(size) that the JSONL reader relies on
    return gzip.GzipFile(fileobj=handle, mode="rb") if name.endswith(".gz") else io.BufferedReader(handle)


def corpus_file_list(path: str, split: str = "train", revision: str | None = None) -> list[str]:
    """Every data file of a corpus, in reading order: a local path, an fsspec URL, or a Hub dataset.

    The same files, in the same order, that `read_corpus` reads; a Hub dataset resolves to its
    `hf://` data files for `split` (what `datasets` would load). Used to read files in parallel.
    """
    if Path(path).exists():
        return [str(file) for file in corpus_files(Path(path))]
    if is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path)
        protocol = path.split("://", 1)[0]
        try:
            found = sorted(fs.find(root)) if fs.isdir(root) else [root] if fs.exists(root) else []
        except Exception as error:  # fsspec backends raise their own types
            raise CorpusError(f"corpus {path!r}: cannot list: {error}") from None
        files = [f"{protocol}://{f}" for f in found if f.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)]
        if not files:
            raise CorpusError(f"corpus {path!r}: no {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)} files there")
        return files
    if HUB_ID_RE.match(path):
        return hub_data_files(path, split, revision)
    raise CorpusError(f"corpus {path!r}: no such file or folder (and not a Hub dataset id of the form org/name)")


def hub_data_files(dataset_id: str, split: str, revision: str | None) -> list[str]:
    """The `hf://` data files of one split of a Hub dataset, as `datasets` resolves them."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(dataset_id, revision=revision)
        files = (builder.config.data_files or {}).get(split)
    except Exception as error:  # datasets and huggingface_hub raise many types; the message is what matters
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CorpusError(
            f"cannot resolve Hub dataset {dataset_id!r} (revision {revision or 'main'}): {message}"
        ) from None
    files = [str(f) for f in files or [] if str(f).endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)]
    if not files:
        raise CorpusError(
            f"Hub dataset {dataset_id!r} has no JSONL or Parquet data files for split {split!r} "
            "(a dataset built by a loading script cannot be read in parallel)"
        )
    return files
