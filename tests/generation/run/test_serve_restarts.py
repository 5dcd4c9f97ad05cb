"""A replica bft started that dies mid-run is restarted within the run (`run/servers.py`), and its documents are
retried with nothing lost or kept twice; once its restarts are spent, the run stops naming its log.

The replica is a stand-in SGLang (`held_engine.py`) holding its replies, so that the test knows from its log that
requests are in flight when it SIGKILLs the replica's process group (as the kernel's OOM killer or a crash would
end it). Its restart is launched without the hold, and answers.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bft.generation.cli import main as bft
from bft.generation.config.files import load_config
from bft.generation.endpoints.processes import RUNNING, ServerProcess, free_port, server_exit, server_restarting
from bft.generation.layout import config_file as config_file_of
from bft.generation.layout import journal_dir
from bft.generation.run.servers import RELAUNCH_PAUSE, RunServers
from tests.generation.run import held_engine
from tests.generation.run.held_engine import gone, pids_in
from tests.paths import DEMO_CORPUS, REPO

LOG = Path(".bft") / "servers" / "org-backward-0.log"


@pytest.fixture
def held_sglang(tmp_path, monkeypatch):
    """`python -m sglang.launch_server` runs the stand-in; no GPU (one replica, on the CPU); replies held (until
    the `Killer` removes the hold file)."""
    folder = held_engine.install(tmp_path / "stub")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(REPO)]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv(held_engine.HOLD_REPLIES, str(hold))
    return folder


class Killer(threading.Thread):
    """Once the replica's log says it holds a request, lift the hold for its restart and SIGKILL its group."""

    def __init__(self, log: Path):
        super().__init__(daemon=True)
        self.log, self.killed, self.problem = log, None, None

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while not (self.log.exists() and held_engine.HELD in self.log.read_text()):
            if time.monotonic() > deadline:
                self.problem = "the replica never held a request"
                break
            time.sleep(0.05)
        Path(os.environ[held_engine.HOLD_REPLIES]).unlink()  # (also on failure: the run must not wait an hour)
        self.killed = pids_in(self.log)[0]
        os.killpg(os.getpgid(self.killed), signal.SIGKILL)


def run_killed_once(out: Path, *flags: str) -> tuple[int, Killer]:
    killer = Killer(out / LOG)
    killer.start()
    argv = ["generate", str(DEMO_CORPUS), "--out", str(out), "--limit", "4", "--no-progress"]
    code = bft([*argv, "--serve", "sglang", "--serve-model", "org/backward", *flags])
    killer.join(timeout=60)
    assert killer.problem is None, killer.problem
    return code, killer


def journal_ids(out: Path, stage: str) -> list[str]:
    path = journal_dir(out) / f"{stage}.jsonl"
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_a_replica_killed_mid_run_is_restarted_on_its_port_and_its_documents_are_retried(tmp_path, held_sglang, capsys):
    out = tmp_path / "out"
    code, killer = run_killed_once(out)
    assert code == 0
    err = capsys.readouterr().err
    assert "ended (killed by SIGKILL (out of memory?)); restarting it (restart 1 of at most 3" in err
    stats = json.loads((out / "stats.json").read_text())
    (replica,) = stats["servers"]["org/backward"]["replicas"]
    assert replica["restarts"] == 1
    (restart,) = replica["restarted"]
    assert restart["after"] == "killed by SIGKILL (out of memory?)"
    assert replica["startup_seconds"] >= held_engine.STARTING_SECONDS
    first, second = pids_in(out / LOG)  # one log, two lives: the restart was launched on the same port, same arguments
    assert first == killer.killed and gone(first) and gone(second)
    if restart["ready"]:
        assert restart["startup_seconds"] >= held_engine.STARTING_SECONDS
        assert f"is back at {replica['url']}" in err
    else:  # legitimate: the engine sends as soon as `/health` answers, so the run can end before the readiness check
        assert restart == {"after": "killed by SIGKILL (out of memory?)", "ready": False, "run_ended_first": True}
    # the held requests failed with the replica and were sent again: every document has one outcome per stage
    assert stats["backtranslate"]["retries_by_cause"]
    assert stats["backtranslate"]["entered"] == 4
    for stage in ("backtranslate", "curate", "rewrite"):
        ids = journal_ids(out, stage)
        assert len(ids) == len(set(ids)) == stats[stage]["entered"]
        assert "request_failed" not in stats[stage]["rejected_by_reason"]
    rows = pq.read_table(config_file_of(out, "rewritten")).to_pylist()
    assert len(rows) == len({row["id"] for row in rows}) == stats["rewrite"]["kept"] > 0


