"""Running a finished run again prints its summary: no server is started, no endpoint is asked.

A run against the TGI test server, then the same command again: with an endpoint where nothing listens (it
would fail if asked), and with no endpoint at all (it would start the embedded server). A run with work left
(a larger `--limit`, a journal that changed since the outputs were written) still runs.
"""

import json
import os
import subprocess
import sys

from bft.generation.cli import main
from bft.generation.endpoints.processes import free_port
from tests.paths import DEMO_CORPUS
from tests.servers.tgi import TGITestServer

FINISHED = "is finished: every record has its outcome; nothing to send"


def generate(out, *extra) -> int:
    return main(["generate", str(DEMO_CORPUS), "--out", str(out), "--no-progress", *map(str, extra)])


def stage_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("  ")]


def test_a_finished_run_run_again_asks_no_endpoint_and_prints_the_same_summary(tmp_path, capsys):
    out = tmp_path / "o"
    with TGITestServer() as server:
        assert generate(out, "--limit", 4, "--endpoint", server.url) == 0
    first = capsys.readouterr()
    assert FINISHED not in first.err
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there: asking it would fail the run
    assert generate(out, "--limit", 4, "--endpoint", nobody) == 0
    again = capsys.readouterr()
    assert FINISHED in again.err
    assert stage_lines(again.out) == stage_lines(first.out) and "rewrite        entered      4" in again.out


def test_a_finished_run_run_again_without_endpoint_starts_no_embedded_server(tmp_path):
    out = tmp_path / "o"
    with TGITestServer() as server:
        assert generate(out, "--limit", 2, "--endpoint", server.url) == 0
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
    command += ["--limit", "2", "--no-progress"]
    env = {**os.environ, "BFT_CACHE": str(tmp_path / "cache")}  # (an embedded server would convert its model here)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert FINISHED in result.stderr and "starting the embedded" not in result.stderr
    assert not (tmp_path / "cache").exists() and not (out / ".bft" / "embedded-server.log").exists()


def test_a_run_with_work_left_is_not_taken_for_finished(tmp_path, capsys):
    out = tmp_path / "o"
    with TGITestServer() as server:
        assert generate(out, "--limit", 3, "--endpoint", server.url) == 0
        sent = len(server.requests)
        assert generate(out, "--limit", 5, "--endpoint", server.url) == 0  # two documents more
        assert len(server.requests) == sent + 2 * 3  # their three stages, and nothing else
        assert FINISHED not in capsys.readouterr().err

        rewrite = out / ".bft" / "journal" / "rewrite.jsonl"
        lines = rewrite.read_text().splitlines(keepends=True)
        rewrite.write_text("".join(lines[:-1]))  # as if the last rewrite had not been journaled
        sent = len(server.requests)
        assert generate(out, "--limit", 5, "--endpoint", server.url, "--no-cache") == 0
        assert len(server.requests) == sent + 1  # that rewrite, asked again (not the request cache's)
        assert FINISHED not in capsys.readouterr().err
    assert json.loads((out / "stats.json").read_text())["rewrite"]["kept"] == 5


def test_journals_that_changed_after_the_outputs_were_written_are_written_out_again(tmp_path, capsys):
    out = tmp_path / "o"
    record = out / ".bft" / "finished.json"
    with TGITestServer() as server:
        assert generate(out, "--limit", 3, "--endpoint", server.url) == 0
        three = record.read_text()
        assert generate(out, "--limit", 5, "--endpoint", server.url) == 0
        record.write_text(three)  # as if that run had been killed after its journals, before its outputs
        capsys.readouterr()
        sent = len(server.requests)
        assert generate(out, "--limit", 5, "--endpoint", server.url) == 0
        assert len(server.requests) == sent  # nothing left to ask, but the outputs are written again
    again = capsys.readouterr()
    assert FINISHED not in again.err and "rewritten: 5" in again.out
    assert json.loads(record.read_text())["counts"]["rewritten"] == 5
