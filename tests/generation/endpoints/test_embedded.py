"""The real thing: the demo run on the embedded SmolLM2-135M-Instruct behind `transformers serve`.

Slow (a few minutes on 2 CPU cores, plus a one-time GGUF conversion into bft's cache), and part of CI.
It runs the demo's settings on its first `DOCUMENTS` documents, so that a busy machine still finishes;
`make demo` runs all 30.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from datasets import load_dataset

from bft.generation.endpoints.embedded import EmbeddedServer, converted_checkpoint
from tests.paths import DEMO_CONFIG, DEMO_CORPUS
from tests.slow import run_bft

DOCUMENTS = 10


@pytest.mark.slow
def test_demo_on_the_embedded_model_produces_a_loadable_non_empty_rewritten_dataset(tmp_path):
    out = tmp_path / "demo"
    args = ["generate", DEMO_CORPUS, "--out", out, "--config", DEMO_CONFIG, "--limit", DOCUMENTS, "--no-progress"]
    result = run_bft(*args, timeout=1500, out=out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{DOCUMENTS} documents in" in result.stdout and 'load_dataset("' in result.stdout

    stats = json.loads((out / "stats.json").read_text())
    for name in ("prepare", "backtranslate", "curate", "rewrite"):
        assert stats[name]["entered"] == stats[name]["kept"] + stats[name]["rejected"], name
    assert stats["backtranslate"]["entered"] == DOCUMENTS
    assert stats["curate"]["entered"] == stats["backtranslate"]["kept"]
    assert stats["rewrite"]["entered"] == stats["curate"]["kept"]

    rewritten = load_dataset(str(out), "rewritten", split="train")
    assert len(rewritten) == stats["rewrite"]["kept"] > 0
    row = rewritten[0]
    assert row["instruction"] and row["response"] and 4 <= row["score"] <= 5
    rewrite = row["provenance"][-1]
    assert rewrite["mode"] == "raw" and rewrite["prefill"] == "[RES]" and rewrite["model_id"]
    rejected = load_dataset(str(out), "rejected", split="train")
    assert len(rejected) == sum(stats[s]["rejected"] for s in ("prepare", "backtranslate", "curate", "rewrite"))
    assert all(r["reason"] for r in rejected)
    assert "Settings that differ from the papers" in (out / "README.md").read_text()


def children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"  # a zombie has exited
    except OSError:
        return False


@pytest.mark.slow
def test_the_embedded_server_dies_with_bft_even_on_sigkill(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
    process = subprocess.Popen([*command, "--config", str(DEMO_CONFIG), "--no-progress"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not children(process.pid) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        (server,) = children(process.pid)
        time.sleep(2)  # the server is up and loading its model
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 30
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(server), "the embedded server outlived a SIGKILLed bft"
    finally:
        if process.poll() is None:
            process.kill()


def peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.slow
def test_the_embedded_server_stays_under_2_gb_under_load():
    import concurrent.futures
    import urllib.request

    server = EmbeddedServer(converted_checkpoint())
    with server:
        prompt = "Notes on sourdough: feed it flour and water every day. " * 90  # about 1,000 tokens

        def ask(_):
            body = json.dumps({"model": server.model_name, "prompt": prompt, "max_tokens": 48}).encode()
            request = urllib.request.Request(server.url + "/v1/completions", body, {"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=600) as response:
                return response.status

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(ask, range(8))) == [200] * 8
        peak = peak_rss_bytes(server.process.pid)
    assert peak < 2 * 1024**3, f"embedded server peak RSS {peak / 1024**3:.2f} GiB"


@pytest.mark.slow
def test_a_run_whose_embedded_server_dies_stops_and_names_the_exit(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--config", str(DEMO_CONFIG), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    journal = out / ".bft" / "journal" / "backtranslate.jsonl"
    while time.monotonic() < deadline and process.poll() is None and not (journal.exists() and journal.stat().st_size):
        time.sleep(0.2)  # until the server has answered a first request
    (server,) = children(process.pid)
    os.kill(server, signal.SIGKILL)  # as the OOM killer does
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2
    assert "has exited (killed by SIGKILL (out of memory?))" in err and "rerun the same command to resume" in err
    entries = [
        json.loads(line) for p in (out / ".bft" / "journal").glob("*.jsonl") for line in p.read_text().split("\n")[:-1]
    ]
    assert not [e for e in entries if e.get("reason") == "request_failed"]  # nothing blamed on the documents
