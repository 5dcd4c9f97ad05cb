"""`--executor ray` on a real local Ray cluster (2 CPUs) against the TGI test server.

The local executor is the reference: the Ray executor must give the same records, ids and counts,
also when a worker is killed mid-run and when the whole run is killed and rerun.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from datasets import load_dataset

from bft.generation.cli import main
from bft.generation.corpus.documents import read_corpus
from bft.generation.corpus.files import corpus_file_list
from bft.generation.corpus.rows import rows_of_file
from bft.generation.run.ray_executor import merge_endpoints
from tests.paths import DEMO_CORPUS
from tests.servers.models import Reply, paper_model, prompt_kind
from tests.servers.tgi import TGITestServer

CONFIGS = ("backtranslated", "curated", "rewritten", "rejected")
COUNTS = ("entered", "kept", "rejected", "rejected_by_reason")
DEMO_TEXTS = [d.text for d in read_corpus(str(DEMO_CORPUS))]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the module (starting one takes seconds): its address."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def slow_spam_scorer(request):
    """The paper model, a little slow, scoring the spam documents 2 (so curate rejects them)."""
    time.sleep(0.02)
    if prompt_kind(request.prompt) == "curate" and ("Lorem ipsum" in request.prompt or "MEGA SALE" in request.prompt):
        return Reply("Score: 2")
    return paper_model(request)


def messy_corpus(folder: Path) -> Path:
    """Three files of demo documents plus every corpus-wide case: repeated ids, repeated texts,
    an empty text and a line that is not UTF-8, spread over files and blocks."""
    folder.mkdir()
    rows = [{"id": f"doc-{n}", "text": text} for n, text in enumerate(DEMO_TEXTS)]
    rows[7]["id"] = rows[2]["id"]  # same id, later in the same file: renamed doc-2#2
    rows[21]["id"] = rows[3]["id"]  # same id in another file
    rows[25]["text"] = rows[4]["text"]  # same text in another file: duplicate_text
    rows.insert(15, {"id": "empty", "text": "   "})
    lines = [json.dumps(row).encode() for row in rows]
    lines.insert(27, b'{"id": "latin-1", "text": "caf\xe9"}')
    for index, (start, end) in enumerate(((0, 10), (10, 22), (22, len(lines)))):
        (folder / f"part-{index}.jsonl").write_bytes(b"\n".join(lines[start:end]) + b"\n")
    config = folder.parent / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {"corpus": {"duplicate_ids": "rename", "invalid_utf8": "reject"}, "ray": {"block_size": 4}},
        ),
        encoding="utf-8",
    )
    return config


def generate(corpus, out, url, *extra) -> int:
    return main(["generate", str(corpus), "--out", str(out), "--endpoint", url, "--no-progress", *extra])


def rows(out, config) -> list[tuple]:
    data = load_dataset(str(out), config, split="train")
    fields = ("id", "stage", "status", "reason", "instruction", "score", "response", "flags", "input_location")
    return [tuple(json.dumps(r[f]) if f == "flags" else r[f] for f in fields) for r in data]


def counts(out) -> dict:
    """The stage counters both executors must agree on (times and the endpoints' limits differ by nature)."""
    stats = json.loads((out / "stats.json").read_text())
    return {name: {k: s[k] for k in COUNTS} for name, s in stats.items() if isinstance(s, dict) and name != "endpoints"}


def endpoints(out) -> dict:
    return json.loads((out / "stats.json").read_text())["endpoints"]


def assert_endpoints_like(got: Path, expected: Path) -> None:
    """`got`'s `stats.json` has an `endpoints` entry shaped as `expected`'s: the same endpoints, each with the
    same keys and mode, its limits positive and ordered, its counters and samples counts."""
    mine, theirs = endpoints(got), endpoints(expected)
    assert mine.keys() == theirs.keys() and mine
    for name, limit in mine.items():
        assert limit.keys() == theirs[name].keys(), name
        assert limit["mode"] == theirs[name]["mode"] and limit["mode"] in ("auto", "fixed")
        assert limit["steered_by"] in ("fixed", "server /metrics", "replies")
        low, settled, high = limit["limit_low"], limit["limit_settled"], limit["limit_high"]
        assert all(isinstance(n, int) for n in (low, settled, high)) and 0 < low <= settled <= high
        assert all(isinstance(limit[k], int) and limit[k] >= 0 for k in ("overloaded_429_503", "timeouts", "backoffs"))
        samples = limit["in_flight_samples"]
        assert samples and all(len(s) == 3 and s[0] >= 0 and s[1] >= 0 and s[2] > 0 for s in samples)
        assert [s[0] for s in samples] == sorted(s[0] for s in samples)


def assert_same_output(got: Path, expected: Path) -> None:
    for config in CONFIGS:
        mine, theirs = rows(got, config), rows(expected, config)
        assert mine == theirs, config  # same ids, order and content
        if config != "rejected":  # (a document rejected by curate is also in backtranslated)
            assert len({r[0] for r in mine}) == len(mine)  # each document once
    assert counts(got) == counts(expected)


@pytest.mark.parametrize("limit", [None, 23])
def test_ray_executor_gives_the_local_executors_records_and_counts(tmp_path, ray_cluster, limit):
    config = messy_corpus(tmp_path / "corpus")
    extra = ["--config", str(config)] + (["--limit", str(limit)] if limit else [])
    with TGITestServer(slow_spam_scorer) as server:
        assert generate(tmp_path / "corpus", tmp_path / "local", server.url, *extra) == 0
        local_requests = len(server.requests)
        server.requests.clear()
        ray_cache = ["--executor", "ray", "--cache", str(tmp_path / "ray-cache")]  # (empty: the local run's not read)
        assert generate(tmp_path / "corpus", tmp_path / "ray", server.url, *ray_cache, *extra) == 0
        assert len(server.requests) == local_requests  # each request once
        if limit is None:  # the replies every actor stored answer a rerun into a new folder
            assert generate(tmp_path / "corpus", tmp_path / "ray-again", server.url, *ray_cache, *extra) == 0
            assert len(server.requests) == local_requests
            assert_same_output(tmp_path / "ray-again", tmp_path / "local")
            again = json.loads((tmp_path / "ray-again" / "stats.json").read_text())
            assert sum(again[s]["cache_hits"] for s in ("backtranslate", "curate", "rewrite")) == local_requests
            # a rerun over the finished run only resumes its blocks: their done.json files keep the limits
            finished = endpoints(tmp_path / "ray")
            assert generate(tmp_path / "corpus", tmp_path / "ray", server.url, *ray_cache, *extra) == 0
            assert len(server.requests) == local_requests and endpoints(tmp_path / "ray") == finished

    assert_same_output(tmp_path / "ray", tmp_path / "local")
    assert_endpoints_like(tmp_path / "ray", tmp_path / "local")
    stats = counts(tmp_path / "ray")
    if limit is None:  # every corpus-wide case is in the run
        assert stats["prepare"]["rejected_by_reason"] == {"duplicate_text": 1, "empty_text": 1, "invalid_utf8": 1}
    assert stats["curate"]["rejected"] > 0
    ids = {r[0] for r in rows(tmp_path / "ray", "backtranslated")}
    assert {"doc-2#2", "doc-3#2"} <= ids
    blocks = sorted(p.name for p in (tmp_path / "ray" / ".bft" / "blocks").iterdir())
    assert blocks[:3] == ["f00000-b000000", "f00000-b000001", "f00000-b000002"]  # per-file blocks of 4
    assert all((tmp_path / "ray" / ".bft" / "blocks" / b / "done.json").exists() for b in blocks)


def summary(low, high, overloads=0, samples=((0.0, 1, 4),)) -> dict:
    """An `AdaptiveLimit.summary()` of an actor."""
    return {
        "mode": "auto",
        "steered_by": "replies",
        "limit_low": low,
        "limit_high": high,
        "limit_settled": high,
        "in_flight_samples": [list(s) for s in samples],
        "overloaded_429_503": overloads,
        "timeouts": 0,
        "backoffs": overloads,
    }


def block_done(actor, run, taken, finished_at, limit, opened_at=0.0) -> dict:
    """A block's `done.json` as `BlockRunner.run_block` writes it (stage counters left out)."""
    actor = {"id": actor, "run": run, "taken": taken, "opened_at": opened_at, "finished_at": finished_at}
    return {"stats": {}, "endpoints": {"http://gpu:8080": limit}, "actor": actor}


def test_endpoint_limits_are_each_actors_latest_summed_over_the_latest_runs_actors():
    blocks = [
        block_done("a", "earlier", 1, 10.0, summary(2, 4, overloads=3)),
        block_done("a", "earlier", 2, 11.0, summary(2, 6, overloads=5)),  # actor a's latest: its 5 count
        block_done("b", "now", 2, 21.0, summary(3, 8, overloads=1, samples=((0.0, 2, 8), (1.0, 5, 8))), 100.0),
        block_done("b", "now", 1, 22.0, summary(3, 5), 100.0),  # finished last, taken first: not b's latest
        block_done("c", "now", 1, 20.0, summary(1, 4, samples=((0.5, 3, 4),)), 100.25),
        {"stats": {}},  # an older done.json: no endpoints
    ]
    (limit,) = merge_endpoints(blocks).values()
    assert (limit["limit_low"], limit["limit_high"], limit["limit_settled"]) == (4, 12, 12)  # b + c, not a
    assert (limit["overloaded_429_503"], limit["backoffs"], limit["timeouts"]) == (5 + 1, 6, 0)  # a, b and c
    assert (limit["mode"], limit["steered_by"]) == ("auto", "replies")
    assert limit["in_flight_samples"] == [[0.0, 2, 8], [0.75, 5, 12], [1.0, 8, 12]]  # c's clock 0.25 s later
    assert limit.keys() == summary(1, 1).keys()
    assert merge_endpoints([{"stats": {}}]) == {}


def block_runner_pids() -> list[int]:
    """Processes of the actors running bft's engine (Ray names them after the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"MapBatches(BlockRunner)" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_worker_killed_mid_run_is_replaced_and_no_document_is_written_twice(tmp_path, ray_cluster):
    killed: list[int] = []
    with TGITestServer(slow_spam_scorer) as server:
        assert generate(DEMO_CORPUS, tmp_path / "local", server.url, "--no-cache") == 0  # (Ray's run asks)
        total = len(server.requests)
        server.requests.clear()

        def kill_one_worker():
            while len(server.requests) < total // 3:
                time.sleep(0.01)
            pids = block_runner_pids()
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        ray_args = ["--executor", "ray", "--ray-actors", "2", "--max-concurrency", "2"]
        assert (
            generate(DEMO_CORPUS, tmp_path / "ray", server.url, *ray_args, "--config", str(block_config(tmp_path))) == 0
        )
        killer.join(timeout=5)
        resent = len(server.requests) - total

    assert killed, "no worker was killed"
    assert 0 <= resent <= 3  # at most what the dead worker had in flight: 1 request per stage (limit 2, 2 actors)
    assert_same_output(tmp_path / "ray", tmp_path / "local")


def block_config(tmp_path: Path, size: int = 3) -> Path:
    path = tmp_path / "blocks.yaml"
    path.write_text(yaml.safe_dump({"ray": {"block_size": size}}), encoding="utf-8")
    return path


def request_document(request) -> tuple[str, str]:
    """(stage, document text) a request was for."""
    return prompt_kind(request.prompt), next(t for t in DEMO_TEXTS if t in request.prompt)


def test_a_run_killed_mid_way_completes_on_rerun_skipping_finished_blocks(tmp_path, ray_cluster):
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
    command += ["--executor", "ray", "--ray-address", ray_cluster, "--config", str(block_config(tmp_path, 2))]
    with TGITestServer(slow_spam_scorer) as server:
        assert generate(DEMO_CORPUS, tmp_path / "local", server.url, "--no-cache") == 0  # (Ray's run asks)
        server.requests.clear()
        command += ["--endpoint", server.url, "--no-progress"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        blocks = out / ".bft" / "blocks"
        while process.poll() is None and len(list(blocks.glob("*/done.json"))) < 3:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 60
        while block_runner_pids() and time.monotonic() < deadline:  # Ray stops the dead driver's actors
            time.sleep(0.05)
        assert not block_runner_pids()
        finished = {p.parent.name for p in blocks.glob("*/done.json")}
        assert 3 <= len(finished) < 15  # killed part-way: 30 documents are 15 blocks
        done_texts = set()
        for name in finished:
            for line in (blocks / name / "journal" / "prepare.jsonl").read_text().splitlines():
                done_texts.add(json.loads(line)["document"])
        before = len(server.requests)

        rerun = subprocess.run(command, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        asked = [request_document(r) for r in server.requests[before:]]
    assert asked and not [a for a in asked if a[1] in done_texts]  # finished blocks were not requested again
    assert_same_output(out, tmp_path / "local")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["backtranslate"]["resumed_from_journal"] >= 6  # three finished blocks of two
    assert_endpoints_like(out, tmp_path / "local")  # the killed run's actors' counters and the rerun's limits


def test_fsspec_urls_are_listed_and_read_like_local_files(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/corpus/b.jsonl", b'{"id": "2", "text": "second"}\n')
    fs.pipe("/corpus/a.jsonl", b'{"id": "1", "text": "first"}\n\n{"id": "3", "text": "third"}\n')
    fs.pipe("/corpus/notes.txt", b"not a corpus file")
    files = corpus_file_list("memory://corpus")
    assert files == ["memory:///corpus/a.jsonl", "memory:///corpus/b.jsonl"]
    read = [(location, row["id"]) for location, row in rows_of_file(files[0])]
    assert read == [("memory:///corpus/a.jsonl:1", "1"), ("memory:///corpus/a.jsonl:3", "3")]


def test_ray_executor_sets_a_local_run_aside_and_refuses_a_changed_corpus(tmp_path, ray_cluster):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("".join(json.dumps({"id": str(n), "text": DEMO_TEXTS[n]}) + "\n" for n in range(4)))
    with TGITestServer() as server:
        assert generate(corpus, tmp_path / "local", server.url) == 0
        asked = len(server.requests)
        assert generate(corpus, tmp_path / "local", server.url, "--executor", "ray") == 0  # not the same run:
        (aside,) = (tmp_path / "local" / ".bft" / "earlier").iterdir()  # the local one is set aside,
        assert (aside / ".bft" / "journal" / "rewrite.jsonl").is_file() and len(server.requests) == asked  # cached
        assert (tmp_path / "local" / ".bft" / "blocks").is_dir()
        assert generate(corpus, tmp_path / "ray", server.url, "--executor", "ray") == 0
        (corpus / "b.jsonl").write_text(json.dumps({"id": "9", "text": DEMO_TEXTS[9]}) + "\n")
        assert generate(corpus, tmp_path / "ray", server.url, "--executor", "ray") == 2  # blocks would shift


def test_a_broken_corpus_line_stops_a_ray_run_with_the_readers_message(tmp_path, ray_cluster, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "1", "text": DEMO_TEXTS[0]}) + "\n{not json\n")
    strict = tmp_path / "strict.yaml"  # a broken line stops the run (by default it is a rejected record)
    strict.write_text("corpus: {malformed_lines: error}\n")
    with TGITestServer() as server:
        assert generate(corpus, tmp_path / "ray", server.url, "--executor", "ray", "--config", str(strict)) == 2
        assert server.requests == []  # the first pass found it: nothing was requested
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bft generate: error: ")]
    assert len(errors) == 1 and f"{corpus}:2: malformed JSON" in errors[0]


def fates(out) -> list[tuple]:
    rows = []
    for config in ("backtranslated", "rejected"):
        rows += [
            (config, r["id"], r["reason"], r["input_location"]) for r in load_dataset(str(out), config, split="train")
        ]
    return sorted(rows)


def test_broken_lines_are_rejected_alike_by_both_executors(tmp_path, ray_cluster):
    """`--executor ray` reads broken corpus lines as the local executor does: a BOM read past, a broken line a
    rejected record under its location, counted alike."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [json.dumps({"id": f"doc-{n}", "text": text}).encode() for n, text in enumerate(DEMO_TEXTS[:6])]
    lines[0] = b"\xef\xbb\xbf" + lines[0]
    lines.insert(2, b'{"id": "cut", "text": "the crawl')
    lines.insert(5, b'"a string, not a record"')
    (corpus / "part-0.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "run.yaml"
    config.write_text("ray: {block_size: 3}\n")
    args = ("--stages", "backtranslate", "--config", str(config))
    with TGITestServer() as server:
        assert generate(corpus, tmp_path / "local", server.url, *args) == 0
        assert generate(corpus, tmp_path / "ray", server.url, *args, "--executor", "ray") == 0
    assert fates(tmp_path / "ray") == fates(tmp_path / "local")
    stats = json.loads((tmp_path / "ray" / "stats.json").read_text())
    assert stats["prepare"]["rejected_by_reason"] == {"malformed_json": 1, "not_a_json_object": 1}
    assert stats["backtranslate"]["entered"] == 6  # the BOM'd first line is a document like the others
    rejected = {(r[1], r[2]) for r in fates(tmp_path / "ray") if r[0] == "rejected"}
    part = corpus / "part-0.jsonl"
    assert {(f"location:{part}:3", "malformed_json"), (f"location:{part}:6", "not_a_json_object")} <= rejected
