"""The request cache's store: replies that came back whole, kept under their request's key for later runs.

`RequestCache(path, mode)` maps a key (a request's sha256 hex, computed by the engine) to the entry stored
for it (a JSON-able dict: the reply). `get` returns the latest entry any writer stored, `put` appends one;
`cache_info` and `prune` are what `bft cache info|prune` shows and does. Modes: "on" reads and writes,
"read-only" reads and never writes (no file or folder is created), "off" reads and writes nothing.

The files, under `path` (by default `default_cache_dir()`):

    v1/HOST-PID-TOKEN.jsonl   one writer's entries, one JSON object a line:
                              {"key":KEY,"at":UNIX_TIME,"entry":{...}}
    v1/HOST-PID-TOKEN.keys    its index, one line per data line: "KEY OFFSET LENGTH AT"

Why so:

- **One writer per file, append-only, merged on read.** Concurrent runs and Ray actors (other processes,
  other machines on a shared filesystem) each write a file of their own, named by host, pid and a random
  token, so no two processes ever write one file and there is no lock to agree on between writers. No
  SQLite: its locking is not to be trusted on the network filesystems a Ray cluster shares.
- **Crash-safe.** An entry is one `os.write` of one complete line, encoded with `ensure_ascii` (any Python
  str, lone surrogates included, round-trips, and the only newline of a line is its last byte). A SIGKILL
  leaves at most one torn last line, without its newline: readers skip it, and nobody appends to that file
  again (a new run is a new writer with a new file). A write that fails (disk full) is cut back off, so a
  line is whole or absent.
- **Quick to open.** Each data line's place is appended to the `.keys` file once the line is written, so
  opening a cache reads about 100 bytes per entry, not the replies. A keys line that is torn or points past
  its data file's end is ignored; data lines past what the keys file covers (a writer killed between the
  two writes, a lost keys file) are read from the data file itself. `get` reads the one line back and
  checks its key, so a wrong keys line costs a miss, never a wrong reply.
- **Live writers are told from finished ones** by `flock(LOCK_EX)` on the data file, held until `close`
  (the kernel drops it when the process dies): `prune` compacts finished writers' files and leaves the
  live ones alone. A writer creates its file under a hidden name (`.NAME.jsonl.new`), locks it, then
  renames it, so a visible data file of a live writer is always locked. (On NFS, Linux emulates flock with
  POSIX locks, which do not conflict within one process: prune from a process of its own, as the command
  does.)
- **Versioned.** A later format goes in a folder of its own, so an older bft never misreads it.

The index (key -> file, offset, length and time of the latest entry, by `at`) is read once per instance, at
its first `get` or `put`; entries other processes add later are not seen (a miss asks the server again).
Entries are not kept in memory: `get` reads its line back.

An instance pickles as (path, mode): the copy in a Ray actor is a writer of its own, with a file of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, get_args

from bft.generation.config import CacheMode

MODES = get_args(CacheMode)
FORMAT_DIR = "v1"
DATA_SUFFIX = ".jsonl"
KEYS_SUFFIX = ".keys"
NEW_SUFFIX = ".new"  # a hidden file being written: `.NAME.jsonl.new`, `.NAME.keys.new`
STALE_SECONDS = 3600  # a hidden file this old belongs to a writer or prune that died: prune removes it
OPEN_READERS = 256  # data files `get` keeps open; past that they are closed and opened again when read
KEY = re.compile(r"[!-~]+")  # printable ASCII without spaces: a keys line is space-separated


def default_cache_dir() -> Path:
    """`$BFT_REQUEST_CACHE`, else `$BFT_CACHE/requests`, else `~/.cache/bft/requests`."""
    if own := os.environ.get("BFT_REQUEST_CACHE"):
        return Path(own).expanduser()
    root = os.environ.get("BFT_CACHE")
    return Path(root).expanduser() / "requests" if root else Path.home() / ".cache" / "bft" / "requests"


class Stored(NamedTuple):
    """Where one whole entry lies: its data line is `length` bytes at `offset` of its writer's data file."""

    key: str
    at: float
    offset: int
    length: int


