"""Show or shrink the request cache that lets an edited run re-ask only what changed.

Examples:

    bft cache info                                  # the default cache (below)
    bft cache prune                                 # merge finished runs' files, one entry per request
    bft cache prune --older-than 30 --max-size 2G

The default cache is $BFT_REQUEST_CACHE, else $BFT_CACHE/requests, else ~/.cache/bft/requests; --cache names another.

prune leaves the files of runs still writing alone (they hold a lock on them) and counts them; sizes take
K, M, G or T (powers of 1024, with or without B or iB: 500M, 2G, 1.5GB) or a number of bytes.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path

from bft.generation.errors import ConfigError
from bft.generation.run.request_cache import CacheInfo, PruneReport, cache_info, default_cache_dir, prune

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="Where the cache is, its size, entries and writers, oldest and newest")
    prune_parser = actions.add_parser(
        "prune", help="Merge finished runs' files (latest entry per request), dropping old entries or the oldest"
    )
    for each in (info, prune_parser):
        each.add_argument("--cache", metavar="DIR", help=f"The cache folder (default: {default_cache_dir()})")
    prune_parser.add_argument("--older-than", metavar="DAYS", help="Drop entries stored more than DAYS days ago")
    prune_parser.add_argument(
        "--max-size", metavar="SIZE", help="Then drop the oldest entries until the cache fits (500M, 2G, bytes)"
    )


def run(args: argparse.Namespace) -> int:
    path = Path(args.cache).expanduser() if args.cache else default_cache_dir()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--cache {str(path)!r} is a file, not a cache folder")
    if args.cache_command == "info":
        print(format_info(cache_info(path)))
        return 0
    older_than = parse_days(args.older_than) if args.older_than is not None else None
    max_bytes = parse_size(args.max_size) if args.max_size is not None else None
    if not path.exists():
        print(f"bft cache: {path} does not exist: nothing to prune")
        return 0
    print(format_prune(path, prune(path, older_than, max_bytes), older_than, max_bytes))
    return 0


def parse_size(text: str) -> int:
    """Bytes of a size such as 500M, 2G, 1.5GB, 10KiB or 123456."""
    match = SIZE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"--max-size {text!r}: expected a size such as 500M, 2G, 1.5GB or a number of bytes")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def parse_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days < 0:
        raise ConfigError(f"--older-than {text!r}: expected a number of days, 0 or more (e.g. 30 or 0.5)")
    return days


def human(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def format_info(info: CacheInfo) -> str:
    if info.entries == 0 and info.files == 0:
        return f"cache: {info.path}\nempty (0 entries)"
    writers = "writer" if info.live_writers == 1 else "writers"
    return "\n".join(
        [
            f"cache: {info.path}",
            f"size: {human(info.bytes)} in {info.files} files ({info.live_writers} live {writers})",
            f"entries: {info.entries} ({info.keys} distinct requests)",
            f"oldest: {when(info.oldest)}",
            f"newest: {when(info.newest)}",
        ]
    )


def format_prune(path: Path, report: PruneReport, older_than: float | None, max_bytes: int | None) -> str:
    if report.entries_before == 0 and report.files_live == 0:
        return f"bft cache: {path} is empty: nothing to prune"
    reasons = [
        (report.duplicates, "older duplicates"),
        (report.too_old, f"older than {older_than:g} days" if older_than is not None else ""),
        (report.over_size, f"to fit in {human(max_bytes)}" if max_bytes is not None else ""),
        (report.unreadable, "unreadable"),
    ]
    dropped = ", ".join(f"{count} {why}" for count, why in reasons if count) or "nothing"
    lines = [
        f"bft cache: {path}",
        f"compacted {report.files_compacted} finished writers' files; left {report.files_live} live writers' alone",
        f"entries: {report.entries_before} -> {report.entries_after} (dropped {dropped})",
        f"size: {human(report.bytes_before)} -> {human(report.bytes_after)}",
    ]
    if max_bytes is not None and report.bytes_after > max_bytes:
        lines.append(f"still over {human(max_bytes)}: the rest is live writers' files, pruned once they finish")
    return "\n".join(lines)