def test_a_replica_with_no_restart_left_stops_the_run_naming_its_log(tmp_path, held_sglang, capsys):
    out = tmp_path / "out"
    code, _ = run_killed_once(out, "--serve-max-restarts", "0")
    assert code != 0
    err = capsys.readouterr().err
    assert (
        "has exited (killed by SIGKILL (out of memory?); restarted 0 times, the most serve.max_restarts allows (0); "
        f"its log: {out / LOG})" in err
    )
    assert len(pids_in(out / LOG)) == 1  # not restarted
    assert not (out / "stats.json").exists()


def test_a_replica_whose_restarts_are_spent_stops_the_run_at_once_naming_its_exit_and_log(
    tmp_path, held_sglang, monkeypatch, capsys
):
    """Its one restart exits at once; the run stops then, naming how and where to look, rather than after
    `endpoints_down_timeout` (raised to the start-up timeout, 300 s here)."""
    monkeypatch.setenv(held_engine.DIE_WHEN_RESTARTED, str(tmp_path / "started-once"))
    config = tmp_path / "slow-start.yaml"
    config.write_text("serve:\n  startup_timeout: 300\n")
    out = tmp_path / "out"
    began = time.monotonic()
    code, _ = run_killed_once(out, "--serve-max-restarts", "1", "--config", str(config))
    assert time.monotonic() - began < 150
    assert code != 0
    err = capsys.readouterr().err
    assert f"exited with code {held_engine.RESTART_EXIT_CODE} before it was ready; see {out / LOG}" in err
    assert f"restarted 1 times, the most serve.max_restarts allows (1); its log: {out / LOG}" in err
    assert "started again as" in (out / LOG).read_text()
    assert not (out / "stats.json").exists()


