"""`bft generate --executor ray --serve sglang` on a real local Ray cluster (2 CPUs): the replica runs in a Ray actor
placed by Ray (`run/ray_servers.py`), says its URL (the node's address), serves the run's block runners, is
SIGKILLed mid-run and restarted by its actor, and is stopped with its actor and placement group at the end.

The replica is the stand-in SGLang of `held_engine.py`: its first life holds its replies (so the kill lands with
requests in flight), and the hold is a file, since the replica's environment is the Ray worker's.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray

from bft.generation.cli import main as bft
from bft.generation.layout import blocks_dir
from tests.generation.run import held_engine
from tests.generation.run.held_engine import gone, pids_in
from tests.paths import DEMO_CORPUS, REPO

LOG = Path(".bft") / "servers" / "org-backward-0.log"


@pytest.fixture
def ray_cluster(tmp_path):
    """A local Ray cluster whose workers find the stand-in (`python -m sglang.launch_server`) and see no GPU; the
    hold file made."""
    folder = held_engine.install(tmp_path / "stub")
    hold = tmp_path / "hold"
    hold.touch()
    wanted = {
        "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]),
        "CUDA_VISIBLE_DEVICES": "",
        held_engine.HOLD_REPLIES: str(hold),
    }
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)  # (before Ray starts: its workers take this environment)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield hold
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def kill_when_held(log: Path, hold: Path, problems: list[str]) -> None:
    """Once the replica holds a request: lift the hold for its restart, SIGKILL its process group."""
    deadline = time.monotonic() + 180
    while not (log.exists() and held_engine.HELD in log.read_text()):
        if time.monotonic() > deadline:
            problems.append("the replica never held a request")
            break
        time.sleep(0.05)
    hold.unlink()
    if log.exists():
        os.killpg(os.getpgid(pids_in(log)[0]), signal.SIGKILL)


def test_a_replica_in_a_ray_actor_serves_the_run_and_is_restarted_by_its_actor(tmp_path, ray_cluster, capsys):
    out = tmp_path / "out"
    problems: list[str] = []
    killer = threading.Thread(target=kill_when_held, args=(out / LOG, ray_cluster, problems), daemon=True)
    killer.start()
    argv = ["generate", str(DEMO_CORPUS), "--out", str(out), "--limit", "4", "--no-progress", "--executor", "ray"]
    assert bft([*argv, "--serve", "sglang", "--serve-model", "org/backward"]) == 0
    killer.join(timeout=60)
    assert problems == []
    err = capsys.readouterr().err
    stats = json.loads((out / "stats.json").read_text())
    server = stats["servers"]["org/backward"]
    (replica,) = server["replicas"]
    node = ray.util.get_node_ip_address()
    assert replica["url"].startswith(f"http://{node}:") and f"org/backward is ready at {replica['url']}" in err
    assert replica["gpus"] is None and replica["log"] == str(LOG)
    (restart,) = replica["restarted"]  # (ready, or the run answered by it ended before its readiness check did)
    assert replica["restarts"] == 1 and restart["after"] == "killed by SIGKILL (out of memory?)"
    assert restart["ready"] or restart["run_ended_first"]
    assert server["stages"] == ["backtranslate", "curate", "rewrite"] and server["version"] == "0.5.23"
    first, second = pids_in(out / LOG)
    assert gone(first) and gone(second)  # stopped with the run
    # every document once through every stage, over the blocks' journals
    for stage in ("backtranslate", "curate", "rewrite"):
        ids = [
            json.loads(line)["id"]
            for journal in blocks_dir(out).glob(f"*/journal/{stage}.jsonl")
            for line in journal.read_text().splitlines()
        ]
        assert len(ids) == len(set(ids)) == stats[stage]["entered"] == 4
        assert "request_failed" not in stats[stage]["rejected_by_reason"]
    assert stats["backtranslate"]["retries_by_cause"]  # the held requests, sent again
    assert all(group["state"] == "REMOVED" for group in ray.util.placement_group_table().values())


def test_replicas_the_cluster_cannot_place_stop_the_run_after_the_start_up_timeout_naming_them(
    tmp_path, ray_cluster, capsys
):
    """Three replicas of one CPU each on a cluster of two CPUs: Ray would wait for their placement forever; the run
    stops after `serve.startup_timeout` naming what could not be placed, and leaves no placement group behind."""
    config = tmp_path / "three.yaml"
    config.write_text("serve:\n  replicas: 3\n  startup_timeout: 5\n")
    out = tmp_path / "out"
    argv = ["generate", str(DEMO_CORPUS), "--out", str(out), "--limit", "4", "--no-progress", "--executor", "ray"]
    began = time.monotonic()
    assert bft([*argv, "--config", str(config), "--serve", "sglang", "--serve-model", "org/backward"]) != 0
    assert time.monotonic() - began < 120
    err = capsys.readouterr().err
    assert "serve org/backward: Ray could not place 3 replica(s) of {'CPU': 1.0} each in 5 s" in err
    assert not (out / LOG).exists()  # no replica was started
    assert all(group["state"] == "REMOVED" for group in ray.util.placement_group_table().values())
