"""The servers a run starts itself (`run/servers.py`): each stage's serve settings (its own over the run's, equal
ones shared), the replicas placed on the visible GPUs, and whole `bft generate --serve` runs against a stand-in
SGLang started by SGLang's own command line (`tests/servers/engine_stub.py`): rows out, one log per replica,
the servers in `stats.json` (and in their public form once built), and every server gone when the run ends,
whether it ends well or not; and which serve settings a rerun or the next round's re-scoring takes as changed
or inherited."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import yaml

from bft.generation.cli import build_parser
from bft.generation.cli import main as bft
from bft.generation.config import ALL_STAGES
from bft.generation.config.files import dump_config, load_config
from bft.generation.errors import ConfigError
from bft.generation.generate import overrides_from
from bft.generation.layout import RUN_CONFIG_FILE
from bft.generation.layout import config_file as config_file_of
from bft.generation.run.inputs import scoring_rule_of_the_pool
from bft.generation.run.pools import use_embedded
from bft.generation.run.resume import differing_settings
from bft.generation.run.servers import ServeSpec, place_replicas, served_stages, visible_gpus
from bft.generation.run.stats import RunStats, stage_counts
from tests.paths import DEMO_CORPUS, REPO
from tests.servers import engine_stub, protocol


def spec(name: str, args: tuple[str, ...] = (), replicas: int | None = None) -> ServeSpec:
    return ServeSpec("vllm", name, name, sys.executable, args, replicas, 900.0)


def config_file(tmp_path, data: dict) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# -- which stages share which servers -------------------------------------------------------------------------


def test_stages_with_equal_serve_settings_share_servers_and_a_stage_of_its_own_gets_its_own(tmp_path):
    """BAFT: one model writes instructions and scores them, another rewrites; the stage's own `serve` keeps the
    run's engine, Python and arguments for what it leaves unset."""
    config = load_config(
        config_file(
            tmp_path,
            {
                "serve": {"engine": "vllm", "model": "org/backward", "python": "/v/python", "args": ["-tp 2"]},
                "rewrite": {"serve": {"model": "org/rewriter-70b", "args": ["-tp 4"]}},
            },
        )
    )
    specs = served_stages(config)
    assert specs["backtranslate"] is not specs["curate"] and specs["backtranslate"] == specs["curate"]
    assert specs["rewrite"] != specs["curate"]
    assert (specs["curate"].model, specs["curate"].served_name, specs["curate"].args) == (
        "org/backward",
        "org/backward",
        ("-tp 2",),
    )
    rewrite = specs["rewrite"]
    assert (rewrite.engine, rewrite.python, rewrite.args, rewrite.gpus_per_replica) == (
        "vllm",
        "/v/python",
        ("-tp 4",),
        4,
    )
    assert len(dict.fromkeys(specs.values())) == 2  # two servers for three stages


