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
version, model and its revision where the arguments or the server say it, served name, Python, arguments,
stages, GPU hours, how long its start-up and its work took, and per replica its URL, GPUs, start-up seconds,
restarts with how each went, serving seconds and log).

A replica that exits mid-run is restarted (`serve.max_restarts`, default 3): a thread watches them, and one
that has exited is launched again on the same port with the same arguments, from a thread of its own (two
replicas restart side by side; a relaunch that fails to begin, its port still taken, waits `RELAUNCH_PAUSE`
before the next; an unexpected error gives the replica up naming it). It stays registered as restarting
(`processes.RUNNING`) while what its exit left is ended and it starts again. Meanwhile its exit is not
reported to the engine (`processes.server_exit`), so the requests it was sent fail as a dead server's do and
are retried: the endpoint pool takes it out of rotation at its first failure and back once it answers
(`endpoints/pool.py`), and waits for a restart under way without spending `endpoints_down_timeout` (which is
raised to the start-up timeout when shorter). Once its restarts are spent (or a restart fails and none is
left), it is given up: the stage goes on with its other replicas, and when none is left the run stops at
once naming the exit and the log; the journals keep what was finished, so the same command resumes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bft.generation.config import ServeConfig
from bft.generation.endpoints.engines import ENGINES, EngineServer, gpus_per_replica, revision_arg, split_args
from bft.generation.endpoints.processes import forget, give_up
from bft.generation.errors import ConfigError
from bft.generation.layout import servers_dir

DEFAULT_STARTUP_TIMEOUT = 900.0  # seconds: a 70B model's weights from a network disk take minutes
DEFAULT_MAX_RESTARTS = 3  # restarts of one replica in one run: a crash now and then, not a server that cannot run
WATCH_INTERVAL = 0.2  # seconds between looks at the replicas
RELAUNCH_PAUSE = 3.0  # seconds before the next restart after a relaunch failed to begin (its port still taken)


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
    max_restarts: int = DEFAULT_MAX_RESTARTS

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
    replicas, startup_timeout, max_restarts = pick("replicas"), pick("startup_timeout"), pick("max_restarts")
    if stage is not None and stage.order is not None:
        raise ConfigError(f"{where}: serve.order is a run setting (the run's serve), not a stage's")
    if max_restarts is not None and max_restarts < 0:
        raise ConfigError(f"{where}: serve.max_restarts is {max_restarts}: 0 or more (unset: {DEFAULT_MAX_RESTARTS})")
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
        max_restarts=DEFAULT_MAX_RESTARTS if max_restarts is None else max_restarts,
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
    Ray run serving in turn are refused."""
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
    if specs and config.executor == "ray" and config.serve.order == "in_turn":
        raise ConfigError(
            "serve.order in_turn with --executor ray is not supported: serve the models in turn with the local "
            "executor, or all at once on the cluster"
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
    """The servers of one run (or of the stages named in `only`): started on entering (all at once, then waited
    for), watched and restarted while the run goes on, stopped on leaving. `served` is `served_stages(config)`
    when the caller resolved it before any stage was pointed at a server (serving in turn)."""

    def __init__(
        self,
        config,
        out: Path,
        log=print,
        gpus: list[str] | None = None,
        only: list[str] | None = None,
        served: dict[str, ServeSpec] | None = None,
    ):
        self.config = config
        served = served_stages(config) if served is None else served
        self.stages = {name: spec for name, spec in served.items() if only is None or name in only}
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
                    max_restarts=spec.max_restarts,
                )
                for i, group in enumerate(groups)
            ]
        self.told: dict[ServeSpec, dict[str, str | None]] = {}  # what each server says of itself
        self.entered: float | None = None
        self.ready: float | None = None  # when every replica generated
        self.left: float | None = None
        self.restarter = Restarter([server for servers in self.replicas.values() for server in servers], log)

    def __enter__(self) -> RunServers:
        self.entered = time.monotonic()
        try:
            for servers in self.replicas.values():
                for server in servers:
                    self.log(f"bft generate: starting {server.what} on {where(server)} (log: {server.log_path})")
                    server.begin()
            for spec, servers in self.replicas.items():
                for server in servers:
                    server.wait()
                    self.log(f"bft generate: {server.what} is ready at {server.url} ({server.started_in:.0f} s)")
                self.told[spec] = servers[0].facts()
            self.point_stages()
        except BaseException:
            self.stop()
            raise
        self.ready = time.monotonic()
        self.restarter.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop watching, then stop every replica; one that fails to stop does not keep the others running."""
        self.restarter.halt()  # no relaunch begins after this; one waiting to be ready fails as its replica stops
        failures = []
        for servers in self.replicas.values():
            for server in servers:
                try:
                    server.stop()
                except Exception as error:  # (raised once the others are stopped)
                    failures.append(error)
        self.restarter.join()
        if self.left is None:
            self.left = time.monotonic()
            for servers in self.replicas.values():
                for server in servers:
                    self.log(f"bft generate: stopped {server.what} at {server.url}")
        if failures:
            raise failures[0]

    # -- the stages and the facts -------------------------------------------------------------------------

    def point_stages(self) -> None:
        point_stages(
            self.config, self.stages, {spec: [s.url for s in servers] for spec, servers in self.replicas.items()}
        )

    def timing(self) -> dict:
        """How long these servers took to start (launch to every replica ready) and then served the run."""
        return timing(self.entered, self.ready, self.left)

    def facts(self) -> dict[str, dict]:
        """The `servers` entry of `stats.json` (`server_facts`)."""
        out = Path(self.config.out)
        return {
            spec.served_name: server_facts(
                spec,
                [name for name, s in self.stages.items() if s == spec],
                self.told.get(spec, {}),
                [replica_facts(server, out) for server in servers],
                self.timing(),
            )
            for spec, servers in self.replicas.items()
        }


