"""The request cache's store: what a run, a rerun, a killed run, concurrent runs and prune can rely on."""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bft.generation.run.request_cache import RequestCache, cache_info, default_cache_dir, prune

DAY = 86400.0


def key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def data_files(root: Path) -> list[Path]:
    return sorted((root / "v1").glob("*.jsonl"))


def run_child(code: str, *args: str) -> subprocess.Popen:
    """A python process with the request cache imported, its stdout a pipe (one line per report)."""
    prelude = "import sys, time\nfrom bft.generation.run.request_cache import RequestCache\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_put_is_read_back_by_the_same_run_and_by_the_next(tmp_path):
    reply = {"text": "Paris \ud800 ünï 🐍\nline two", "logprobs": [-0.5, float("-inf")], "tokens": 7}
    with RequestCache(tmp_path) as cache:
        assert cache.get(key(1)) is None
        cache.put(key(1), reply)
        assert cache.get(key(1)) == reply
    with RequestCache(tmp_path) as rerun:
        assert rerun.get(key(1)) == reply
        assert rerun.get(key(2)) is None
    line = data_files(tmp_path)[0].read_bytes()
    assert line.isascii() and line.count(b"\n") == 1


def test_the_latest_entry_wins_in_one_writer_and_across_writers(tmp_path):
    with RequestCache(tmp_path) as cache:
        cache.put(key(1), {"v": "first"})
        cache.put(key(1), {"v": "second"})
        assert cache.get(key(1)) == {"v": "second"}
    now = time.time()
    first, second = RequestCache(tmp_path), RequestCache(tmp_path)
    second.put(key(2), {"v": "newer"}, at=now + 10)  # written first, but stored as the later one
    first.put(key(2), {"v": "older"}, at=now)
    first.close()
    second.close()
    with RequestCache(tmp_path) as reader:
        assert reader.get(key(1)) == {"v": "second"}
        assert reader.get(key(2)) == {"v": "newer"}
    assert len(data_files(tmp_path)) == 3  # one file per writer


def test_read_only_reads_and_creates_nothing_and_off_reads_nothing(tmp_path):
    assert RequestCache(tmp_path / "none", "read-only").get(key(1)) is None
    RequestCache(tmp_path / "none", "read-only").put(key(1), {"v": 1})
    assert not (tmp_path / "none").exists()
    with RequestCache(tmp_path) as cache:
        cache.put(key(1), {"v": 1})
    before = sorted(p.name for p in (tmp_path / "v1").iterdir())
    with RequestCache(tmp_path, "read-only") as reader:
        reader.put(key(2), {"v": 2})
        assert reader.get(key(1)) == {"v": 1} and reader.get(key(2)) is None
    with RequestCache(tmp_path, "off") as off:
        off.put(key(3), {"v": 3})
        assert off.get(key(1)) is None and off.get(key(3)) is None
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == before
    with pytest.raises(ValueError, match="expected one of on, off, read-only"):
        RequestCache(tmp_path, "readonly")


def test_a_bad_key_or_entry_writes_nothing(tmp_path):
    with RequestCache(tmp_path) as cache:
        with pytest.raises(ValueError, match="printable ASCII"):
            cache.put("two words", {"v": 1})
        with pytest.raises(TypeError):
            cache.put(key(1), {"v": object()})
        assert cache.get(key(1)) is None
    assert data_files(tmp_path) == []