def test_a_stage_with_its_own_endpoints_is_not_served_and_a_local_model_is_served_by_its_folder_name(tmp_path):
    model = tmp_path / "SmolLM2"
    model.mkdir()
    config = load_config(
        config_file(
            tmp_path,
            {"serve": {"engine": "sglang", "model": str(model)}, "curate": {"endpoints": ["http://judge:8000"]}},
        )
    )
    specs = served_stages(config)
    assert set(specs) == {"backtranslate", "rewrite"} and specs["rewrite"].served_name == "SmolLM2"
    assert specs["rewrite"].python == sys.executable  # unset: bft's own Python


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"serve": {"engine": "vllm", "model": "m"}, "endpoints": ["http://a"]}, "give endpoints (--endpoint) or"),
        (
            {"curate": {"endpoints": ["http://a"], "serve": {"engine": "vllm", "model": "m"}}},
            "curate: give curate.endpoints or curate.serve, not both",
        ),
        ({"serve": {"engine": "vllm"}}, "backtranslate: serve.engine vllm needs serve.model"),
        ({"rewrite": {"serve": {"model": "m"}}}, "rewrite: serve settings but no serve.engine"),
        (
            {"serve": {"engine": "vllm", "model": "m"}, **{s: {"endpoints": ["http://a"]} for s in ALL_STAGES}},
            "every stage has its own endpoints, so no stage would be served",
        ),
        (
            {"serve": {"engine": "vllm", "model": "org/a"}, "rewrite": {"serve": {"args": ["--dtype half"]}}},
            "two different servers would both be named 'org/a'",
        ),
        (
            {"serve": {"engine": "vllm", "model": "m", "order": "in_turn"}, "executor": "ray"},
            "serve.order in_turn with --executor ray is not supported",
        ),
        ({"serve": {"engine": "vllm", "model": "m", "args": ["--port 8000"]}}, "serve.args sets --port"),
        ({"serve": {"engine": "sglang", "model": "m", "args": ["--model_path=x"]}}, "serve.args sets --model_path"),
        ({"serve": {"engine": "vllm", "model": "m", "args": ["--api-key sk-1"]}}, "serve.args has --api-key"),
        ({"serve": {"engine": "vllm", "model": "m", "args": ["--hf-token=hf_1"]}}, "serve.args has --hf-token"),
        ({"serve": {"engine": "vllm", "model": "m", "replicas": 0}}, "serve.replicas is 0: at least 1"),
        ({"serve": {"engine": "vllm", "model": "m", "startup_timeout": -1}}, "serve.startup_timeout is -1"),
        ({"serve": {"engine": "vllm", "model": "m", "max_restarts": -1}}, "serve.max_restarts is -1: 0 or more"),
        (
            {"serve": {"engine": "vllm", "model": "m"}, "rewrite": {"serve": {"order": "in_turn"}}},
            "rewrite: serve.order is a run setting",
        ),
    ],
)
def test_conflicting_or_half_serve_settings_are_refused(tmp_path, data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        served_stages(load_config(config_file(tmp_path, data)))


def test_a_local_model_is_served_by_its_absolute_path_whatever_way_it_is_written(tmp_path, monkeypatch):
    """The server reports the path it was given (`root`), which keys the request cache by the folder's files
    only when it is absolute: a model retrained into `models/final` must not get its predecessor's replies."""
    (tmp_path / "models" / "final").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    specs = served_stages(load_config(config_file(tmp_path, {"serve": {"engine": "vllm", "model": "models/final"}})))
    assert {spec.model for spec in specs.values()} == {str(tmp_path / "models" / "final")}


def test_serve_on_the_command_line_takes_the_stages_from_a_configs_endpoints(tmp_path):
    """`--serve` wins over a config whose stages name endpoints, as `--endpoint` does (the shipped `baft`)."""
    overrides = overrides_from(
        build_parser("generate").parse_args(["generate", "c.jsonl", "--out", "o", "--serve", "vllm"])
    )
    assert all(overrides[f"{stage}.endpoints"] == [] for stage in ALL_STAGES)


# -- replicas on GPUs -------------------------------------------------------------------------------------------


def test_one_replica_per_gpu_group_each_seeing_only_its_group():
    gpus = [str(i) for i in range(8)]
    assert place_replicas([spec("a", ("-tp 4",))], gpus) == {spec("a", ("-tp 4",)): ["0,1,2,3", "4,5,6,7"]}
    assert place_replicas([spec("a")], gpus)[spec("a")] == gpus
    assert place_replicas([spec("a")], ["3", "5"])[spec("a")] == ["3", "5"]  # CUDA_VISIBLE_DEVICES' own names


def test_differing_servers_share_the_gpus_and_a_fixed_replica_count_goes_first():
    gpus = [str(i) for i in range(8)]
    backward, rewriter = spec("backward"), spec("rewriter", ("-tp 2",))
    assert place_replicas([backward, rewriter], gpus) == {backward: ["0", "1", "2", "3"], rewriter: ["4,5", "6,7"]}
    judge = spec("judge", ("-tp 4",), replicas=1)
    assert place_replicas([backward, judge], gpus) == {judge: ["0,1,2,3"], backward: ["4", "5", "6", "7"]}


def test_too_few_gpus_is_refused_naming_the_need():
    with pytest.raises(ConfigError, match=r"a replica needs 4 GPUs and its share is 2 of 4 visible \(2 servers"):
        place_replicas([spec("a"), spec("b", ("-tp 4",))], ["0", "1", "2", "3"])
    with pytest.raises(ConfigError, match=r"3 replicas of 2 GPUs need 6; 4 of 4 visible GPUs are left"):
        place_replicas([spec("a", ("-tp 2",), replicas=3)], ["0", "1", "2", "3"])


def test_without_a_gpu_each_server_runs_its_replicas_on_the_cpu():
    assert place_replicas([spec("a"), spec("b", replicas=2)], []) == {
        spec("a"): [None],
        spec("b", replicas=2): [None, None],
    }


def test_the_visible_gpus_are_cuda_visible_devices_when_it_is_set(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []  # set and empty: no GPU, whatever nvidia-smi lists


# -- whole runs against a stand-in SGLang -------------------------------------------------------------------------


@pytest.fixture
def stub_sglang(tmp_path, monkeypatch):
    """`python -m sglang.launch_server` runs the stand-in (its package first on the path, the repository next)."""
    folder = engine_stub.install(tmp_path / "stub")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(REPO)]))
    return folder


