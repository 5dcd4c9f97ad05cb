"""Exactly-once resume: SIGKILL a real `bft generate` process at random points, rerun, compare; and a rerun over
a journal whose last line a kill tore mid-write (cut to its whole lines, byte for byte; the rest left as is)."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
from datasets import load_dataset

from bft.generation.cli import main
from bft.generation.corpus.documents import read_corpus
from tests.paths import DEMO_CORPUS
from tests.servers.models import Reply, paper_model, prompt_kind
from tests.servers.tgi import TGITestServer

DOCS = {d.text: d.id for d in read_corpus(str(DEMO_CORPUS))}
CONFIGS = ("backtranslated", "curated", "rewritten", "rejected")
STAGES = ("backtranslate", "curate", "rewrite")


def deliberate_model(request):
    """The paper model, a little slow (so kills land mid-run) and rejecting some documents."""
    time.sleep(0.05)
    if prompt_kind(request.prompt) == "curate" and ("Lorem ipsum" in request.prompt or "MEGA SALE" in request.prompt):
        return Reply("Score: 2")
    return paper_model(request)


def command(out, url):
    return [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)] + [
        "--endpoint",
        url,
        "--max-concurrency",
        "3",
        "--no-progress",
    ]


def generate(out, url, *extra) -> int:
    """`bft generate` in this process, on the first ten documents of the demo corpus (one rejected)."""
    return main(
        ["generate", str(DEMO_CORPUS), "--out", str(out), "--endpoint", url, "--limit", "10", "--no-progress", *extra]
    )


def journal_ids(out) -> dict[str, set[str]]:
    """Ids with a complete journal line, per stage: the work a rerun must not request again."""
    finished = {}
    for stage in STAGES:
        path = out / ".bft" / "journal" / f"{stage}.jsonl"
        lines = path.read_bytes().split(b"\n")[:-1] if path.exists() else []  # the last piece may be torn
        finished[stage] = {json.loads(line)["id"] for line in lines}
    return finished


def request_target(request) -> tuple[str, str]:
    return prompt_kind(request.prompt), next(i for text, i in DOCS.items() if text in request.prompt)


def rows(out, config) -> list[tuple]:
    data = load_dataset(str(out), config, split="train")
    return [(r["id"], r["stage"], r["reason"], r["instruction"], r["score"], r["response"]) for r in data]


def test_sigkill_at_random_points_then_resume_holds_each_document_exactly_once(tmp_path):
    rng = random.Random(2408)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    with TGITestServer(deliberate_model) as server:
        subprocess.run(command(reference, server.url), check=True, capture_output=True)
        server.requests.clear()

        runs = []  # (first request index, work journaled before the run started)
        kills = 0
        for threshold in (3, 20, 40, 60, 80):  # journal lines written before the kill (of 90 in all)
            runs.append((len(server.requests), journal_ids(killed)))
            process = subprocess.Popen(
                command(killed, server.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            while process.poll() is None and sum(map(len, journal_ids(killed).values())) < threshold:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.15))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
        assert kills >= 3

        runs.append((len(server.requests), journal_ids(killed)))
        done = subprocess.run(command(killed, server.url), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs.append((len(server.requests), None))
        for (start, finished), (end, _) in zip(runs, runs[1:], strict=False):
            asked_again = [t for t in map(request_target, server.requests[start:end]) if t[1] in finished[t[0]]]
            assert asked_again == []  # no finished work was requested again

    for config in CONFIGS:
        expected, got = rows(reference, config), rows(killed, config)
        assert got == expected, config  # same ids, same order, same content
        assert len({r[0] for r in got}) == len(got)  # each document once


TORN = {  # how much of its last journal line a run killed mid-write left
    "half a line": lambda whole: whole[: len(whole) // 2],
    "all but its newline": lambda whole: whole[:-1],
}


@pytest.mark.parametrize("torn", list(TORN), ids=list(TORN))
def test_a_torn_last_journal_line_is_cut_and_its_document_done_again_on_rerun(tmp_path, capsys, torn):
    """A kill mid-write leaves the last stage's last line torn: the rerun cuts exactly that piece (the whole
    lines stay byte for byte), asks for that one document again, and leaves a journal whose every line parses.
    The journals whose last line is whole are left byte-identical."""
    out = tmp_path / "o"
    journals = out / ".bft" / "journal"
    with TGITestServer(deliberate_model) as server:
        assert generate(out, server.url) == 0
        reference = {config: rows(out, config) for config in CONFIGS}
        before = {path.name: path.read_bytes() for path in journals.glob("*.jsonl")}
        lines = before["rewrite.jsonl"].splitlines(keepends=True)
        whole, last = b"".join(lines[:-1]), lines[-1]
        (journals / "rewrite.jsonl").write_bytes(whole + TORN[torn](last))
        capsys.readouterr()

        sent = len(server.requests)
        assert generate(out, server.url, "--no-cache") == 0, capsys.readouterr().err[-2000:]
        again = [request_target(request) for request in server.requests[sent:]]
        assert again == [("rewrite", json.loads(last)["id"])]  # the torn document, and only it

    after = {path.name: path.read_bytes() for path in journals.glob("*.jsonl")}
    assert after.keys() == before.keys()
    for name, data in before.items():
        if name != "rewrite.jsonl":
            assert after[name] == data, name  # nothing to cut, nothing to add
    rewrite = after["rewrite.jsonl"]
    assert rewrite.startswith(whole) and rewrite.endswith(b"\n")  # every whole line kept, byte for byte
    new = rewrite[len(whole) :].split(b"\n")[:-1]
    assert [json.loads(piece)["id"] for piece in new] == [json.loads(last)["id"]]  # one well-formed line
    assert [json.loads(piece) for piece in rewrite.split(b"\n")[:-1]]  # the whole file parses
    for config in CONFIGS:
        assert rows(out, config) == reference[config], config
