"""The model servers of a `--executor ray` run (`serve:` with `--executor ray`): each replica in a Ray actor.

    bft generate dolma/ --out /shared/out --executor ray --ray-address auto \
        --serve vllm --serve-model meta-llama/Llama-3.1-70B-Instruct --serve-arg="-tp 4"

Each server's replicas are placed by Ray: one placement group per server, one bundle per replica holding the
GPUs a replica takes (the product of its parallel sizes, `engines.gpus_per_replica`), or one CPU when the
cluster has no GPU, spread over the nodes (`SPREAD`). A bundle's actor (`ReplicaActor`) starts the engine on
its node (Ray sets its `CUDA_VISIBLE_DEVICES`), listening on the node's address so that the block runners on
other nodes reach it, waits until it generates, and reports its URL (node address and port); the stages'
endpoints are those URLs. Its restarts are the actor's own (`servers.Restarter`: the same port and arguments,
at most `serve.max_restarts`), and the block runners retry the documents it was sent meanwhile; the run's
end stops every replica, then the actors and their placement groups. Ray waits for the bundles to be placed
at most `serve.startup_timeout` (a bundle no node holds is a `ConfigError` naming it).

The block runners do not see an actor's restarts: the registry of the servers bft started
(`processes.RUNNING`, which tells a restarting replica from a dead one) lives in the actor's process. A block
runner knows a restarting replica only by its failed requests: the endpoint pool takes it out of rotation by
its silence rule and waits up to `endpoints_down_timeout` for it, and the documents it was sent are retried
there, spending their retries; once its restarts are spent, the run stops when that wait ends rather than at
once.

How many replicas: `serve.replicas`, else as many as the cluster's GPUs hold, shared between the servers as
on one machine (`servers.place_replicas`), or one without GPUs. Each log is `OUT/.bft/servers/NAME-N.log`,
written by its node: the output folder is one every node mounts, as the Ray executor needs anyway.
Ray is started here when no cluster runs yet (`ray_executor.connect`) and shut down when the servers are.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from bft.generation.endpoints.engines import ENGINES, EngineServer
from bft.generation.errors import ConfigError
from bft.generation.layout import servers_dir
from bft.generation.run.ray_executor import bft_error_in, connect
from bft.generation.run.servers import (
    Restarter,
    ServeSpec,
    log_name,
    place_replicas,
    point_stages,
    replica_facts,
    served_stages,
    server_facts,
    timing,
)

CPUS_WITHOUT_GPU = 1.0  # what a replica reserves on a cluster without GPUs (the engine's own CPU build)


def wait_placed(group, bundle: dict, count: int, spec: ServeSpec) -> None:
    """Wait until Ray has reserved a placement group's bundles, at most the server's start-up timeout: a bundle
    no node can hold (`-tp 4` on nodes of 2 GPUs) would otherwise be waited for forever."""
    import ray

    try:
        ray.get(group.ready(), timeout=spec.startup_timeout)
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(
            f"serve {spec.served_name}: Ray could not place {count} replica(s) of {bundle} each in "
            f"{spec.startup_timeout:.0f} s (serve.startup_timeout; the cluster has {ray.cluster_resources()}): "
            "no node may hold one replica's resources; lower the parallel sizes or serve.replicas"
        ) from None


class ReplicaActor:
    """One replica of one server, in a Ray actor on the node Ray placed it: started, watched, stopped."""

    def __init__(self, spec: ServeSpec, log_path: str, out: str):
        import ray

        self.out = Path(out)
        self.server = EngineServer(
            ENGINES[spec.engine],
            Path(spec.python),
            spec.model,
            spec.served_name,
            list(spec.args),
            log_path=Path(log_path),
            startup_timeout=spec.startup_timeout,
            max_restarts=spec.max_restarts,
            host=ray.util.get_node_ip_address(),
        )
        self.gpus = ",".join(str(gpu) for gpu in ray.get_gpu_ids()) or None
        self.restarter = Restarter([self.server], log=lambda line: print(line, flush=True))
        self.told: dict = {}

    def start(self) -> str:
        """Start the engine, wait until it generates, watch it; its URL (the node's address and its port)."""
        self.server.start()
        self.told = self.server.facts()  # (asked now: the facts are taken once it is stopped)
        self.restarter.start()
        return self.server.url

    def facts(self) -> dict:
        """What the server said of itself when it started, and this replica's entry of `stats.json`."""
        return {"told": self.told, "replica": replica_facts(self.server, self.out, self.gpus)}

    def stop(self) -> None:
        self.restarter.halt()
        self.server.stop()
        self.restarter.join()


class RayServers:
    """The servers of a Ray run: placed and started on entering, stopped (actors, placement groups) on leaving."""

    def __init__(self, config, out: Path, log=print):
        self.config = config
        self.out = Path(out).resolve()
        self.stages = served_stages(config)
        self.log = log
        self.specs = list(dict.fromkeys(self.stages.values()))
        self.actors: dict[ServeSpec, list] = {}
        self.groups: list = []
        self.urls: dict[ServeSpec, list[str]] = {}
        self.final: dict[str, dict] | None = None
        self.started_ray = False
        self.entered = self.ready = self.left = None

    def __enter__(self) -> RayServers:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.entered = time.monotonic()
        self.started_ray = connect(self.config)
        try:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            counts = place_replicas(self.specs, [str(i) for i in range(gpus)])
            for spec, groups in counts.items():
                bundle = {"GPU": spec.gpus_per_replica} if gpus else {"CPU": CPUS_WITHOUT_GPU}
                group = placement_group([bundle] * len(groups), strategy="SPREAD")
                self.groups.append(group)
                wait_placed(group, bundle, len(groups), spec)
                remote = ray.remote(ReplicaActor)
                self.actors[spec] = [
                    remote.options(
                        num_gpus=bundle.get("GPU", 0),
                        num_cpus=bundle.get("CPU", 0),
                        max_concurrency=2,  # (`facts` and `stop` answer while `start` waits)
                        scheduling_strategy=PlacementGroupSchedulingStrategy(
                            placement_group=group, placement_group_bundle_index=index
                        ),
                    ).remote(
                        spec,
                        str(servers_dir(self.out) / f"{log_name(spec.served_name)}-{index}.log"),
                        str(self.out),
                    )
                    for index in range(len(groups))
                ]
                self.log(
                    f"bft generate: starting {len(groups)} replica(s) of {spec.served_name} on the Ray cluster "
                    f"(each {bundle}; logs: {servers_dir(self.out)})"
                )
            for spec, actors in self.actors.items():
                self.urls[spec] = ray.get([actor.start.remote() for actor in actors])
                self.log(f"bft generate: {spec.served_name} is ready at {', '.join(self.urls[spec])}")
            point_stages(self.config, self.stages, self.urls)
        except BaseException as error:
            self.stop()
            found = bft_error_in(error)  # (Ray wraps an actor's error in its own, with its traceback)
            if found is not None and found is not error:
                raise found from None
            raise
        self.ready = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every replica, take their facts, then stop their actors and the placement groups; Ray too when it
        was started here."""
        import ray
        from ray.util.placement_group import remove_placement_group

        try:
            for actors in self.actors.values():
                for actor in actors:
                    with contextlib.suppress(ray.exceptions.RayError):  # (a dead actor's server died with it)
                        ray.get(actor.stop.remote())
            if self.left is None:
                self.left = time.monotonic()
            if self.final is None and self.urls:  # (taken once stopped: a restart under way has its outcome)
                with contextlib.suppress(ray.exceptions.RayError):  # (an actor lost with its node: no facts)
                    self.final = self.gather()
            for actors in self.actors.values():
                for actor in actors:
                    ray.kill(actor)
            for group in self.groups:
                remove_placement_group(group)
        finally:
            self.actors, self.groups = {}, []
            if self.left is None:
                self.left = time.monotonic()
            if self.started_ray:
                ray.shutdown()
                self.started_ray = False

    def gather(self) -> dict[str, dict]:
        """Each server's `stats.json` entry from its actors."""
        import ray

        facts = {}
        for spec, actors in self.actors.items():
            answers = ray.get([actor.facts.remote() for actor in actors])
            facts[spec.served_name] = server_facts(
                spec,
                [name for name, s in self.stages.items() if s == spec],
                answers[0]["told"],
                [answer["replica"] for answer in answers],
                timing(self.entered, self.ready, self.left),
            )
        return facts

    def facts(self) -> dict[str, dict]:
        """The `servers` entry of `stats.json`, as the replicas said it when the run ended."""
        return self.final if self.final is not None else {}