def point_stages(config, stages: dict[str, ServeSpec], urls: dict[ServeSpec, list[str]]) -> None:
    """Each served stage sends to its spec's replicas (`urls`) and asks for the model they serve. A stage waits
    for a replica being restarted at least as long as one may take to start. Its `serve` becomes what was started
    for it, so that its endpoints are known as bft's, with their engine arguments (`started_args`)."""
    for name, spec in stages.items():
        stage = config.stage(name)
        stage.endpoints = list(urls[spec])
        stage.serve = replace(  # (its other settings, replicas and restarts, stay the run's)
            stage.serve or config.serve,
            engine=spec.engine,
            model=spec.model,
            name=spec.served_name,
            python=spec.python,
            args=list(spec.args),
            order=None,  # (a run setting, which a stage's serve may not hold)
        )
        stage.model = stage.model or spec.served_name
        if stage.mode == "raw" and stage.raw_format == "chat_template" and not stage.tokenizer:
            stage.tokenizer = spec.model  # the served model's own tokenizer
        if spec.max_restarts and config.endpoints_down_timeout < spec.startup_timeout:
            config.endpoints_down_timeout = spec.startup_timeout


def started_args(stage) -> str | None:
    """The engine arguments of the servers bft started for a stage it pointed at them (`point_stages`), as one
    text ("" for none), for each record's provenance; None for a stage whose endpoints are not bft's."""
    serve = stage.serve
    if serve is None or not serve.engine or not stage.endpoints:
        return None
    return " ".join(serve.args)


def timing(entered: float | None, ready: float | None, left: float | None) -> dict:
    """Start-up seconds (launch to every replica ready) and work seconds (ready to stopped, or now)."""
    now = time.monotonic()
    startup = (ready or now) - entered if entered is not None else None
    work = (left or now) - ready if ready is not None else None
    return {
        "startup_seconds": round(startup, 1) if startup is not None else None,
        "work_seconds": round(work, 1) if work is not None else None,
    }


def server_facts(spec: ServeSpec, stages: list[str], told: dict, replicas: list[dict], timed: dict) -> dict:
    """One server's entry in `stats.json` `servers`: what it ran (engine, its version, the model and its revision
    where the arguments or the server say it, arguments), the stages it served, GPU hours (each replica's GPUs
    times its serving seconds), how long its start-up and work took, and its replicas (`replica_facts`)."""
    gpu_seconds = sum(
        len(replica["gpus"].split(",")) * (replica["serving_seconds"] or 0.0) for replica in replicas if replica["gpus"]
    )
    return {
        "engine": spec.engine,
        "version": told.get("version"),
        "model": spec.model,
        "revision": revision_arg(spec.args) or told.get("revision"),
        "python": spec.python,
        "args": list(spec.args),
        "served_name": spec.served_name,
        "stages": stages,
        "gpu_hours": round(gpu_seconds / 3600, 4),
        "serving": [{"stages": stages, **timed}],
        "replicas": replicas,
    }


def where(server: EngineServer) -> str:
    return f"GPUs {server.env['CUDA_VISIBLE_DEVICES']}" if server.env else "the CPU"


def replica_facts(server: EngineServer, out: Path, gpus: str | None = None) -> dict:
    """One replica's entry in `stats.json`: where it ran (its GPUs: its `CUDA_VISIBLE_DEVICES`, unless given),
    its start-up, its restarts, how long it served and its log."""
    serving = server.serving_seconds()
    return {
        "url": server.url,
        "gpus": gpus if gpus is not None else server.env.get("CUDA_VISIBLE_DEVICES"),
        "startup_seconds": round(server.started_in, 1) if server.started_in is not None else None,
        "restarts": server.restarts,
        "restarted": list(server.restarted),
        "serving_seconds": round(serving, 1) if serving is not None else None,
        "log": str(server.log_path.relative_to(out)) if server.log_path else None,
    }


