"""One loader for "a dataset given by a path or a Hub id", as a `datasets.Dataset`.

`bft train`'s data sources, `bft eval`'s instruction sets and the data report's decontamination set
all name their data the same ways: a JSON/JSONL/Parquet file, a local dataset folder (a `bft build`
or `bft generate` output, with a config name), or a Hub dataset id with an optional revision. This
module loads each of them, and says clearly when one cannot be loaded or holds no rows.

(A corpus for `bft generate` and a seed source for `bft seed` are streamed row by row instead:
`generation/corpus/documents.py`, `corpus_rows`.)
"""

from __future__ import annotations

from pathlib import Path

import datasets
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from bft.generation.errors import ConfigError

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def locate(path: str, search_dirs: list[Path | None]) -> Path | None:
    """The local file or folder `path` names, looked up from each of `search_dirs` in turn, if any."""
    for base in search_dirs:
        if base is None:
            continue
        candidate = base / path
        if candidate.exists():
            return candidate
    return None


def load_table(
    path: str,
    label: str | None = None,
    name: str | None = None,
    split: str = "train",
    revision: str | None = None,
    data_dir: str | None = None,
    data_files=None,
    search_dirs: list[Path | None] | None = None,
    empty_note: str = "",
) -> tuple[datasets.Dataset, str | None]:
    """The rows of one dataset, and the Hub commit it resolved to (None when local).

    `path` is looked up as a local file or folder from `search_dirs` (default: the working directory),
    else taken as a Hub id. Errors are `ConfigError`s that name the dataset by `label` (default: path); an
    empty dataset's message ends with `empty_note` (what the caller cannot do without rows).
    """
    label = label or path
    local = locate(path, search_dirs if search_dirs is not None else [Path.cwd()])
    commit = None
    try:
        if local is not None and local.is_file():
            builder = LOCAL_FORMATS.get(local.suffix)
            if builder is None:
                raise ConfigError(f"dataset {label}: {local} is not a .jsonl, .json or .parquet file")
            if local.stat().st_size == 0:
                raise ConfigError(f"dataset {label} is empty (a 0-byte file){empty_note}")
            dataset = datasets.load_dataset(builder, data_files=str(local), split="train")
        elif local is not None:
            dataset = datasets.load_dataset(
                str(local), name=name, data_dir=data_dir, data_files=data_files, split=split
            )
        else:
            dataset = datasets.load_dataset(
                path, name=name, revision=revision, data_dir=data_dir, data_files=data_files, split=split
            )
            commit = hub_commit(path, revision)
    except ConfigError:
        raise
    except Exception as error:  # datasets raises many kinds; all mean "this source cannot be loaded"
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "corresponds to no data" in first or "contains no data" in first:  # datasets' words for no rows
            raise ConfigError(f"dataset {label} is empty (split {split!r}){empty_note}") from None
        raise ConfigError(f"dataset {label}: cannot load it: {first}") from None
    return dataset, commit


def hub_commit(path: str, revision: str | None) -> str | None:
    """The commit sha a Hub dataset's revision points to, for cards; None if the Hub will not say."""
    try:
        return HfApi().dataset_info(path, revision=revision).sha
    except (HfHubHTTPError, OSError, ValueError):
        return None


def config_names(folder: Path) -> list[str]:
    """The configs a local dataset folder declares (its README's `configs:`)."""
    try:
        return datasets.get_dataset_config_names(str(folder))
    except Exception as error:  # datasets raises many kinds for a folder it cannot read
        raise ConfigError(f"{folder}: not a bft output or dataset folder ({str(error).splitlines()[0]})") from None