def test_the_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("BFT_REQUEST_CACHE", raising=False)
    monkeypatch.setenv("BFT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "requests"
    monkeypatch.setenv("BFT_REQUEST_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("BFT_REQUEST_CACHE")
    monkeypatch.delenv("BFT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "bft" / "requests"


def test_a_pickled_cache_is_a_writer_of_its_own_on_the_same_folder(tmp_path):
    """What a Ray actor gets: the same folder and mode, its own file."""
    with RequestCache(tmp_path) as cache:
        cache.put(key(1), {"v": 1})
        copy = pickle.loads(pickle.dumps(cache))
        assert (copy.path, copy.mode) == (tmp_path, "on") and copy.get(key(1)) == {"v": 1}
        copy.put(key(2), {"v": 2})
        copy.close()
    assert len(data_files(tmp_path)) == 2
    assert RequestCache(tmp_path, "read-only").get(key(2)) == {"v": 2}


def test_a_forked_child_writes_a_file_of_its_own(tmp_path):
    cache = RequestCache(tmp_path)
    cache.put(key(1), {"by": "parent"})
    child = os.fork()
    if child == 0:
        try:
            cache.put(key(2), {"by": "child"})
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    cache.put(key(3), {"by": "parent"})
    cache.close()
    assert len(data_files(tmp_path)) == 2
    for data in data_files(tmp_path):
        assert all(json.loads(line)["entry"] for line in data.read_text().splitlines())
    reader = RequestCache(tmp_path, "read-only")
    assert [reader.get(key(n))["by"] for n in (1, 2, 3)] == ["parent", "child", "parent"]


KILLED_WRITER = """
    cache = RequestCache(sys.argv[1])
    n = 0
    while True:
        cache.put(sys.argv[2] + "%058d" % n, {"n": n, "text": str(n % 10) * 200_000})
        n += 1
        print(n, flush=True)
"""


def test_a_writer_killed_mid_write_loses_nothing_it_reported_stored(tmp_path):
    child = run_child(KILLED_WRITER, str(tmp_path), "killed")
    reported = 0
    while reported < 40:
        reported = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    reported = max([reported, *(int(line) for line in child.stdout.read().split())])
    child.wait()
    cache = RequestCache(tmp_path)
    for n in range(reported):
        assert cache.get(f"killed{n:058d}") == {"n": n, "text": str(n % 10) * 200_000}
    cache.put(key(1), {"v": "after the kill"})
    cache.close()
    assert RequestCache(tmp_path).get(key(1)) == {"v": "after the kill"}
    assert cache_info(tmp_path).entries >= reported + 1


def test_a_torn_last_line_is_ignored_and_the_rest_read(tmp_path):
    with RequestCache(tmp_path) as cache:
        for n in range(3):
            cache.put(key(n), {"n": n, "text": "x" * 1000})
    data = data_files(tmp_path)[0]
    with open(data, "r+b") as handle:  # the third line cut mid-way, as a kill mid-write leaves it
        handle.truncate(data.stat().st_size - 500)
    keys = data.with_suffix(".keys")
    keys.write_bytes(keys.read_bytes()[:-20])  # and its keys line torn too
    cache = RequestCache(tmp_path)
    assert [cache.get(key(n)) for n in range(3)] == [{"n": 0, "text": "x" * 1000}, {"n": 1, "text": "x" * 1000}, None]
    cache.put(key(2), {"n": 2, "text": "again"})
    cache.close()
    assert RequestCache(tmp_path).get(key(2)) == {"n": 2, "text": "again"}
    assert cache_info(tmp_path).entries == 3


def test_a_line_torn_just_before_its_newline_is_torn_too(tmp_path):
    """A whole JSON object without its newline: prune must not copy it, or the next line would be glued to it."""
    with RequestCache(tmp_path) as cache:
        for n in range(3):
            cache.put(key(n), {"n": n})
    data = data_files(tmp_path)[0]
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size - 1)
    data.with_suffix(".keys").unlink()
    assert RequestCache(tmp_path).get(key(2)) is None and cache_info(tmp_path).entries == 2
    assert prune(tmp_path).entries_after == 2
    assert [json.loads(line)["key"] for line in data_files(tmp_path)[0].read_text().splitlines()] == [key(0), key(1)]


def test_a_corrupt_line_costs_only_its_own_entry(tmp_path):
    """Bytes that are no JSON (a disk that lost a block) in the middle of a file."""
    with RequestCache(tmp_path) as cache:
        for n in range(3):
            cache.put(key(n), {"n": n})
    data = data_files(tmp_path)[0]
    lines = data.read_bytes().split(b"\n")
    data.write_bytes(b"\n".join([lines[0], b"#" * len(lines[1]), *lines[2:]]))
    for keys_file in (True, False):
        cache = RequestCache(tmp_path)
        assert [cache.get(key(n)) for n in range(3)] == [{"n": 0}, None, {"n": 2}]
        assert cache_info(tmp_path).entries == (3 if keys_file else 2)  # the keys file still lists it
        data.with_suffix(".keys").unlink(missing_ok=True)


FILLED_DISK = """
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))  # no file over 100 kB: disk full
    with RequestCache(sys.argv[1]) as cache:
        cache.put("small" + "0" * 59, {"v": "x" * 1000})
        try:
            cache.put("large" + "0" * 59, {"v": "x" * 500_000})
        except OSError as error:
            print(error.errno, flush=True)
        cache.put("after" + "0" * 59, {"v": "y" * 1000})
"""


def test_a_write_that_fails_midway_leaves_no_part_of_its_line(tmp_path):
    child = run_child(FILLED_DISK, str(tmp_path))
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0 and out.strip() == "27"  # EFBIG, after a part of the line was written
    lines = data_files(tmp_path)[0].read_text().splitlines()
    assert [json.loads(line)["key"][:5] for line in lines] == ["small", "after"]
    cache = RequestCache(tmp_path)
    assert cache.get("large" + "0" * 59) is None and cache.get("after" + "0" * 59) == {"v": "y" * 1000}


def test_entries_without_their_keys_line_are_read_from_the_data_file(tmp_path):
    """A writer killed between the data line and its keys line, or a keys file lost."""
    with RequestCache(tmp_path) as cache:
        for n in range(4):
            cache.put(key(n), {"n": n})
    keys = data_files(tmp_path)[0].with_suffix(".keys")
    lines = keys.read_text().splitlines(keepends=True)
    first_length = lines[0].split()[2]
    wrong = f"{key(8)} 0 {first_length} 1.0\n{key(9)} 999999 10 1.0\n"  # another key's line, one past the end
    keys.write_text(lines[0] + wrong)
    reader = RequestCache(tmp_path, "read-only")
    assert [reader.get(key(n)) for n in range(4)] == [{"n": n} for n in range(4)]
    assert reader.get(key(8)) is None and reader.get(key(9)) is None
    keys.unlink()
    assert RequestCache(tmp_path, "read-only").get(key(3)) == {"n": 3}


CONCURRENT_WRITER = """
    from pathlib import Path
    import hashlib
    writer = int(sys.argv[2])
    while not Path(sys.argv[1], "go").exists():
        time.sleep(0.001)
    with RequestCache(sys.argv[1]) as cache:
        for i in range(200):
            n = writer * 100 + i  # writers 0 and 1 share 100 keys, 1 and 2 another 100
            cache.put(hashlib.sha256(str(n).encode()).hexdigest(), {"n": n, "writer": writer, "text": "y" * (i * 37)})
"""


def test_three_processes_writing_at_once_corrupt_nothing(tmp_path):
    children = [run_child(CONCURRENT_WRITER, str(tmp_path), str(w)) for w in range(3)]
    time.sleep(0.3)
    (tmp_path / "go").touch()
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0]
    lines = [json.loads(line) for data in data_files(tmp_path) for line in data.read_text().splitlines()]
    assert len(data_files(tmp_path)) == 3 and len(lines) == 600
    cache = RequestCache(tmp_path, "read-only")
    for n in range(400):
        entry = cache.get(key(n))
        assert entry["n"] == n and entry["writer"] in (n // 100 - 1, n // 100)
    info = cache_info(tmp_path)
    assert (info.files, info.entries, info.keys, info.live_writers) == (3, 600, 400, 0)


def test_info_counts_entries_keys_files_writers_and_times(tmp_path):
    assert cache_info(tmp_path / "absent").entries == 0
    now = time.time()
    with RequestCache(tmp_path) as cache:
        cache.put(key(1), {"v": 1}, at=now - 5 * DAY)
        cache.put(key(1), {"v": 2}, at=now - DAY)
        cache.put(key(2), {"v": 3}, at=now)
    live = RequestCache(tmp_path)
    live.put(key(3), {"v": 4}, at=now + 1)
    info = cache_info(tmp_path)
    assert (info.files, info.live_writers, info.entries, info.keys) == (2, 1, 4, 3)
    assert (info.oldest, info.newest) == (now - 5 * DAY, now + 1)
    assert info.bytes == sum(p.stat().st_size for p in (tmp_path / "v1").iterdir())
    live.close()
    assert cache_info(tmp_path).live_writers == 0


def test_prune_keeps_the_latest_entry_per_key_in_one_file(tmp_path):
    now = time.time()
    for n in range(3):
        with RequestCache(tmp_path) as cache:
            cache.put(key(1), {"run": n}, at=now + n)
            cache.put(key(10 + n), {"run": n}, at=now + n)
    report = prune(tmp_path)
    assert (report.entries_before, report.entries_after, report.duplicates, report.files_compacted) == (6, 4, 2, 3)
    assert len(data_files(tmp_path)) == 1 and report.bytes_after < report.bytes_before
    cache = RequestCache(tmp_path, "read-only")
    assert cache.get(key(1)) == {"run": 2}
    assert [cache.get(key(10 + n)) for n in range(3)] == [{"run": n} for n in range(3)]
    again = prune(tmp_path)
    assert (again.files_compacted, again.entries_after) == (0, 4)


def test_prune_drops_entries_older_than_asked(tmp_path):
    now = time.time()
    with RequestCache(tmp_path) as cache:
        for n in range(5):
            cache.put(key(n), {"n": n}, at=now - (40 if n < 3 else 1) * DAY)
    report = prune(tmp_path, older_than_days=30)
    assert (report.too_old, report.entries_after) == (3, 2)
    cache = RequestCache(tmp_path, "read-only")
    assert [cache.get(key(n)) for n in range(5)] == [None, None, None, {"n": 3}, {"n": 4}]


def test_prune_drops_the_oldest_entries_until_the_cache_fits(tmp_path):
    now = time.time()
    with RequestCache(tmp_path) as cache:
        for n in range(50):
            cache.put(key(n), {"n": n, "text": "z" * 10_000}, at=now + n)
    report = prune(tmp_path, max_bytes=200_000)
    size = sum(p.stat().st_size for p in (tmp_path / "v1").iterdir())
    assert size == report.bytes_after <= 200_000 and report.bytes_before > 400_000
    cache = RequestCache(tmp_path, "read-only")
    kept = [n for n in range(50) if cache.get(key(n)) is not None]
    assert kept == list(range(50 - len(kept), 50)) and 15 <= len(kept) < 20
    assert report.over_size == 50 - len(kept)


def test_prune_leaves_a_live_writers_file_alone(tmp_path):
    with RequestCache(tmp_path) as finished:
        finished.put(key(1), {"v": "finished"})
        finished.put(key(1), {"v": "finished, again"})
    live = RequestCache(tmp_path)
    live.put(key(2), {"v": "live"}, at=time.time() - 100 * DAY)
    live_file = next(p for p in data_files(tmp_path) if p == live._writer.data)
    report = prune(tmp_path, older_than_days=1, max_bytes=1)
    assert (report.files_live, report.files_compacted, report.entries_after) == (1, 1, 1)
    assert data_files(tmp_path) == [live_file]
    assert live.get(key(2)) == {"v": "live"} and RequestCache(tmp_path).get(key(2)) == {"v": "live"}
    live.put(key(3), {"v": "still writing"})
    live.close()
    assert prune(tmp_path).files_live == 0
    assert RequestCache(tmp_path, "read-only").get(key(3)) == {"v": "still writing"}


LIVE_WRITER = """
    with RequestCache(sys.argv[1]) as cache:
        cache.put("live" + "0" * 60, {"v": "child"})
        print("stored", flush=True)
        sys.stdin.readline()
"""


def test_prune_leaves_another_process_writers_file_alone(tmp_path):
    with RequestCache(tmp_path) as finished:
        finished.put(key(1), {"v": 1})
        finished.put(key(1), {"v": 2})
    child = run_child(LIVE_WRITER, str(tmp_path))
    assert child.stdout.readline() == "stored\n"
    report = prune(tmp_path)
    assert (report.files_live, report.files_compacted, report.entries_after) == (1, 1, 2)
    assert RequestCache(tmp_path, "read-only").get("live" + "0" * 60) == {"v": "child"}
    assert cache_info(tmp_path).live_writers == 1
    child.communicate("done\n", timeout=30)
    assert cache_info(tmp_path).live_writers == 0
    assert prune(tmp_path).files_compacted == 2 and len(data_files(tmp_path)) == 1


def test_prune_compacts_a_killed_writers_file_keeping_its_whole_entries(tmp_path):
    with RequestCache(tmp_path) as cache:
        for n in range(3):
            cache.put(key(n), {"n": n})
        cache.put(key(0), {"n": "again"})
    data = data_files(tmp_path)[0]
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size - 3)
    report = prune(tmp_path)
    assert (report.entries_before, report.entries_after) == (3, 3)
    cache = RequestCache(tmp_path, "read-only")
    assert [cache.get(key(n)) for n in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(line.endswith("}") for line in data_files(tmp_path)[0].read_text().split("\n")[:-1])
