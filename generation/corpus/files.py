"""Which files a corpus is made of, and how to open them: local paths, fsspec URLs, Hub datasets.

A corpus is a file, a folder of files (read in a stable, sorted order), an fsspec URL (`s3://`,
`hf://`, `memory://`, ...) or a Hub dataset id (`ORG/NAME`). Files are JSON lines (optionally gzip,
as Dolma ships them), Parquet, or web pages (HTML, WARC) for Humpback's header segments.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

from bft.generation.errors import CorpusError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz")  # Dolma ships JSON lines as .json.gz
PARQUET_SUFFIXES = (".parquet",)
PAGE_SUFFIXES = (".html", ".htm", ".warc", ".warc.gz")  # web pages, for Humpback's header segments
ALL_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + PAGE_SUFFIXES
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