class Restarter:
    """Restarts the replicas that exit, until `halt` (each at most its `max_restarts` times; `RunServers`
    locally, a Ray replica's actor on its node). A thread watches them; each restart runs in a thread of its own,
    so that a second replica dying while the first one starts again is not kept waiting for it. Their relaunches
    (ending what the exit left, launching again) take turns under one lock, which the run's end takes too. A
    restart's thread lives until `halt`: the replica it launched gets its parent-death signal when the thread
    that started it ends (prctl(2), PR_SET_PDEATHSIG), not only when the run's process does."""

    def __init__(self, servers: list[EngineServer], log=print):
        self.servers = servers
        self.log = log
        self._lock = threading.Lock()  # a relaunch and the run's end do not cross
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._restarts: list[threading.Thread] = []

    def start(self) -> None:
        self._watcher = threading.Thread(target=self.watch, name="bft-servers-watch", daemon=True)
        self._watcher.start()

    def halt(self) -> None:
        """No relaunch begins after this returns (one waiting for its replica fails once the replica is stopped)."""
        with self._lock:
            self._stopping.set()

    def join(self) -> None:
        """Wait for the watcher and the restarts under way (call after `halt` and the replicas' stop)."""
        if self._watcher is not None:
            self._watcher.join()
        for thread in self._restarts:
            thread.join()

    def watch(self) -> None:
        """Start a restart of each replica that exits, until halted."""
        while not self._stopping.wait(WATCH_INTERVAL):
            for server in self.servers:
                if server.gave_up is None and not server.restarting and not server.alive():
                    try:
                        self.restart_in_thread(server)
                    except Exception as error:  # (no thread to be had): the run must not wait for the replica
                        server.restarting = False
                        give_up(server, f"it exited and could not be restarted: {error!r}; its log: {server.log_path}")
                        self.log(f"bft generate: {server.what} at {server.url} is not restarted: {error!r}")

    def restart_in_thread(self, server: EngineServer) -> None:
        """Start `restart(server)` in a thread of its own."""
        server.restarting = True  # (before its thread starts: the next look must not start another)
        thread = threading.Thread(target=self.restart, args=(server,), name=f"bft-restart-{server.url}", daemon=True)
        self._restarts.append(thread)
        thread.start()

    def restart(self, server: EngineServer) -> None:
        """Launch an exited replica again on its port with its arguments, and wait until it generates; try again
        while restarts are left, then give it up (the next failed request stops the run, naming its log).

        Each restart is kept for `stats.json` as how the replica had ended and its start-up seconds, or that it
        did not become ready (the error itself, which may name local paths, goes to the run's output only), or
        that the run ended before it was seen ready (`run_ended_first`: the documents may have been answered by
        then, since the engine sends as soon as it answers). An error the restart did not expect gives the
        replica up with that error rather than leaving it down unreported."""
        how = server.exit_description() or "exited"
        server.restarting = True
        try:
            self._restart(server, how)
        except Exception as error:  # (a bug here: the run must stop naming it, not wait for the replica)
            give_up(server, f"{how}; restarting it failed: {error!r}; its log: {server.log_path}")
            self.log(f"bft generate: {server.what} at {server.url} is not restarted again: {error!r}")
        finally:
            server.restarting = False
            if self._stopping.is_set():  # its stops kept it registered while it restarted: the run has ended
                forget(server)
        self._stopping.wait()  # Linux signals a process when the *thread* that started it ends (PR_SET_PDEATHSIG)

    def _restart(self, server: EngineServer, how: str) -> None:
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                if server.restarts_left <= 0:
                    why = server.ended_for_good(how)
                    give_up(server, why)
                    self.log(f"bft generate: {server.what} at {server.url} is not restarted again: {why}")
                    return
                server.restarts += 1
                self.log(
                    f"bft generate: {server.what} at {server.url} ended ({how}); restarting it "
                    f"(restart {server.restarts} of at most {server.max_restarts}; log: {server.log_path})"
                )
                try:
                    server.stop()  # what the exit left of its group (helpers holding the GPUs); kept registered
                    server.begin()
                    failed = None
                except Exception as error:  # (its port taken meanwhile, its Python gone, its log unwritable)
                    failed = error
            try:
                if failed is not None:
                    raise failed
                seconds = server.wait()
            except Exception as error:
                server.restarts_left -= 1
                if self._stopping.is_set():  # the run ended first (it may have been served all the same)
                    server.restarted.append({"after": how, "ready": False, "run_ended_first": True})
                    return
                server.restarted.append({"after": how, "ready": False})
                self.log(f"bft generate: the restart of {server.what} at {server.url} failed: {error}")
                how = f"its restart failed: {error}"
                if failed is not None and server.restarts_left > 0 and self._stopping.wait(RELAUNCH_PAUSE):
                    return  # (a port still taken is not free a millisecond later: pause, unless the run ends)
                continue
            server.restarts_left -= 1
            server.restarted.append({"after": how, "ready": True, "startup_seconds": round(seconds, 1)})
            self.log(f"bft generate: {server.what} is back at {server.url} ({seconds:.0f} s)")
            return
