"""`bft cache info|prune` through the real command line."""

import subprocess
import sys
import time

import pytest

from bft.generation.cache import parse_size
from bft.generation.errors import ConfigError
from bft.generation.run.request_cache import RequestCache, cache_info

DAY = 86400.0


def bft_cache(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bft.generation.cli", "cache", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def key(n: int) -> str:
    return f"{n:064x}"


def fill(folder, at: float, runs: int = 2, first: int = 0) -> None:
    """`runs` finished runs that each stored the same 10 requests, from number `first` on."""
    for _ in range(runs):
        with RequestCache(folder) as cache:
            for n in range(first, first + 10):
                cache.put(key(n), {"n": n, "text": "w" * 2000}, at=at + n)


def test_info_on_a_folder_that_does_not_exist_says_empty(tmp_path):
    result = bft_cache("info", "--cache", str(tmp_path / "none"))
    assert result.returncode == 0 and "empty (0 entries)" in result.stdout
    assert not (tmp_path / "none").exists()


def test_info_shows_size_entries_writers_and_dates(tmp_path):
    fill(tmp_path, at=time.mktime((2024, 5, 1, 12, 0, 0, 0, 0, -1)))
    live = RequestCache(tmp_path)
    live.put(key(99), {"n": 99})
    result = bft_cache("info", "--cache", str(tmp_path))
    live.close()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"cache: {tmp_path}"
    assert lines[1].startswith("size: ") and "KiB in 3 files (1 live writer)" in lines[1]
    assert lines[2] == "entries: 21 (11 distinct requests)"
    assert lines[3] == "oldest: 2024-05-01 12:00"


def test_prune_compacts_and_bounds_the_cache(tmp_path):
    now = time.time()
    fill(tmp_path, at=now - 60 * DAY)
    fill(tmp_path, at=now, runs=1, first=10)
    result = bft_cache("prune", "--cache", str(tmp_path), "--older-than", "30")
    assert result.returncode == 0, result.stderr
    assert "compacted 3 finished writers' files" in result.stdout
    assert "entries: 30 -> 10 (dropped 10 older duplicates, 10 older than 30 days)" in result.stdout
    info = cache_info(tmp_path)
    assert (info.files, info.entries, info.keys) == (1, 10, 10)
    result = bft_cache("prune", "--cache", str(tmp_path), "--max-size", "10K")
    assert result.returncode == 0 and cache_info(tmp_path).bytes <= 10 * 1024
    cache = RequestCache(tmp_path, "read-only")
    assert cache.get(key(19)) is not None and cache.get(key(10)) is None  # the newest stays, the oldest goes


def test_prune_with_nothing_to_prune_says_so(tmp_path):
    result = bft_cache("prune", "--cache", str(tmp_path / "none"))
    assert result.returncode == 0 and "nothing to prune" in result.stdout
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--max-size", "12Q"), ("--max-size", "2 gigs"), ("--older-than", "-3"), ("--older-than", "x")]
)
def test_a_bad_size_or_age_is_a_one_line_error(tmp_path, flag, value):
    fill(tmp_path, at=time.time())
    result = bft_cache("prune", "--cache", str(tmp_path), flag, value)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and f"bft cache: error: {flag} {value!r}" in result.stderr
    assert cache_info(tmp_path).files == 2  # nothing pruned


def test_sizes_take_units_in_powers_of_1024():
    assert parse_size("123") == 123
    assert parse_size("500M") == 500 * 2**20
    assert parse_size("2G") == parse_size("2g") == parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5GB") == int(1.5 * 2**30)
    assert parse_size("10 KB") == 10 * 1024
    for bad in ("", "M", "1.2.3G", "-5M", "5P"):
        with pytest.raises(ConfigError):
            parse_size(bad)
