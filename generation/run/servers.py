"""The model servers a run starts itself (`serve:`, `bft generate --serve vllm --serve-model M`), on this machine.

Before the run each stage's serve settings are resolved (`served_stages`: the stage's own `serve` over the
run's, for stages that name no endpoints of their own); stages whose settings come out equal share one
`ServeSpec`, and so the same servers. The visible GPUs (`visible_gpus`: `CUDA_VISIBLE_DEVICES`, else
`nvidia-smi -L`) are shared out (`place_replicas`): a spec with `replicas` set takes that many groups of the
GPUs one replica needs (the product of the parallel sizes in its arguments, `engines.gpus_per_replica`);
the others share the rest equally, one replica per group. Each replica sees only its group
(`CUDA_VISIBLE_DEVICES`); with no GPU each spec runs `replicas` (default one) on the CPU.

`RunServers` starts every replica at once, waits until each generates, points its stages at them (their
`endpoints`; the served name is then the model they ask for, from `/v1/models`), and stops them all when the
run ends, however it ends (an error, Ctrl-C; SIGKILL by the parent-death signal, `endpoints/processes.py`).
Each replica's log is `OUT/.bft/servers/NAME-N.log`; `facts()` is the `servers` entry of `stats.json` (engine,
version, model, served name, Python, arguments, stages, and per replica its URL, GPUs, start-up seconds,
restarts and log).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bft.generation.config import ServeConfig
from bft.generation.endpoints.engines import ENGINES, EngineServer, gpus_per_replica, split_args
from bft.generation.errors import ConfigError
from bft.generation.layout import servers_dir

DEFAULT_STARTUP_TIMEOUT = 900.0  # seconds: a 70B model's weights from a network disk take minutes


@dataclass(frozen=True)
class ServeSpec:
    """One server's settings, resolved: stages with equal specs share its replicas."""

    engine: str
    model: str
    served_name: str
    python: str
    args: tuple[str, ...]
    replicas: int | None
    startup_timeout: float

    @property
    def gpus_per_replica(self) -> int:
        return gpus_per_replica(ENGINES[self.engine], list(self.args))


def served_name_of(model: str) -> str:
    """The name a model is served under by default: a local folder's name, else the Hub id as given."""
    path = Path(model).expanduser()
    return path.name if path.exists() else model


def resolve(run: ServeConfig, stage: ServeConfig | None, where: str) -> ServeSpec | None:
    """A stage's serve settings: its own keys over the run's; None when no engine is named."""
    own = stage or ServeConfig()

    def pick(key: str):
        value = getattr(own, key)
        return value if value not in (None, "", []) else getattr(run, key)

    engine = pick("engine")
    if engine is None:
        if stage is not None and any(getattr(stage, key) not in (None, "", []) for key in ("model", "args", "name")):
            raise ConfigError(f"{where}: serve settings but no serve.engine (vllm or sglang)")
        return None
    model = pick("model")
    if not model:
        raise ConfigError(f"{where}: serve.engine {engine} needs serve.model (a local folder or a Hub id)")
    if Path(model).expanduser().exists():  # a local folder by its absolute path: the server reports it as `root`,
        model = str(Path(model).expanduser().resolve())  # which keys the request cache by the folder's files
    args = tuple(pick("args"))
    check_args(args, where)
    replicas, startup_timeout = pick("replicas"), pick("startup_timeout")
    if replicas is not None and replicas < 1:
        raise ConfigError(f"{where}: serve.replicas is {replicas}: at least 1 (unset: one per GPU group)")
    if startup_timeout is not None and startup_timeout <= 0:
        raise ConfigError(f"{where}: serve.startup_timeout is {startup_timeout}: seconds, more than 0")
    return ServeSpec(
        engine=engine,
        model=model,
        served_name=pick("name") or served_name_of(model),
        python=pick("python") or sys.executable,
        args=args,
        replicas=replicas,
        startup_timeout=startup_timeout or DEFAULT_STARTUP_TIMEOUT,
    )


