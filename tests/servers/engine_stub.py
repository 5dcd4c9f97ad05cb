"""A stand-in SGLang for `bft generate --serve sglang`: started by SGLang's own command line, it speaks SGLang's
protocol (the `sglang` flavor of `tgi.py`), so that bft's starting, placing, waiting for and stopping of servers
is tested in full on a machine without SGLang or a GPU.

`install(folder)` writes a package `sglang` with a `launch_server` module into `folder`; with `folder` and the
repository on `PYTHONPATH`, `python -m sglang.launch_server --model-path M --served-model-name N --host H
--port P ...` runs `main`: it says its process id, arguments and `CUDA_VISIBLE_DEVICES` on its output (the
replica's log), answers `/health_generate` with 503 for `STARTING_SECONDS` as SGLang does while it starts, then
serves `N` until it is stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

STARTING_SECONDS = 1.0
SLOW_REPLIES = "BFT_STUB_SLOW_REPLIES"  # an environment variable: seconds before each reply


def install(folder: Path, module: str = "tests.servers.engine_stub") -> Path:
    """Write the `sglang.launch_server` shim into `folder`, running `module`'s `main`; return `folder`."""
    package = folder / "sglang"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f'"""A stand-in for SGLang ({module})."""\n')
    (package / "launch_server.py").write_text(f"from {module} import main\n\nmain()\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--model-path", "--served-model-name", "--host"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--port", type=int, required=True)
    args, engine_args = parser.parse_known_args()
    from tests.servers.models import slow
    from tests.servers.tgi import TGITestServer

    with TGITestServer(model_id=args.served_model_name, flavor="sglang", port=args.port) as server:
        server.starting = True
        print(f"pid {os.getpid()}", flush=True)
        print(f"argv {sys.argv[1:]}", flush=True)
        print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
        print(f"engine args {engine_args}", flush=True)
        time.sleep(STARTING_SECONDS)
        if os.environ.get(SLOW_REPLIES):  # every reply after that many seconds (a run still going when killed)
            server.script = slow(float(os.environ[SLOW_REPLIES]))
        server.starting = False
        while True:
            time.sleep(1)