def answering(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie its new parent has not reaped yet has ended too)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def pid_in(log) -> int:
    return int(next(line for line in log.read_text().splitlines() if line.startswith("pid "))[4:])


def test_generate_starts_a_replica_per_gpu_group_sends_to_them_and_stops_them(tmp_path, monkeypatch, stub_sglang):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    out = tmp_path / "out"
    argv = ["generate", str(DEMO_CORPUS), "--out", str(out), "--limit", "3", "--no-progress"]
    argv += ["--serve", "sglang", "--serve-model", "org/backward", "--serve-arg=--tp-size 2", "--serve-arg=--chunked"]
    argv += ["--serve-arg=--revision 0123abc"]
    assert bft(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rewrite"]["kept"] > 0
    (server,) = stats["servers"].values()
    assert (server["engine"], server["version"], server["model"]) == ("sglang", protocol.SGLANG_VERSION, "org/backward")
    assert server["args"] == ["--tp-size 2", "--chunked", "--revision 0123abc"]
    assert server["stages"] == ["backtranslate", "curate", "rewrite"]
    assert (server["served_name"], server["revision"]) == ("org/backward", "0123abc")
    # four GPUs held from the first launch to the stop: GPU hours, and how long the start-up and the work took
    seconds = sum(replica["serving_seconds"] for replica in server["replicas"])
    assert server["gpu_hours"] == pytest.approx(2 * seconds / 3600, abs=1e-4) and server["gpu_hours"] > 0
    (serving,) = server["serving"]
    assert serving["startup_seconds"] >= engine_stub.STARTING_SECONDS and serving["work_seconds"] > 0
    assert [(r["gpus"], r["restarts"], r["log"]) for r in server["replicas"]] == [
        ("0,1", 0, ".bft/servers/org-backward-0.log"),
        ("2,3", 0, ".bft/servers/org-backward-1.log"),
    ]
    assert all(r["startup_seconds"] >= engine_stub.STARTING_SECONDS for r in server["replicas"])
    for replica in server["replicas"]:
        log = out / replica["log"]
        assert f"CUDA_VISIBLE_DEVICES={replica['gpus']}" in log.read_text()
        assert "engine args ['--tp-size', '2', '--chunked', '--revision', '0123abc']" in log.read_text()
        assert not answering(replica["url"]) and gone(pid_in(log))
    rows = pq.read_table(config_file_of(out, "rewritten")).to_pylist()
    assert len(rows) == stats["rewrite"]["kept"]
    stages = [stage for row in rows for stage in row["provenance"]]
    assert {(stage["model_id"], stage["server"]) for stage in stages} == {("org/backward", "sglang")}


def test_a_run_whose_second_server_fails_to_start_stops_the_first(tmp_path, monkeypatch, stub_sglang, capsys):
    """Every replica is launched, then waited for in turn: the first is up when the second's engine exits (here
    `false` as its Python), and the run stops with the first stopped too."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    out = tmp_path / "out"
    config = config_file(
        tmp_path,
        {
            "serve": {"engine": "sglang", "model": "org/backward"},
            "rewrite": {"serve": {"model": "org/rewriter", "python": "/bin/false"}},
        },
    )
    assert bft(["generate", str(DEMO_CORPUS), "--out", str(out), "--config", config, "--limit", "2"]) != 0
    err = capsys.readouterr().err
    assert "SGLang serving org/backward is ready" in err
    assert "SGLang serving org/rewriter exited with code 1 before it was ready" in err
    assert gone(pid_in(out / ".bft" / "servers" / "org-backward-0.log"))
    assert not (out / "stats.json").exists()


def test_a_stage_with_its_own_model_gets_its_own_server_and_the_others_share_one(tmp_path, monkeypatch, stub_sglang):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: one replica each, on the CPU
    out = tmp_path / "out"
    config = config_file(
        tmp_path,
        {"serve": {"engine": "sglang", "model": "org/backward"}, "rewrite": {"serve": {"model": "org/rewriter"}}},
    )
    assert bft(["generate", str(DEMO_CORPUS), "--out", str(out), "--config", config, "--limit", "2"]) == 0
    servers = json.loads((out / "stats.json").read_text())["servers"]
    assert {name: (s["stages"], [r["gpus"] for r in s["replicas"]]) for name, s in servers.items()} == {
        "org/backward": (["backtranslate", "curate"], [None]),
        "org/rewriter": (["rewrite"], [None]),
    }
    rows = pq.read_table(config_file_of(out, "rewritten")).to_pylist()
    models = {(stage["stage"], stage["model_id"]) for row in rows for stage in row["provenance"]}
    assert models == {("backtranslate", "org/backward"), ("curate", "org/backward"), ("rewrite", "org/rewriter")}
    for server in servers.values():
        assert gone(pid_in(out / server["replicas"][0]["log"]))
    # released: the servers' local paths (Python, logs) and hosts in their public form, as every other file's
    assert bft(["build", str(out), "--out", str(tmp_path / "ds"), "--license", "odc-by"]) == 0
    public = json.loads((tmp_path / "ds" / "stats.json").read_text())["servers"]
    assert public["org/backward"]["python"] == os.path.basename(sys.executable)
    assert "127.0.0.1" not in json.dumps(public) and str(tmp_path) not in json.dumps(public)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "**Servers bft started.**" in card
    assert "serving `org/backward` as `org/backward` for backtranslate, curate, with `no extra arguments`; " in card
    assert "serving `org/rewriter` as `org/rewriter` for rewrite" in card


def test_the_servers_entry_of_stats_json_is_read_back_and_is_not_a_stage():
    """A finished run's rerun prints its summary from `stats.json`: the servers are kept there, apart from the
    stages' counts (`builders`, `bft view` and the cards read the stages from it too)."""
    servers = {"org/backward": {"engine": "vllm", "replicas": [{"url": "http://127.0.0.1:1", "restarts": 0}]}}
    stats = RunStats.empty(["prepare", "backtranslate"])
    stats.servers = servers
    again = RunStats.from_json(json.loads(json.dumps(stats.to_json())))
    assert list(again.stages) == ["prepare", "backtranslate"] and again.servers == servers
    assert set(stage_counts(stats.to_json())) == {"prepare", "backtranslate"}


def test_a_rerun_with_the_servers_run_otherwise_resumes_and_one_with_another_model_starts_afresh(tmp_path):
    """How the servers run (their Python, replicas, start-up time, restarts, together or in turn) does not change
    the data; the model and the engine's arguments do."""
    base = {"serve": {"engine": "vllm", "model": "org/m", "args": ["--dtype bfloat16"]}}
    old = load_config(config_file(tmp_path, base))
    moved = {
        "serve": {
            **base["serve"],
            **{"python": "/other/python", "replicas": 2, "startup_timeout": 60, "max_restarts": 0, "order": "in_turn"},
        }
    }
    assert differing_settings(old, load_config(config_file(tmp_path, moved))) == []
    staged = {**base, "rewrite": {"serve": {"python": "/other/python"}}}
    assert differing_settings(old, load_config(config_file(tmp_path, staged))) == []
    other = {"serve": {**base["serve"], "model": "org/n"}}
    assert differing_settings(old, load_config(config_file(tmp_path, other))) != []


def test_rescoring_a_pool_keeps_its_scoring_rule_but_not_its_scorers_server(tmp_path, capsys):
    """Humpback's next round scores with the next model: a curate-first run over an earlier output takes how the
    pool was scored (`run/inputs.py`), not the model the earlier round served for it."""
    earlier = tmp_path / "round1"
    earlier.mkdir()
    round1 = {"curate": {"score_mode": "expected", "serve": {"engine": "vllm", "model": "org/m0"}}}
    dump_config(load_config(config_file(tmp_path, round1)), earlier / RUN_CONFIG_FILE)
    overrides = {"corpus.path": str(earlier), "stages": ["curate"]}
    config = scoring_rule_of_the_pool(load_config(None, overrides), overrides)
    assert config.curate.score_mode == "expected" and config.curate.serve is None


def test_the_embedded_server_takes_only_the_stages_without_endpoints(tmp_path):
    """A stage bft serves itself (or one given its own endpoint) keeps its model when the embedded server
    starts for the others: asking its server for SmolLM2 would be refused."""
    config = load_config(config_file(tmp_path, {"rewrite": {"endpoints": ["http://127.0.0.1:9"], "model": None}}))
    embedded = SimpleNamespace(url="http://127.0.0.1:8", model_name="smollm2", model_dir=tmp_path / "smollm2")
    use_embedded(config, embedded)
    assert config.endpoints == [embedded.url]
    assert [config.stage(name).model for name in ("backtranslate", "curate", "rewrite")] == ["smollm2", "smollm2", None]


def test_servers_die_with_bft_when_bft_is_killed_mid_run(tmp_path, stub_sglang, monkeypatch):
    """SIGKILL leaves bft no chance to stop anything: the parent-death signal reaches each replica's
    process-group keeper, which ends its group."""
    monkeypatch.setenv(engine_stub.SLOW_REPLIES, "30")  # the run is still waiting for replies when killed
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
    command += ["--limit", "2", "--no-progress", "--serve", "sglang", "--serve-model", "org/backward"]
    bft_process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for line in bft_process.stderr:
            if " is ready at " in line:
                break
        else:
            pytest.fail(f"bft ended (code {bft_process.wait()}) before its server was ready")
        log = out / ".bft" / "servers" / "org-backward-0.log"
        replica = pid_in(log)
        assert not gone(replica)
        bft_process.kill()
        assert bft_process.wait(timeout=60) == -signal.SIGKILL
    finally:
        bft_process.kill()
        bft_process.stderr.close()
    deadline = time.monotonic() + 60
    while not gone(replica):
        assert time.monotonic() < deadline, f"the replica (pid {replica}) outlived bft's SIGKILL by a minute"
        time.sleep(0.1)
    assert not (out / "stats.json").exists()  # (killed mid-run, not after it)
