"""`bft generate --serve vllm`: bft starts the real vLLM (its CPU build, from `.venv-vllm`) itself, sends the
run to it and stops it, with nothing of it left running.

The engine arguments are the CPU ones `tests/servers/real_vllm.py` starts it with, passed through `--serve-arg`;
the model is the embedded SmolLM2 checkpoint, which bft serves under its folder's name and names in each stage
(the demo's raw prompts get that folder as their tokenizer, unasked). Slow: one vLLM start of 1-4 minutes on 2
busy cores; the session's vLLM (`test_real_vllm.py`) is stopped first, so that two never share the cores.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from bft.generation.endpoints.embedded import converted_checkpoint
from tests.paths import DEMO_CONFIG, DEMO_CORPUS
from tests.servers.real_vllm import ARGS, PYTHON, SESSION
from tests.slow import run_bft

pytestmark = pytest.mark.slow


def vllm_processes() -> dict[int, str]:
    """The running processes of any vLLM on this machine (API servers, engine cores, workers), by id. A zombie
    (ended, waiting for its new parent to reap it) is not running."""
    listing = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    found = {}
    for line in listing.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[1].startswith("Z"):
            continue
        pid, _, args = parts
        if ("vllm" in args.lower()) and "pytest" not in args and "ps -eo" not in args:
            found[int(pid)] = args
    return found


def test_generate_serves_the_run_on_a_vllm_it_starts_and_stops(tmp_path, monkeypatch):
    if not PYTHON.exists():
        pytest.fail(f"the real vLLM is not installed at {PYTHON}: run `make vllm` (make test does it)")
    SESSION.stop()  # (the session's server, if a test before started it: one vLLM at a time on these cores)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache, as the session's server
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    for name in ("backtranslate", "curate", "rewrite"):
        demo[name]["sampling"].pop("seed")  # (vLLM's CPU build dies on seeded sampling: test_real_vllm.py)
        demo[name]["sampling"]["temperature"] = 0.0
    demo["curate"] |= {"score_mode": "expected", "min_score": 1.0}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(demo))
    model = converted_checkpoint()
    out = tmp_path / "o"
    before = vllm_processes()
    serve = ["--serve", "vllm", "--serve-model", model, "--serve-python", PYTHON]
    serve += ["--serve-arg=--dtype float32 --max-model-len 4096", *(f"--serve-arg={arg}" for arg in ARGS)]
    args = ["generate", DEMO_CORPUS, "--out", out, "--config", config, "--limit", 3, "--no-progress", *serve]
    result = run_bft(*args, timeout=1500, out=out)
    assert result.returncode == 0, result.stderr[-3000:]

    stats = json.loads((out / "stats.json").read_text())
    assert stats["backtranslate"]["entered"] == 3 and stats["backtranslate"]["kept"] > 0
    (name, server) = next(iter(stats["servers"].items()))
    assert name == model.name and len(stats["servers"]) == 1
    assert (server["engine"], server["version"], server["model"]) == ("vllm", "0.32.0", str(model))
    assert server["python"] == str(PYTHON) and server["stages"] == ["backtranslate", "curate", "rewrite"]
    assert server["args"] == ["--dtype float32 --max-model-len 4096", *ARGS]
    assert server["served_name"] == model.name
    (replica,) = server["replicas"]  # no GPU here: one, on the CPU
    assert replica["gpus"] is None and replica["restarts"] == 0 and replica["startup_seconds"] > 5
    log = out / replica["log"]
    assert (
        replica["log"] == f".bft/servers/{model.name}-0.log"
        and f"Starting vLLM server on {replica['url']}" in log.read_text()
    )
    curated = [json.loads(line) for line in (out / ".bft" / "journal" / "curate.jsonl").read_text().splitlines()]
    assert curated and all(entry["status"] in ("kept", "rejected") for entry in curated)
    left = {pid: args for pid, args in vllm_processes().items() if pid not in before}
    assert not left, f"vLLM processes left after the run: {left}"
    print(f"vLLM started by bft in {replica['startup_seconds']} s; run {stats['wall_seconds']} s")