# engine flags bft sets itself (where it listens, what it serves), and flags whose values are secrets, which
# would be written into run_config.yaml, stats.json and a built dataset's files
OWN_FLAGS = ("--host", "--port", "--model", "--model-path", "--served-model-name")
SECRET_FLAG_RE = re.compile(r"^--[\w-]*(api[-_]?key|token|secret|password)", re.IGNORECASE)


def check_args(args: tuple[str, ...], where: str) -> None:
    """Refuse engine arguments bft sets itself or that carry a secret (named with what to do instead)."""
    for word in split_args(args):
        flag = word.split("=", 1)[0]
        if flag in OWN_FLAGS or flag.replace("_", "-") in OWN_FLAGS:
            raise ConfigError(
                f"{where}: serve.args sets {flag}, which bft sets itself (serve.model, serve.name; the host and "
                "port are its own): leave it out"
            )
        if SECRET_FLAG_RE.match(flag):
            raise ConfigError(
                f"{where}: serve.args has {flag}: a secret in the arguments would be written into run_config.yaml "
                "and stats.json; give it in the environment instead (e.g. HF_TOKEN for the Hub)"
            )


def served_stages(config) -> dict[str, ServeSpec]:
    """The run's stages that bft serves, with their specs (equal specs: the same servers). A stage's own
    endpoints win over the run's serve; a stage with both its own endpoints and its own serve, a run with
    both endpoints and serve, a run serve that no stage takes, two different servers under one name, and a
    Ray run (its actors reach only their own machine's 127.0.0.1) are refused."""
    if config.serve.engine and config.endpoints:
        raise ConfigError("give endpoints (--endpoint) or serve (--serve), not both")
    specs: dict[str, ServeSpec] = {}
    for name in config.stages:
        stage = config.stage(name)
        if stage.endpoints:
            if stage.serve is not None and stage.serve.engine:
                raise ConfigError(f"{name}: give {name}.endpoints or {name}.serve, not both")
            continue
        spec = resolve(config.serve, stage.serve, name)
        if spec is not None:
            specs[name] = spec
    if config.serve.engine and not specs:
        raise ConfigError(
            f"serve.engine {config.serve.engine}: every stage has its own endpoints, so no stage would be served; "
            "drop the stages' endpoints (--serve on the command line does) or the serve settings"
        )
    named: dict[str, ServeSpec] = {}
    for spec in specs.values():
        other = named.setdefault(spec.served_name, spec)
        if other != spec:
            raise ConfigError(
                f"two different servers would both be named {spec.served_name!r} ({other.model} and {spec.model}, "
                "or other settings): give one of them serve.name"
            )
    if specs and config.executor == "ray":
        raise ConfigError(
            "serve with --executor ray is not supported yet: the servers listen on this machine's 127.0.0.1, "
            "which the Ray actors on other machines cannot reach; start them yourself and give --endpoint"
        )
    return specs


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` names them: that variable's list when set (empty:
    none), else one per line of `nvidia-smi -L`, else none."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [item.strip() for item in listed.split(",") if item.strip() and item.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        lines = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(line for line in lines if line.startswith("GPU "))]


def place_replicas(specs: list[ServeSpec], gpus: list[str]) -> dict[ServeSpec, list[str | None]]:
    """Each spec's replicas, as the `CUDA_VISIBLE_DEVICES` each one gets (None: on the CPU, no GPU visible).

    Specs with `replicas` set take their groups first, in order; the others share the GPUs left equally,
    as many replicas each as whole groups fit in its share. Too few GPUs is a `ConfigError` naming the need.
    """
    if not gpus:
        return {spec: [None] * (spec.replicas or 1) for spec in specs}
    free = list(gpus)
    placed: dict[ServeSpec, list[str | None]] = {}

    def take(spec: ServeSpec, count: int) -> None:
        size = spec.gpus_per_replica
        placed[spec] = []
        for _ in range(count):
            group, free[:] = free[:size], free[size:]
            placed[spec].append(",".join(group))

    for spec in (s for s in specs if s.replicas):
        if spec.replicas * spec.gpus_per_replica > len(free):
            raise ConfigError(
                f"serve {spec.served_name}: {spec.replicas} replicas of {spec.gpus_per_replica} GPUs need "
                f"{spec.replicas * spec.gpus_per_replica}; {len(free)} of {len(gpus)} visible GPUs are left"
            )
        take(spec, spec.replicas)
    auto = [s for s in specs if not s.replicas]
    share = len(free) // len(auto) if auto else 0
    for spec in auto:
        count = share // spec.gpus_per_replica
        if count < 1:
            raise ConfigError(
                f"serve {spec.served_name}: a replica needs {spec.gpus_per_replica} GPUs and its share is {share} "
                f"of {len(gpus)} visible ({len(auto)} servers share them): lower the parallel sizes, set replicas, "
                "or serve the models in turn (--stages)"
            )
        take(spec, count)
    return placed


def log_name(served_name: str) -> str:
    """A served name as a file name (`meta-llama/Llama-3.1-70B` -> `meta-llama-Llama-3.1-70B`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", served_name).strip("-") or "server"


class RunServers:
    """The servers of one run: started on entering (all at once, then waited for), stopped on leaving."""

    def __init__(self, config, out: Path, log=print, gpus: list[str] | None = None):
        self.config = config
        self.stages = served_stages(config)
        self.log = log
        specs = list(dict.fromkeys(self.stages.values()))
        self.placement = place_replicas(specs, visible_gpus() if gpus is None else gpus)
        self.replicas: dict[ServeSpec, list[EngineServer]] = {}
        for spec, groups in self.placement.items():
            self.replicas[spec] = [
                EngineServer(
                    ENGINES[spec.engine],
                    Path(spec.python),
                    spec.model,
                    spec.served_name,
                    list(spec.args),
                    env={"CUDA_VISIBLE_DEVICES": group} if group is not None else {},
                    log_path=servers_dir(out) / f"{log_name(spec.served_name)}-{i}.log",
                    startup_timeout=spec.startup_timeout,
                )
                for i, group in enumerate(groups)
            ]
        self.versions: dict[ServeSpec, str | None] = {}

    def __enter__(self) -> RunServers:
        try:
            for servers in self.replicas.values():
                for server in servers:
                    where = f"GPUs {server.env['CUDA_VISIBLE_DEVICES']}" if server.env else "the CPU"
                    self.log(f"bft generate: starting {server.what} on {where} (log: {server.log_path})")
                    server.begin()
            for spec, servers in self.replicas.items():
                for server in servers:
                    server.wait()
                    self.log(f"bft generate: {server.what} is ready at {server.url} ({server.started_in:.0f} s)")
                self.versions[spec] = servers[0].version()
            self.point_stages()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every replica; one that fails to stop does not keep the others running."""
        failures = []
        for servers in self.replicas.values():
            for server in servers:
                try:
                    server.stop()
                except Exception as error:  # (raised once the others are stopped)
                    failures.append(error)
        if failures:
            raise failures[0]

    def point_stages(self) -> None:
        """Each served stage sends to its spec's replicas and asks for the model they serve."""
        for name, spec in self.stages.items():
            stage = self.config.stage(name)
            stage.endpoints = [server.url for server in self.replicas[spec]]
            stage.model = stage.model or spec.served_name
            if stage.mode == "raw" and stage.raw_format == "chat_template" and not stage.tokenizer:
                stage.tokenizer = spec.model  # the served model's own tokenizer

    def facts(self) -> dict[str, dict]:
        """The `servers` entry of `stats.json`: per server, what it ran and how each replica started."""
        out = Path(self.config.out)
        facts = {}
        for spec, servers in self.replicas.items():
            facts[spec.served_name] = {
                "engine": spec.engine,
                "version": self.versions.get(spec),
                "model": spec.model,
                "python": spec.python,
                "args": list(spec.args),
                "served_name": spec.served_name,
                "stages": [name for name, s in self.stages.items() if s == spec],
                "replicas": [
                    {
                        "url": server.url,
                        "gpus": server.env.get("CUDA_VISIBLE_DEVICES"),
                        "startup_seconds": round(server.started_in, 1) if server.started_in is not None else None,
                        "restarts": 0,
                        "log": str(server.log_path.relative_to(out)) if server.log_path else None,
                    }
                    for server in servers
                ],
            }
        return facts
