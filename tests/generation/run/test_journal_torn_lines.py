"""The journal file as a SIGKILL leaves it: torn-line repair, byte for byte, and a line on disk once appended.

Checked on real files:
- `Journal.repair` (and `Journal.open`, which repairs) cuts a torn last line, whatever its length (one byte,
  half a line, all but its newline, longer than the 64 KiB the repair reads back at a time, the file's only
  line), to exactly the whole lines before it, byte for byte, and says how many bytes it cut;
- a journal whose last line is whole (or that is empty, or absent) is left byte-identical;
- after a repair, appending gives a well-formed file: every line parses, each record once.
And in a real child process: every record `append` returned for is on disk when the process is SIGKILLed
right after (no `close`, no exit handlers), i.e. each line is flushed to the OS as it is appended.
"""

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bft.generation.records import KEPT, StageRecord
from bft.generation.run.journal import Journal

CHUNK = 1 << 16  # how much `repair` reads back at a time


def record(number: int, document: str | None = None) -> StageRecord:
    return StageRecord(
        id=f"doc-{number}",
        stage="curate",
        status=KEPT,
        document=document if document is not None else f"Document {number}: café, naïve, 東京 {'x' * number}",
        position=number,
        input_location=f"corpus.jsonl:{number + 1}",
        score=4,
        flags=["a"],
    )


def line(rec: StageRecord) -> bytes:
    return (rec.to_json() + "\n").encode("utf-8")


def write_journal(path, records) -> bytes:
    """A journal of `records` written through `Journal` itself, closed; its bytes."""
    journal = Journal(path)
    journal.open()
    for rec in records:
        journal.append(rec)
    journal.close()
    return path.read_bytes()


def assert_well_formed(path, ids: list[str]) -> None:
    """Every line of the file ends with a newline and parses; the ids are `ids`, in order."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    parsed = [json.loads(piece) for piece in data.split(b"\n")[:-1]]
    assert [entry["id"] for entry in parsed] == ids
    assert [entry["id"] for _, entry in Journal(path).entries()] == ids


TORN = {  # how much of the next line a kill mid-write left
    "one byte": lambda whole: whole[:1],
    "half a line": lambda whole: whole[: len(whole) // 2],
    "all but its newline": lambda whole: whole[:-1],
}


@pytest.mark.parametrize("torn", list(TORN), ids=list(TORN))
@pytest.mark.parametrize("repaired_by", ["repair", "open"])
def test_a_torn_last_line_is_cut_to_exactly_the_whole_lines_before_it(tmp_path, torn, repaired_by):
    path = tmp_path / "curate.jsonl"
    whole = write_journal(path, [record(n) for n in range(5)])
    fragment = TORN[torn](line(record(5)))
    with open(path, "ab") as handle:
        handle.write(fragment)

    journal = Journal(path)
    if repaired_by == "repair":
        assert journal.repair() == len(fragment)
        assert path.read_bytes() == whole  # byte for byte: the last whole line keeps its last byte and newline
        journal.open()
    else:
        journal.open()
        assert path.read_bytes() == whole
    journal.append(record(5))
    journal.append(record(6))
    journal.close()
    assert path.read_bytes() == whole + line(record(5)) + line(record(6))
    assert_well_formed(path, [f"doc-{n}" for n in range(7)])


def test_a_torn_line_longer_than_one_read_back_is_cut_whole(tmp_path):
    path = tmp_path / "rewrite.jsonl"
    whole = write_journal(path, [record(n) for n in range(3)])
    long = record(3, document="y" * (3 * CHUNK))  # the newline before it lies more than two reads back
    fragment = line(long)[: 2 * CHUNK + 123]
    with open(path, "ab") as handle:
        handle.write(fragment)
    assert Journal(path).repair() == len(fragment)
    assert path.read_bytes() == whole
    write_journal(path, [long, record(4)])
    assert_well_formed(path, ["doc-0", "doc-1", "doc-2", "doc-3", "doc-4"])


def test_a_whole_line_ending_exactly_where_a_read_back_begins_is_kept(tmp_path):
    path = tmp_path / "rewrite.jsonl"
    whole = write_journal(path, [record(0)])
    fragment = line(record(1, document="z" * (2 * CHUNK)))[:CHUNK]  # the newline is the byte before the read
    with open(path, "ab") as handle:
        handle.write(fragment)
    assert Journal(path).repair() == CHUNK
    assert path.read_bytes() == whole


def test_a_journal_whose_only_line_is_torn_is_emptied(tmp_path):
    path = tmp_path / "prepare.jsonl"
    fragment = line(record(0))[:-1]
    path.write_bytes(fragment)
    assert Journal(path).repair() == len(fragment)
    assert path.read_bytes() == b""
    write_journal(path, [record(0), record(1)])
    assert_well_formed(path, ["doc-0", "doc-1"])


@pytest.mark.parametrize("count", [1, 4])
def test_a_journal_whose_last_line_is_whole_is_left_byte_identical(tmp_path, count):
    path = tmp_path / "curate.jsonl"
    whole = write_journal(path, [record(n) for n in range(count)])
    assert Journal(path).repair() == 0
    assert path.read_bytes() == whole
    journal = Journal(path)
    journal.open()  # repairs again: still nothing to cut
    assert path.read_bytes() == whole
    journal.append(record(count))
    journal.close()
    assert path.read_bytes() == whole + line(record(count))
    assert_well_formed(path, [f"doc-{n}" for n in range(count + 1)])


def test_an_empty_or_absent_journal_is_left_as_it_is(tmp_path):
    empty, absent = tmp_path / "empty.jsonl", tmp_path / "absent.jsonl"
    empty.write_bytes(b"")
    assert Journal(empty).repair() == 0 and empty.read_bytes() == b""
    assert Journal(absent).repair() == 0 and not absent.exists()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path[:0] = {paths!r}
    from tests.generation.run.test_journal_torn_lines import record
    from bft.generation.run.journal import Journal

    journal = Journal(Path(sys.argv[1]))
    journal.open()
    appended = 0
    for batch in (1, 2, 3):
        for _ in range(batch):
            journal.append(record(appended))
            appended += 1
        print("appended", appended, flush=True)
        sys.stdin.readline()  # the parent looks at the file before the next batch
    time.sleep(300)  # killed here: never closed
    """
)


def read_line(process, timeout: float = 120.0) -> str:
    """The child's next stdout line, waiting at most `timeout` seconds (a busy machine is slow to start one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            return process.stdout.readline().decode()
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"no line from the child (exit {process.poll()}): {process.stderr.read().decode()[-2000:]}")


def test_every_appended_line_is_on_disk_when_the_process_is_sigkilled(tmp_path):
    path = tmp_path / "journal" / "curate.jsonl"
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    script = CHILD.format(paths=[root])
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        for expected in (1, 3, 6):
            assert read_line(process).split() == ["appended", str(expected)]
            if expected == 6:
                process.send_signal(signal.SIGKILL)  # no close(), no fsync, no exit handlers
                process.wait(timeout=60)
            # each reported record is in the file, whole, whether the child still runs or was killed
            assert path.read_bytes() == b"".join(line(record(n)) for n in range(expected))
            if expected != 6:
                process.stdin.write(b"next\n")
                process.stdin.flush()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()
    assert process.returncode == -signal.SIGKILL
    assert_well_formed(path, [f"doc-{n}" for n in range(6)])
