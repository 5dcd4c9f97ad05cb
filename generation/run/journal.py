"""Append-only JSONL journals: what makes a run resumable.

Each stage appends one line per finished document (kept or rejected) to `OUT/.bft/journal/STAGE.jsonl`
and flushes it before the document moves on. A killed run leaves at worst one torn last line, which
`Journal.open` cuts off; running the same command again skips every id already in the journal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from bft.generation.errors import BftError
from bft.generation.records import StageRecord


class Journal:
    """One stage's journal file."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None
        self._reader = None

    def repair(self) -> int:
        """Cut a torn (unterminated) last line left by a killed process; return bytes removed."""
        if not self.path.exists():
            return 0
        size = self.path.stat().st_size
        if size == 0:
            return 0
        with open(self.path, "rb+") as handle:
            handle.seek(max(0, size - 1))
            if handle.read(1) == b"\n":
                return 0
            # walk back to the last newline
            chunk = 1 << 16
            position = size
            while position > 0:
                start = max(0, position - chunk)
                handle.seek(start)
                data = handle.read(position - start)
                cut = data.rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                position = start
            else:
                keep = 0
            handle.truncate(keep)
            return size - keep

    def entries(self) -> Iterator[tuple[int, dict]]:
        """Yield (byte offset, parsed line) for every complete line."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            offset = 0
            for number, line in enumerate(handle, start=1):
                if line.endswith(b"\n"):
                    try:
                        yield offset, json.loads(line)
                    except json.JSONDecodeError as error:
                        raise BftError(f"{self.path}:{number}: corrupt journal line ({error.msg})") from None
                offset += len(line)

    def read_at(self, offset: int) -> StageRecord:
        """The record whose line starts at `offset` (lines are only ever appended: an offset stays valid).

        One read handle is kept open until `close`: writing a run's outputs reads every line this way."""
        if self._reader is None:
            self._reader = open(self.path, "rb")  # noqa: SIM115 (held for the reads, closed in close())
        self._reader.seek(offset)
        return StageRecord.from_dict(json.loads(self._reader.readline()))

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repair()
        self._handle = open(self.path, "ab")  # noqa: SIM115 (held for the run, closed in close())

    def append(self, record: StageRecord) -> None:
        line = record.to_json() + "\n"
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError as error:  # the readers replace such text: this names a gap, never writes half
            raise BftError(
                f"{self.path}: record {record.id!r} ({record.input_location}) holds text that cannot be written "
                f"as UTF-8 ({error.reason} at character {error.start} of its journal line)"
            ) from None
        self._handle.write(data)
        self._handle.flush()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
