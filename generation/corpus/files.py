"""Which files a corpus is made of, and how to open them: local paths, fsspec URLs, Hub datasets.

A corpus is a file, a folder of files (read in a stable, sorted order), an fsspec URL (`s3://`,
`hf://`, `memory://`, ...) or a Hub dataset id (`ORG/NAME`). Files are JSON lines (plain, or compressed
with gzip as Dolma ships them, zstd or bzip2), Parquet, or web pages (HTML, WARC) for Humpback's header
segments. Suffixes match in any case (`DATA.JSONL`). A folder's other files are listed in a warning,
never skipped silently. Hidden files and folders (a name starting with a dot) are never corpus data:
a `bft generate` output folder keeps its journals under `.bft/`, and tools and file systems leave
their own (`.git/`, `._page.jsonl`); nor is an output folder's `stats.json` (beside its
`run_config.yaml`). They are named in the warning and not read.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from bft.generation.errors import CorpusError
from bft.generation.layout import RUN_CONFIG_FILE, STATS_FILE

COMPRESSIONS = ("", ".gz", ".zst", ".bz2")
# JSON lines; Dolma ships them as .json.gz, so .json is read as JSON lines too
JSONL_SUFFIXES = tuple(f"{base}{c}" for base in (".jsonl", ".json") for c in COMPRESSIONS)
PARQUET_SUFFIXES = (".parquet",)
PAGE_SUFFIXES = (".html", ".htm", ".warc", ".warc.gz")  # web pages, for Humpback's header segments
ALL_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + PAGE_SUFFIXES
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WARNED: set[Path] = set()


def has_suffix(name: str, suffixes: tuple[str, ...]) -> bool:
    return name.lower().endswith(suffixes)


def is_hidden(parts: Iterable[str]) -> bool:
    """Whether a path inside a corpus folder (given as its parts) is hidden: a part starts with a dot."""
    return any(part.startswith(".") and part not in (".", "..") for part in parts)


def is_run_state(file: Path) -> bool:
    """Whether a file is a `bft generate` output folder's own state: its `stats.json`, beside `run_config.yaml`."""
    return file.name == STATS_FILE and (file.parent / RUN_CONFIG_FILE).is_file()


def corpus_files(path: Path) -> list[Path]:
    """The data files of a local corpus path, in a stable order; a folder's other files are warned about,
    and its hidden files and folders and a generate output's own state (`.bft/`, `stats.json`) are
    named, never read."""
    if path.is_file():
        if not has_suffix(path.name, ALL_SUFFIXES):
            raise CorpusError(f"{path}: unsupported file type; expected one of {', '.join(ALL_SUFFIXES)}")
        return [path]
    every = sorted(p for p in path.rglob("*") if p.is_file())
    kept_out = {p for p in every if is_hidden(p.relative_to(path).parts) or is_run_state(p)}
    visible = [p for p in every if p not in kept_out]
    files = [p for p in visible if has_suffix(p.name, ALL_SUFFIXES)]
    skipped = [p for p in visible if not has_suffix(p.name, ALL_SUFFIXES)]
    if not files:
        where = f" besides hidden ones and bft's run state ({kept_out_names(path, kept_out)})" if kept_out else ""
        raise CorpusError(f"{path}: folder holds no {', '.join(ALL_SUFFIXES)} files{where}")
    if (skipped or kept_out) and path not in _WARNED:
        _WARNED.add(path)
        if skipped:
            names = ", ".join(str(p.relative_to(path)) for p in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
            print(
                f"bft: corpus {path}: {len(skipped)} file(s) not read (not a corpus file type): {names}",
                file=sys.stderr,
            )
        if kept_out:
            names = kept_out_names(path, kept_out)
            print(f"bft: corpus {path}: not read, being hidden or a bft run's own state: {names}", file=sys.stderr)
    return files


def kept_out_names(path: Path, files: set[Path]) -> str:
    """Files not read, as the user sees them: the first hidden name on each path (`.bft/` for a folder)."""
    names: dict[str, None] = {}  # in order, once each
    for file in sorted(files):
        parts = file.relative_to(path).parts
        first = next((i for i, part in enumerate(parts) if part.startswith(".")), len(parts) - 1)
        names["/".join(parts[: first + 1]) + ("/" if first + 1 < len(parts) else "")] = None
    return ", ".join(list(names)[:10]) + (" ..." if len(names) > 10 else "")


def is_url(path: str) -> bool:
    return "://" in path


def open_binary(path: Path | str):
    """A local file or fsspec URL opened for binary reading, decompressed by its name (.gz, .zst, .bz2).

    Every wrapper gives the bounded `readline(size)` the JSONL reader relies on.
    """
    name = str(path).lower()
    if isinstance(path, Path):
        handle = open(path, "rb")  # noqa: SIM115 (the caller closes the wrapper, which closes this)
    else:
        import fsspec

        try:
            handle = fsspec.open(str(path), "rb").open()
        except Exception as error:  # fsspec backends raise their own types
            raise CorpusError(f"{path}: cannot open: {error}") from None
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=handle, mode="rb")
    if name.endswith(".bz2"):
        return bz2.BZ2File(handle, "rb")
    if name.endswith(".zst"):
        import zstandard  # only for .zst corpora

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(handle, closefd=True))
    return io.BufferedReader(handle) if not isinstance(handle, io.BufferedReader) else handle


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
        found = [f for f in found if not is_hidden(f.removeprefix(root).split("/"))]
        files = [f"{protocol}://{f}" for f in found if has_suffix(f, JSONL_SUFFIXES + PARQUET_SUFFIXES)]
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
    files = [str(f) for f in files or [] if has_suffix(str(f), JSONL_SUFFIXES + PARQUET_SUFFIXES)]
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
            if has_suffix(file.name, PARQUET_SUFFIXES):
                total += pq.ParquetFile(file).metadata.num_rows
                continue
            with open_binary(file) as handle:
                total += sum(1 for line in handle if line.strip())
            if limit is not None and total >= limit:
                break
    except Exception:  # a broken file is reported by the reader itself, with its line; no total then
        return None
    return min(total, limit) if limit is not None else total