class RequestCache:
    """The entries every writer of `path` stored, and this instance's own file to add to them."""

    def __init__(self, path: str | Path, mode: CacheMode = "on"):
        if mode not in MODES:
            raise ValueError(f"request cache mode {mode!r}: expected one of {', '.join(MODES)}")
        self.path = Path(path).expanduser()
        self.mode = mode
        self.folder = self.path / FORMAT_DIR
        self._lock = threading.Lock()
        self._index: dict[str, tuple[int, int, int, float]] | None = None  # key -> (file number, offset, length, at)
        self._files: list[Path] = []
        self._readers: dict[int, int] = {}  # file number -> open descriptor
        self._writer: Writer | None = None
        self._writer_file = -1
        self._closed = False

    def get(self, key: str) -> dict | None:
        """The latest whole entry stored under key (any writer, this one included), or None."""
        if self.mode == "off":
            return None
        with self._lock:
            where = self._loaded().get(key)
            if where is None:
                return None
            number, offset, length, _ = where
            return self._read(number, Stored(key, 0.0, offset, length))

    def put(self, key: str, entry: dict, *, at: float | None = None) -> None:
        """Store entry under key, appended whole to this writer's file before returning; a later `get(key)` of this
        instance returns it. `at` (default now) is the time prune ages it by. Nothing happens in read-only or off."""
        if self.mode != "on":
            return
        at = time.time() if at is None else float(at)
        line = data_line(key, at, entry)  # before anything is written: a bad key or entry writes nothing
        with self._lock:
            index = self._loaded()
            stored = self._own_writer().append(key, at, line)
            current = index.get(key)
            if current is None or at >= current[3]:
                index[key] = (self._writer_file, stored.offset, stored.length, at)

    def close(self) -> None:
        """Sync and close this writer's files (its lock goes with them) and the files read; `get` still works."""
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._close_readers()
            self._closed = True

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        return RequestCache, (str(self.path), self.mode)

    def __del__(self):
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close(sync=False)
            self._close_readers()

    def _loaded(self) -> dict[str, tuple[int, int, int, float]]:
        """The index, read from every writer's files present at the first call."""
        if self._index is None:
            self._index = {}
            for data in data_files(self.folder):
                number = len(self._files)
                self._files.append(data)
                for stored in stored_in(data):
                    current = self._index.get(stored.key)
                    if current is None or stored.at >= current[3]:
                        self._index[stored.key] = (number, stored.offset, stored.length, stored.at)
        return self._index

    def _own_writer(self) -> Writer:
        """This instance's writer, created at its first put (again in a forked child: one writer per file)."""
        if self._closed:
            raise ValueError(f"request cache {self.path} is closed")
        if self._writer is not None and self._writer.pid != os.getpid():
            self._writer.abandon()
            self._writer = None
        if self._writer is None:
            self._writer = Writer(self.folder)
            self._writer_file = len(self._files)
            self._files.append(self._writer.data)
        return self._writer

    def _read(self, number: int, stored: Stored) -> dict | None:
        if self._writer is not None and number == self._writer_file:
            descriptor = self._writer.fd
        else:
            descriptor = self._reader(number)
        if descriptor is None:
            return None
        try:
            line = os.pread(descriptor, stored.length, stored.offset)
        except OSError:
            return None
        return entry_of(line, stored.key)

    def _reader(self, number: int) -> int | None:
        if number not in self._readers:
            if len(self._readers) >= OPEN_READERS:
                self._close_readers()
            try:
                self._readers[number] = os.open(self._files[number], os.O_RDONLY)
            except OSError:  # pruned since the index was read: a miss
                return None
        return self._readers[number]

    def _close_readers(self) -> None:
        for descriptor in self._readers.values():
            os.close(descriptor)
        self._readers.clear()


