"""A stand-in SGLang that can hold its replies, for killing a replica while requests are in flight.

Started like `tests/servers/engine_stub.py`, by SGLang's own command line (`install` writes the `sglang` package
whose `launch_server` runs `main`), and speaking SGLang's protocol through `tests/servers/tgi.py`. When the file
that `HOLD_REPLIES` names in its environment exists as it starts, it writes `held a request` to its output (the
replica's log) for every generation request and holds the reply for an hour: a test then knows, from the log
alone, that requests are in flight, removes the file and kills the replica; the restart answers at once (a file,
not the variable itself, so that a replica started by a Ray worker, whose environment the test cannot change,
is told too). One launched with `NEVER_READY` set never becomes ready (`/health_generate` says 503 for good).
With `FAIL_PROMPTS_WITH` set, every generation request whose prompt holds that text is answered HTTP 500. With
`DIE_WHEN_RESTARTED` naming a file, the first start writes it and every later start (a restart) exits at once
with `RESTART_EXIT_CODE`, as an engine that cannot start again would.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

from tests.servers import engine_stub

HOLD_REPLIES = "BFT_STUB_HOLD_REPLIES"
NEVER_READY = "BFT_STUB_NEVER_READY"
FAIL_PROMPTS_WITH = "BFT_STUB_FAIL_PROMPTS_WITH"
DIE_WHEN_RESTARTED = "BFT_STUB_DIE_WHEN_RESTARTED"
RESTART_EXIT_CODE = 3
HELD = "held a request"
STARTING_SECONDS = 0.5  # `/health_generate` says 503 this long, as SGLang's does while it starts


def install(folder: Path) -> Path:
    """Write the `sglang.launch_server` shim running this stand-in into `folder`; return `folder`."""
    return engine_stub.install(folder, "tests.generation.run.held_engine")


def pids_in(log: Path) -> list[int]:
    """The process ids the stand-in wrote into its log, one a start."""
    return [int(line[4:]) for line in log.read_text().splitlines() if line.startswith("pid ")]


def gone(pid: int) -> bool:
    """Whether process `pid` no longer runs (a zombie left for its parent to reap counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--model-path", "--served-model-name", "--host"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    marker = os.environ.get(DIE_WHEN_RESTARTED)
    if marker:
        if Path(marker).exists():
            print(f"started again as {os.getpid()}: exiting with code {RESTART_EXIT_CODE}", flush=True)
            raise SystemExit(RESTART_EXIT_CODE)
        Path(marker).touch()
    from tests.servers.models import Fault, paper_model
    from tests.servers.tgi import TGITestServer

    failing = os.environ.get(FAIL_PROMPTS_WITH)

    def answer(request):
        return Fault(500) if failing and failing in request.prompt else paper_model(request)

    def held(request):
        print(HELD, flush=True)
        reply = paper_model(request)
        reply.delay = 3600.0
        return reply

    server = TGITestServer(answer, model_id=args.served_model_name, flavor="sglang", port=0)
    server.httpd.server_close()  # listen where SGLang is told to (`--host`: a Ray node's address), not 127.0.0.1
    server.httpd = type(server.httpd)((args.host, args.port), server.httpd.RequestHandlerClass)
    server.thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    with server:
        server.starting = True
        print(f"pid {os.getpid()}", flush=True)
        if os.environ.get(HOLD_REPLIES) and Path(os.environ[HOLD_REPLIES]).exists():
            server.script = held
        time.sleep(STARTING_SECONDS)
        server.starting = bool(os.environ.get(NEVER_READY))
        while True:
            time.sleep(1)
