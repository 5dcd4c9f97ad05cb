"""The rows of one corpus file, streamed: `(location, row)` pairs, one record at a time.

Web corpora have broken lines. A line that cannot become a row (malformed JSON, JSON that is not an
object, invalid UTF-8, a line too large) is yielded as `Unreadable` under its location, so it becomes a
rejected record with its reason and the run goes on; it is never dropped silently. Set to `error`
(`corpus.malformed_lines`, `corpus.invalid_utf8`), such a line raises `CorpusError` naming the file and
line instead. A file that is not JSON lines at all (a JSON array) always raises. A UTF-8 byte-order
mark at the start of a line (a file saved by a Windows editor, or files concatenated) is read past.
Memory holds one record at a time, however large the file.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bft.generation.corpus.files import PAGE_SUFFIXES, PARQUET_SUFFIXES, has_suffix, is_url, open_binary
from bft.generation.errors import CorpusError
from bft.generation.reasons import INVALID_UTF8, MALFORMED_JSON, NOT_A_JSON_OBJECT, RECORD_TOO_LARGE

JSON_ARRAY_HINT = "; the file looks like a JSON array: bft reads JSON lines, one object per line"
MALFORMED_HINT = " (corpus.malformed_lines: reject makes such a line a rejected record and reads on)"
BOM = "\ufeff"  # a UTF-8 byte-order mark, as decoded


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
    path: Path | str, invalid_utf8: str = "error", max_bytes: int = 64 << 20, malformed_lines: str = "error"
) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
    """Yield (location, row) for each non-blank line.

    Lines over `max_bytes`, lines that are not UTF-8 when `invalid_utf8` is "reject", and lines that
    are not a JSON object when `malformed_lines` is "reject" (`malformed_json`, `not_a_json_object`)
    are yielded as `Unreadable` (rejected records, never silently dropped); "replace" decodes invalid
    UTF-8 with U+FFFD and flags the row; "error" raises `CorpusError` naming the file and line. A large
    record is held once at a time, not once per step of reading it.
    """
    try:
        with open_binary(path) as handle:
            number = 0
            while (raw := _read_line(handle, max_bytes)) is not None:
                number += 1
                location = f"{path}:{number}"
                if raw is TOO_LARGE:
                    yield location, Unreadable(RECORD_TOO_LARGE)
                    continue
                flags = []
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    if invalid_utf8 == "error":
                        raise CorpusError(f"{location}: invalid UTF-8 at byte {error.start} of the line") from None
                    line = raw.decode("utf-8", "replace")
                    if invalid_utf8 == "reject":
                        yield location, Unreadable(INVALID_UTF8, line[:10_000])
                        continue
                    flags = ["invalid_utf8_replaced"]
                del raw
                line = line.removeprefix(BOM)
                if not line or line.isspace():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    if number == 1 and line.lstrip().startswith("["):
                        raise CorpusError(
                            f"{location}: malformed JSON ({error.msg} at column {error.colno}){JSON_ARRAY_HINT}"
                        ) from None
                    if malformed_lines == "error":
                        raise CorpusError(
                            f"{location}: malformed JSON ({error.msg} at column {error.colno}){MALFORMED_HINT}"
                        ) from None
                    yield location, Unreadable(MALFORMED_JSON, line.rstrip("\r\n")[:10_000])
                    continue
                if not isinstance(row, dict):
                    if number == 1 and isinstance(row, list):
                        raise CorpusError(f"{location}: expected a JSON object, got list{JSON_ARRAY_HINT}")
                    if malformed_lines == "error":
                        raise CorpusError(
                            f"{location}: expected a JSON object, got {type(row).__name__}{MALFORMED_HINT}"
                        )
                    yield location, Unreadable(NOT_A_JSON_OBJECT, line.rstrip("\r\n")[:10_000])
                    continue
                del line
                if flags:
                    row["__flags__"] = flags
                yield location, row
    except CorpusError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as error:  # ValueError: bz2, zstd
        raise CorpusError(f"{path}: cannot read: {error}") from None
    except Exception as error:
        if type(error).__module__.startswith("zstd"):  # zstandard.ZstdError: a broken .zst file
            raise CorpusError(f"{path}: cannot read: {error}") from None
        raise


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


def iter_page_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """An HTML file as one row, or each HTML response of a WARC file (read with `warcio`)."""
    if has_suffix(path.name, (".html", ".htm")):
        yield str(path), {"id": str(path), "text": path.read_bytes().decode("utf-8", "replace").removeprefix(BOM)}
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


def rows_of_file(
    file: Path | str, invalid_utf8: str = "error", max_bytes: int = 64 << 20, malformed_lines: str = "error"
) -> Iterator[tuple[str, dict[str, Any] | Unreadable]]:
    """(location, row) for each record of one corpus file: a local path or an fsspec URL (s3://, hf://, ...)."""
    if isinstance(file, str) and not is_url(file):
        file = Path(file)
    name = str(file)
    if has_suffix(name, PARQUET_SUFFIXES):
        return iter_parquet_rows(file)
    if has_suffix(name, PAGE_SUFFIXES):
        if not isinstance(file, Path):
            raise CorpusError(f"{file}: HTML and WARC corpora are read from local files only")
        return iter_page_rows(file)
    return iter_jsonl_rows(file, invalid_utf8, max_bytes, malformed_lines)
