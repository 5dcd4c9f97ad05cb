"""The real vLLM (its CPU build, from `.venv-vllm`) started by `bft generate --serve vllm`, SIGKILLed mid-run with
its whole process group, restarted by bft on the same port, and the run finished with every document once.

Slow: two vLLM starts of 1-4 minutes each on 2 busy cores; the session's vLLM (`test_real_vllm.py`) is stopped
first, so that two never share the cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from bft.generation.endpoints.embedded import converted_checkpoint
from bft.generation.layout import journal_dir
from tests.generation.test_serve_vllm import vllm_processes
from tests.paths import DEMO_CONFIG, DEMO_CORPUS
from tests.servers.real_vllm import ARGS, PYTHON, SESSION

pytestmark = pytest.mark.slow


def journaled(out: Path, stage: str) -> list[str]:
    path = journal_dir(out) / f"{stage}.jsonl"
    return [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []


def api_server_group(log: Path) -> int | None:
    """The process group of the vLLM API server whose log is `log` (its keeper's), from the pid the log names."""
    found = re.search(r"\(APIServer pid=(\d+)\)", log.read_text(errors="replace"))
    try:
        return os.getpgid(int(found.group(1))) if found else None
    except ProcessLookupError:
        return None


def test_a_real_vllm_killed_mid_run_is_restarted_and_the_run_finishes(tmp_path, monkeypatch):
    if not PYTHON.exists():
        pytest.fail(f"the real vLLM is not installed at {PYTHON}: run `make vllm` (make test does it)")
    SESSION.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    for name in ("backtranslate", "curate", "rewrite"):
        demo[name]["sampling"].pop("seed")  # (vLLM's CPU build dies on seeded sampling: test_real_vllm.py)
        demo[name]["sampling"]["temperature"] = 0.0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(demo))
    out = tmp_path / "o"
    before = vllm_processes()
    serve = ["--serve", "vllm", "--serve-model", str(converted_checkpoint()), "--serve-python", str(PYTHON)]
    serve += ["--serve-arg=--dtype float32 --max-model-len 4096", *(f"--serve-arg={arg}" for arg in ARGS)]
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
    command += ["--config", str(config), "--limit", "4", "--no-progress", *serve]
    bft = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(bft.stderr), daemon=True)
    reader.start()
    killed = None
    try:
        deadline = time.monotonic() + 900
        while not journaled(out, "backtranslate"):  # the first answers are in; the other documents are in flight
            assert bft.poll() is None, "".join(lines)[-3000:]
            assert time.monotonic() < deadline, "no document was journaled in 15 minutes"
            time.sleep(0.2)
        (log,) = (out / ".bft" / "servers").glob("*.log")
        killed = api_server_group(log)
        assert killed is not None, f"no running vLLM API server named in {log}: {vllm_processes()}"
        os.killpg(killed, signal.SIGKILL)
        assert bft.wait(timeout=1500) == 0, "".join(lines)[-3000:]
    finally:
        if bft.poll() is None:
            os.killpg(bft.pid, signal.SIGKILL)
            bft.wait()
        reader.join(timeout=30)
    stats = json.loads((out / "stats.json").read_text())
    ((replica,),) = [server["replicas"] for server in stats["servers"].values()]
    assert replica["restarts"] == 1, "".join(lines)[-3000:]
    (restart,) = replica["restarted"]
    assert restart["after"] == "killed by SIGKILL (out of memory?)"
    # (the run can end before the restart's readiness check: vLLM is sent requests as soon as `/health` answers)
    assert restart["startup_seconds"] > 5 if restart["ready"] else restart["run_ended_first"]
    assert stats["backtranslate"]["entered"] == 4
    for stage in ("backtranslate", "curate", "rewrite"):
        ids = journaled(out, stage)
        assert len(ids) == len(set(ids)) == stats[stage]["entered"]
        assert "request_failed" not in stats[stage]["rejected_by_reason"], stats[stage]
    left = {pid: args for pid, args in vllm_processes().items() if pid not in before}
    assert not left, f"vLLM processes left after the run: {left}"
    print(
        f"vLLM started in {replica['startup_seconds']} s, restarted in {restart.get('startup_seconds', '?')} s; "
        f"run {stats['wall_seconds']} s; retries {stats['backtranslate']['retries_by_cause']}"
    )