class Writer:
    """One writer's pair of files: the data file, locked while this writer lives, and its keys file.

    Created hidden and locked, then shown: right away for a run's writer (its entries are readable as they
    are written), or by `publish` once every entry is written and synced (prune's compacted file).
    """

    def __init__(self, folder: Path, publish_now: bool = True):
        folder.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        name = writer_name()
        self.data = folder / f"{name}{DATA_SUFFIX}"
        self.keys = folder / f"{name}{KEYS_SUFFIX}"
        self._hidden_data = folder / f".{name}{DATA_SUFFIX}{NEW_SUFFIX}"
        self._hidden_keys = folder / f".{name}{KEYS_SUFFIX}{NEW_SUFFIX}"
        self.fd = os.open(self._hidden_data, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self.published = False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            if publish_now:
                os.rename(self._hidden_data, self.data)
                self.published = True
            keys = self.keys if publish_now else self._hidden_keys
            self.keys_fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except BaseException:
            os.close(self.fd)
            (self.data if self.published else self._hidden_data).unlink(missing_ok=True)
            raise
        self.size = 0
        self.keys_size = 0

    def append(self, key: str, at: float, line: bytes) -> Stored:
        """Write one whole data line, then its keys line; if either fails, neither stays."""
        stored = Stored(key, at, self.size, len(line))
        keys_line = f"{key} {stored.offset} {stored.length} {at!r}\n".encode("ascii")
        write_whole(self.fd, line, self.size)
        try:
            write_whole(self.keys_fd, keys_line, self.keys_size)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(line)
        self.keys_size += len(keys_line)
        return stored

    def publish(self) -> None:
        """Sync both files and show them under their own names, data first."""
        os.fsync(self.fd)
        os.fsync(self.keys_fd)
        os.rename(self._hidden_data, self.data)
        os.rename(self._hidden_keys, self.keys)
        sync_folder(self.data.parent)
        self.published = True

    def close(self, sync: bool = True) -> None:
        if sync:
            os.fsync(self.fd)
            os.fsync(self.keys_fd)
        os.close(self.keys_fd)
        os.close(self.fd)

    def discard(self) -> None:
        """Remove the hidden files of a writer that was never published (a prune that failed midway)."""
        if not self.published:
            self._hidden_data.unlink(missing_ok=True)
            self._hidden_keys.unlink(missing_ok=True)

    def abandon(self) -> None:
        """In a forked child: let go of the parent's descriptors (its lock stays with the parent)."""
        self.close(sync=False)


def writer_name() -> str:
    """HOST-PID-TOKEN: unique among the processes and machines sharing a cache folder."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()).lstrip(".") or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def data_line(key: str, at: float, entry: dict) -> bytes:
    """One entry's line: ASCII JSON (so any str round-trips and no newline but the last), whole or not at all."""
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ValueError(f"request cache key {key!r}: expected printable ASCII without spaces (a sha256 hex)")
    if not isinstance(entry, dict):
        raise TypeError(f"request cache entry for {key}: expected a dict, got {type(entry).__name__}")
    if not math.isfinite(at):
        raise ValueError(f"request cache entry for {key}: time {at!r} is not a finite number")
    text = json.dumps({"key": key, "at": at, "entry": entry}, ensure_ascii=True, separators=(",", ":"))
    return (text + "\n").encode("ascii")


def write_whole(descriptor: int, data: bytes, size: int) -> None:
    """Append data to a file of `size` bytes; on any failure cut the file back to `size` and raise."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(descriptor, view) :]
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, size)
        raise


def sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def entry_of(line: bytes, key: str) -> dict | None:
    """The entry of a whole data line stored under key; None for a torn, corrupt or other key's line."""
    parsed = parse_line(line)
    return parsed[2] if parsed is not None and parsed[0] == key else None


def parse_line(line: bytes) -> tuple[str, float, dict] | None:
    """(key, at, entry) of a whole data line (ending in a newline), or None."""
    if not line.endswith(b"\n"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    key, at, entry = record.get("key"), record.get("at"), record.get("entry")
    if not isinstance(key, str) or not isinstance(at, int | float) or not isinstance(entry, dict):
        return None
    return key, float(at), entry


def data_files(folder: Path) -> list[Path]:
    """The writers' data files shown in folder (hidden files are still being written)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(DATA_SUFFIX) and not p.name.startswith("."))


def keys_file(data: Path) -> Path:
    return data.with_name(data.name[: -len(DATA_SUFFIX)] + KEYS_SUFFIX)


def stored_in(data: Path) -> Iterator[Stored]:
    """Every whole entry of one writer's data file: from its keys file, then from the data lines past them."""
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        return
    covered = 0
    for stored in keys_lines(keys_file(data), size):
        covered = max(covered, stored.offset + stored.length)
        yield stored
    yield from data_lines(data, covered)


def keys_lines(keys: Path, size: int) -> Iterator[Stored]:
    """The whole keys lines that point inside a data file of `size` bytes."""
    try:
        handle = open(keys, "rb")  # noqa: SIM115 (closed below; a missing file is no keys)
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            stored = parse_keys_line(line) if line.endswith(b"\n") else None
            if stored is not None and stored.offset + stored.length <= size:
                yield stored


def parse_keys_line(line: bytes) -> Stored | None:
    parts = line.split()
    if len(parts) != 4:
        return None
    try:
        stored = Stored(parts[0].decode("ascii"), float(parts[3]), int(parts[1]), int(parts[2]))
    except ValueError:
        return None
    return stored if stored.offset >= 0 and stored.length > 0 and math.isfinite(stored.at) else None


def data_lines(data: Path, start: int) -> Iterator[Stored]:
    """The whole, well-formed data lines from byte `start` on (a torn last line has no newline: skipped)."""
    try:
        handle = open(data, "rb")  # noqa: SIM115 (closed below; pruned meanwhile is empty)
    except FileNotFoundError:
        return
    with handle:
        handle.seek(start)
        offset = start
        for line in handle:
            parsed = parse_line(line)
            if parsed is not None:
                yield Stored(parsed[0], parsed[1], offset, len(line))
            offset += len(line)


def folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    total = 0
    for item in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):
            total += item.stat().st_size
    return total


def try_lock(path: Path, exclusive: bool) -> int | None:
    """A descriptor holding a lock on path, or None when a live writer holds it (or it is gone).

    A shared lock is enough to tell (and needs only read access); prune takes an exclusive one, so two prunes
    never compact the same file."""
    try:
        descriptor = os.open(path, os.O_RDWR if exclusive else os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def is_live(data: Path) -> bool:
    """Whether a writer holds data's lock: a run (or a prune) still writing it."""
    descriptor = try_lock(data, exclusive=False)
    if descriptor is None:
        return data.exists()
    os.close(descriptor)
    return False


@dataclass(frozen=True)
class CacheInfo:
    """What `bft cache info` shows: sizes and counts of every writer's files, live or finished."""

    path: Path
    files: int  # writers' data files
    live_writers: int  # of them, locked by a writer still running
    entries: int  # whole entries (lines), a key stored twice counting twice
    keys: int  # distinct keys
    bytes: int  # every file of the cache's folder, keys files included
    oldest: float | None  # unix times of the oldest and newest entry
    newest: float | None


def cache_info(path: str | Path) -> CacheInfo:
    """Counts and sizes of the cache at path (an absent folder is an empty cache); reads the keys files only."""
    path = Path(path).expanduser()
    folder = path / FORMAT_DIR
    files = data_files(folder)
    live = sum(is_live(data) for data in files)
    keys: set[str] = set()
    entries = 0
    oldest = newest = None
    for data in files:
        for stored in stored_in(data):
            entries += 1
            keys.add(stored.key)
            oldest = stored.at if oldest is None else min(oldest, stored.at)
            newest = stored.at if newest is None else max(newest, stored.at)
    return CacheInfo(path, len(files), live, entries, len(keys), folder_bytes(folder), oldest, newest)


@dataclass(frozen=True)
class PruneReport:
    """What `prune` did. Entries and bytes count the whole cache, live writers' files included."""

    entries_before: int
    entries_after: int
    bytes_before: int
    bytes_after: int
    files_compacted: int  # finished writers' files merged into one (0: nothing needed doing)
    files_live: int  # live writers' files left alone
    duplicates: int  # older entries of a key stored again
    too_old: int  # dropped for --older-than
    over_size: int  # dropped, oldest first, for --max-size
    unreadable: int  # entries whose line no longer read back whole


def prune(path: str | Path, older_than_days: float | None = None, max_bytes: int | None = None) -> PruneReport:
    """Compact the finished writers' files into one: the latest entry per key, none older than older_than_days,
    then the newest that fit so the cache's total size is at most max_bytes. Live writers' files are left alone.

    The kept entries are copied byte for byte to a new writer's files, synced and renamed into place before the
    compacted files are deleted: a prune killed midway leaves duplicates, never a loss.
    """
    folder = Path(path).expanduser() / FORMAT_DIR
    bytes_before = folder_bytes(folder)
    remove_strays(folder)
    locks: dict[Path, int] = {}
    live: list[Path] = []
    try:
        for data in data_files(folder):
            descriptor = try_lock(data, exclusive=True)
            if descriptor is not None:
                locks[data] = descriptor
            elif data.exists():
                live.append(data)
        return compact(folder, locks, live, bytes_before, older_than_days, max_bytes)
    finally:
        for descriptor in locks.values():
            os.close(descriptor)


def compact(
    folder: Path,
    locks: dict[Path, int],
    live: list[Path],
    bytes_before: int,
    older_than_days: float | None,
    max_bytes: int | None,
) -> PruneReport:
    """prune's work on the finished files it holds locked (`locks`)."""
    live_entries = sum(1 for data in live for _ in stored_in(data))
    latest, finished_entries, untidy = latest_of(locks)
    kept = sorted(latest.values(), key=lambda item: item[1].at)
    duplicates = finished_entries - len(kept)
    too_old = over_size = 0
    if older_than_days is not None:
        cutoff = time.time() - older_than_days * 86400
        young = [item for item in kept if item[1].at >= cutoff]
        too_old, kept = len(kept) - len(young), young
    if max_bytes is not None:
        live_bytes = sum(size_of(data) + size_of(keys_file(data)) for data in live)
        fitting = newest_within(kept, max_bytes - live_bytes)
        over_size, kept = len(kept) - len(fitting), fitting
    needed = bool(duplicates or too_old or over_size or untidy or len(locks) > 1)  # one tidy file stays as it is
    written = copy_entries(folder, kept, locks) if needed else len(kept)
    if needed:
        for data in locks:
            keys_file(data).unlink(missing_ok=True)
            data.unlink(missing_ok=True)
    return PruneReport(
        entries_before=live_entries + finished_entries,
        entries_after=live_entries + written,
        bytes_before=bytes_before,
        bytes_after=folder_bytes(folder),
        files_compacted=len(locks) if needed else 0,
        files_live=len(live),
        duplicates=duplicates,
        too_old=too_old,
        over_size=over_size,
        unreadable=len(kept) - written,
    )


def latest_of(locks: dict[Path, int]) -> tuple[dict[str, tuple[Path, Stored]], int, bool]:
    """The latest entry per key in the finished files, how many entries they hold, and whether any file is untidy:
    bytes that are no whole entry (a torn last line) or no keys file."""
    latest: dict[str, tuple[Path, Stored]] = {}
    count = 0
    untidy = False
    for data in locks:
        whole = 0
        for stored in stored_in(data):
            count += 1
            whole += stored.length
            if stored.key not in latest or stored.at >= latest[stored.key][1].at:
                latest[stored.key] = (data, stored)
        untidy = untidy or whole != size_of(data) or not keys_file(data).exists()
    return latest, count, untidy


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def newest_within(kept: list[tuple[Path, Stored]], budget: int) -> list[tuple[Path, Stored]]:
    """The newest entries (kept is oldest first) whose data and keys lines fit in budget bytes, oldest first.

    A keys line is counted with an offset as long as the budget's digits: an upper bound, so the bound holds."""
    digits = len(str(max(budget, 0)))
    used = 0
    start = len(kept)
    while start > 0:
        stored = kept[start - 1][1]
        cost = stored.length + len(f"{stored.key} {'0' * digits} {stored.length} {stored.at!r}\n")
        if used + cost > budget:
            break
        used += cost
        start -= 1
    return kept[start:]


def copy_entries(folder: Path, kept: Iterable[tuple[Path, Stored]], locks: dict[Path, int]) -> int:
    """Copy each kept entry's line, checked whole, to a new writer's files, shown once synced; the count copied."""
    writer: Writer | None = None
    written = 0
    try:
        for data, stored in kept:
            line = os.pread(locks[data], stored.length, stored.offset)
            parsed = parse_line(line)
            if parsed is None or parsed[0] != stored.key:
                continue
            writer = writer or Writer(folder, publish_now=False)
            writer.append(stored.key, parsed[1], line)
            written += 1
        if writer is not None:
            writer.publish()
    finally:
        if writer is not None:
            writer.close(sync=False)
            writer.discard()
    return written


def remove_strays(folder: Path) -> None:
    """Delete what dead writers and prunes left: hidden files over an hour old that nobody holds, and keys files
    whose data file is gone."""
    if not folder.is_dir():
        return
    for item in list(folder.iterdir()):
        if item.name.startswith(".") and item.name.endswith(NEW_SUFFIX):
            remove_stale_hidden(item)
        elif item.name.endswith(KEYS_SUFFIX) and not item.name.startswith("."):
            data = item.with_name(item.name[: -len(KEYS_SUFFIX)] + DATA_SUFFIX)
            if not data.exists():
                item.unlink(missing_ok=True)


def remove_stale_hidden(item: Path) -> None:
    try:
        if time.time() - item.stat().st_mtime < STALE_SECONDS:
            return
    except FileNotFoundError:
        return
    if item.name.endswith(DATA_SUFFIX + NEW_SUFFIX):
        descriptor = try_lock(item, exclusive=True)
        if descriptor is None:
            return
        item.unlink(missing_ok=True)
        os.close(descriptor)
    else:
        item.unlink(missing_ok=True)
