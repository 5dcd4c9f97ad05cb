"""`bft serve`: serve a trained model folder with `transformers serve`, for the next `bft generate` round.

    bft serve runs/m1 [--port 8080] [--host 0.0.0.0]
    bft generate round1 --out round2 --stages curate --endpoint http://127.0.0.1:8080 --model runs/m1  # another shell

Humpback's loop needs each new model to score the pool again: train M_1 (`bft train curated`), serve it,
re-score with `bft generate --stages curate`. A LoRA folder from `bft train` is served through its
merged copy (`merged/`, written at the end of training; made here if missing). The server runs until
Ctrl-C; it answers OpenAI-style `/v1/chat/completions` and `/v1/completions`, which `bft generate` uses.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from bft.generation.endpoints.embedded import EmbeddedServer
from bft.generation.endpoints.processes import PortInUseError
from bft.generation.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="A model folder (from `bft train`, or any transformers checkpoint)")
    parser.add_argument("--port", type=int, default=8080, help="Port to listen on (default: 8080; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default: 127.0.0.1)")
    parser.add_argument("--log", help="Write the server's own log to this file")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="Seconds to wait for the model to load")
    parser.add_argument(
        "--cache-tokens",
        type=int,
        default=EmbeddedServer.cache_tokens,
        help="KV cache the server reserves, in tokens (default: %(default)s; requests beyond it wait). "
        "Unbounded, `transformers serve` takes about 60%% of the machine's RAM.",
    )


def servable_dir(model_dir: Path) -> Path:
    """The folder to hand to `transformers serve`: the model itself, or a LoRA adapter's merged copy."""
    if not model_dir.is_dir():
        raise ConfigError(f"{model_dir}: no such model folder")
    if (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").is_file():
        return model_dir
    if not (model_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{model_dir} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json)")
    merged = model_dir / "merged"
    if not (merged / "config.json").is_file():
        print(f"bft serve: merging the LoRA adapter of {model_dir} into its base model -> {merged}")
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoTokenizer

        model = AutoPeftModelForCausalLM.from_pretrained(model_dir).merge_and_unload()
        model.save_pretrained(merged)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(merged)
    return merged


def run(args: argparse.Namespace) -> int:
    folder = servable_dir(Path(args.model_dir)).resolve()
    server = EmbeddedServer(
        folder,
        port=args.port,
        host=args.host,
        startup_timeout=args.startup_timeout,
        log_path=args.log,
        cache_tokens=args.cache_tokens,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
    except PortInUseError as error:
        raise ConfigError(f"{error} with --port N (--port 0 picks a free one)") from None
    try:
        print(f"bft serve: {folder} at {server.url} (model name: {server.model_name})", flush=True)
        print(
            f"  e.g. bft generate OUT --out NEXT --stages curate --endpoint {server.url} --model {server.model_name}",
            flush=True,
        )
        try:
            while not stop.is_set() and server.process.poll() is None:
                stop.wait(1.0)
        except KeyboardInterrupt:
            pass
        died = server.process.poll()
    finally:
        server.stop()
    if died not in (None, 0) and not stop.is_set():
        print(f"bft serve: the server exited with code {died}" + (f"; see {args.log}" if args.log else ""))
        return 1
    print("bft serve: stopped")
    return 0