def test_a_run_that_ends_while_a_replica_restarts_stops_the_restart_too(tmp_path, held_sglang, monkeypatch):
    """The restart waits for a replica that never becomes ready; leaving the servers stops it at once rather
    than after its start-up timeout, and leaves no process behind."""
    monkeypatch.delenv(held_engine.HOLD_REPLIES)
    out = tmp_path / "out"
    overrides = {"out": str(out), "serve.engine": "sglang", "serve.model": "org/backward", "serve.startup_timeout": 120}
    lines: list[str] = []
    servers = RunServers(load_config(None, overrides), out, log=lines.append)
    with servers:
        ((server,),) = servers.replicas.values()
        monkeypatch.setenv(held_engine.NEVER_READY, "1")
        os.killpg(os.getpgid(pids_in(out / LOG)[0]), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(pids_in(out / LOG)) < 2:  # the restart is launched; it will never be ready
            assert time.monotonic() < deadline, "no restart was launched"
            time.sleep(0.05)
        leaving = time.monotonic()
    assert time.monotonic() - leaving < 60  # not the 120 s start-up timeout
    assert all(gone(pid) for pid in pids_in(out / LOG))
    assert server.restarted == [
        {"after": "killed by SIGKILL (out of memory?)", "ready": False, "run_ended_first": True}
    ]
    assert server.url not in RUNNING  # kept registered while it restarted; forgotten once the run ended
    assert any(line.startswith("bft generate: stopped SGLang serving org/backward") for line in lines)


def test_a_restarting_replica_leaves_rotation_at_once_so_its_documents_keep_their_retries(
    tmp_path, held_sglang, capsys
):
    """With one retry a document, requests sent to the dead port while its replica restarts would spend it and be
    rejected as `request_failed`; the endpoint of a replica bft is restarting leaves rotation at its first failures
    instead, and its documents wait for it to be back."""
    config = tmp_path / "one-retry.yaml"
    config.write_text("max_retries: 1\n")
    out = tmp_path / "out"
    code, _ = run_killed_once(out, "--config", str(config))
    assert code == 0
    said = capsys.readouterr()
    assert "out of rotation" in said.out + said.err
    stats = json.loads((out / "stats.json").read_text())
    for stage in ("backtranslate", "curate", "rewrite"):
        assert "request_failed" not in stats[stage]["rejected_by_reason"], stage
    assert stats["backtranslate"]["entered"] == 4


def serve_on_the_cpu(out: Path, **settings) -> RunServers:
    """The run's servers (the stand-in on the CPU), not yet entered; `lines` gets what they say, timed."""
    overrides = {"out": str(out), "serve.engine": "sglang", "serve.model": "org/backward", "serve.startup_timeout": 120}
    overrides.update({f"serve.{key}": value for key, value in settings.items()})
    lines: list[tuple[float, str]] = []
    servers = RunServers(load_config(None, overrides), out, log=lambda line: lines.append((time.monotonic(), line)))
    servers.lines = lines
    return servers


def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


class Sleeper(ServerProcess):
    """A process that ignores SIGTERM, registered as a server: `stop` takes its grace to end it."""

    def __init__(self):
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.launch(["sh", "-c", "trap '' TERM; sleep 60 & wait"], dict(os.environ), None)


def test_stopping_a_restarting_server_keeps_it_out_of_rotation_and_a_final_stop_forgets_it():
    """While a restart ends what the exit left of the group, the pool must still see the replica as restarting
    (not as a live endpoint); the run's end forgets it."""
    server = Sleeper()
    server.start()
    server.restarting = True
    server.stop(grace=0.2)
    assert RUNNING.get(server.url) is server and server_restarting(server.url)
    server.restarting = False
    server.stop(grace=0.2)
    assert server.url not in RUNNING


def test_a_restart_that_cannot_begin_is_counted_paused_and_given_up(tmp_path, held_sglang, monkeypatch):
    """A relaunch that fails with an error bft did not foresee (here its log cannot be opened: an `OSError`)
    counts as a failed restart, the next one waits a pause (a port still taken is not free a millisecond later),
    and once none is left the replica is given up naming the error, so that the run stops."""
    monkeypatch.delenv(held_engine.HOLD_REPLIES)
    out = tmp_path / "out"
    servers = serve_on_the_cpu(out, max_restarts=2)
    with servers:
        ((server,),) = servers.replicas.values()
        (pid,) = pids_in(out / LOG)
        (out / LOG).unlink()
        (out / LOG).mkdir()  # (the relaunch cannot open its log)
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        wait_for(lambda: server.gave_up is not None, "the replica was never given up")
        ended = server_exit(server.url)
    assert server.restarted == [{"after": "killed by SIGKILL (out of memory?)", "ready": False}] + [
        {"after": server.restarted[1]["after"], "ready": False}
    ]
    assert (
        "Is a directory" in ended
        and f"restarted 2 times, the most serve.max_restarts allows (2); its log: {out / LOG}" in ended
    )
    (first,), (second,) = ([at for at, line in servers.lines if f"(restart {n} of at most 2" in line] for n in (1, 2))
    assert second - first >= RELAUNCH_PAUSE


def test_a_replica_dying_while_another_restarts_is_restarted_without_waiting_for_it(tmp_path, held_sglang, monkeypatch):
    """Replica 0's restart never becomes ready (it would wait its 120 s start-up timeout); replica 1, killed
    meanwhile, is back long before that."""
    monkeypatch.delenv(held_engine.HOLD_REPLIES)
    out = tmp_path / "out"
    servers = serve_on_the_cpu(out, replicas=2)
    logs = [out / ".bft" / "servers" / f"org-backward-{i}.log" for i in range(2)]
    with servers:
        ((stuck, other),) = servers.replicas.values()
        monkeypatch.setenv(held_engine.NEVER_READY, "1")
        os.killpg(os.getpgid(pids_in(logs[0])[0]), signal.SIGKILL)
        wait_for(lambda: len(pids_in(logs[0])) == 2 and stuck.alive(), "replica 0 was not restarted")
        monkeypatch.delenv(held_engine.NEVER_READY)
        os.killpg(os.getpgid(pids_in(logs[1])[0]), signal.SIGKILL)
        wait_for(lambda: other.restarted, "replica 1 waited for replica 0's restart")
        assert other.restarted[0]["ready"] and not stuck.restarted
    assert stuck.restarted == [{"after": "killed by SIGKILL (out of memory?)", "ready": False, "run_ended_first": True}]
