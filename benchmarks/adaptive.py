"""Zero-config throughput: bft with no concurrency flag against what the server can do, on six servers.

    .venv/bin/python benchmarks/adaptive.py            # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/adaptive.py --quick    # smaller corpora, a smoke run

Each scenario runs its simulated server(s) in a child process, then `bft generate` (no
`--max-concurrency`: the endpoints' limits find their own load, `generation/endpoints/limiter.py`) and
`send_everything.py` (every request at once: "what is possible", measured in the same run since these
servers' capacity is not known analytically) in turn against a fresh server each. The figure is the
servers' completion tokens per second over their busy window (first request in to last answer out, the
servers' own clock, so client start-up is left out), bft's over the reference client's; beside it both
whole processes' wall times (start-up included):

- (a) `simulated_vllm.py`: vLLM's scheduler (256 running, a KV-cache budget with recompute preemption,
  unbounded queue, /metrics, no /info);
- (b) `simulated_tgi.py`: TGI's continuous batching (batch 32, 429 above 128 in the system, /info, /metrics);
- (c) a hosted API: the vLLM-like server answering 429 with `Retry-After: 1` above 48 requests in the
  system, no /metrics (bft is not told the cap);
- (d) four vLLM-like replicas at speeds 1, 1, 0.5 and 0.25 (the reference sends to them in turn);
- (e) three stages (backtranslate, curate, rewrite) sharing one vLLM-like endpoint;
- (f) a vLLM-like server whose steps take twice as long 3 s after the first request (another tenant).

Then the fault mix on the TGI-like server (5 % 429, 3 % 503, 2 % connection resets, 1 % garbage
bodies, three seeds): bft's wall time against its own fault-free run, documents lost (none may be), the
retries used; and bft's client CPU per 1,000 requests (a 4-replica run of short answers, less a
one-document run's start-up), peak RSS included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from engine import run_generate, write_corpus  # noqa: E402


class Servers:
    """Simulated servers (`script` with `flags`) in a child process; their URLs and their /stats."""

    def __init__(self, script: str, *flags: str):
        handle, name = tempfile.mkstemp(suffix=".json")
        os.close(handle)
        self.port_file = Path(name)
        self.port_file.unlink()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / script), "--port-file", str(self.port_file), *flags]
        )
        while not self.port_file.exists() or not self.port_file.read_text():
            if self.process.poll() is not None:
                raise RuntimeError(f"{script} did not start")
            time.sleep(0.05)
        time.sleep(0.05)
        self.urls = [f"http://127.0.0.1:{port}" for port in json.loads(self.port_file.read_text())]

    def busy_rate(self) -> dict:
        """All instances together: completion tokens over (last answer - first request)."""
        stats = [json.load(urllib.request.urlopen(url + "/stats")) for url in self.urls]
        tokens = sum(s["completion_tokens"] for s in stats)
        busy = max((s["busy_seconds"] or 0) for s in stats)  # each instance's window; the longest one bounds the run
        return {"tokens": tokens, "busy_seconds": busy, "rate": tokens / busy if busy else 0.0, "servers": stats}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()
        self.port_file.unlink(missing_ok=True)


def run_bft(corpus: Path, out: Path, urls: list[str], stages: str) -> dict:
    """`bft generate` with no concurrency flag (`engine.run_generate`): stats, wall, CPU and peak RSS."""
    return run_generate(corpus, out, urls, stages=stages)


def run_reference(corpus: Path, urls: list[str], stages: str) -> dict:
    command = [sys.executable, str(HERE / "send_everything.py"), str(corpus), "--stages", stages,
               *(a for url in urls for a in ("--endpoint", url))]  # fmt: skip
    started = time.monotonic()
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    result["process_wall_seconds"] = time.monotonic() - started  # start-up included, as bft's
    return result


def lost(stats: dict, documents: int, stages: str) -> int:
    """Documents that did not come out of the last stage kept (every simulated answer parses)."""
    return documents - stats[stages.split(",")[-1]]["kept"]


def scenario(work: Path, label: str, script: str, flags: list[str], documents: int, stages: str = "backtranslate"):
    corpus = write_corpus(work / f"{label}.jsonl", documents, words=300, seed=len(label))
    with Servers(script, *flags) as servers:
        bft = run_bft(corpus, work / f"out-{label}", servers.urls, stages)
        mine = servers.busy_rate()
    with Servers(script, *flags) as servers:
        reference = run_reference(corpus, servers.urls, stages)
        theirs = servers.busy_rate()
    stats = bft["run_stats"]
    retries = sum(sum(s["retries_by_cause"].values()) for n, s in stats.items() if n in stages.split(","))
    limits = {url: (e["limit_low"], e["limit_high"], e["limit_settled"], e["steered_by"])
              for url, e in stats.get("endpoints", {}).items()}  # fmt: skip
    return {
        "label": label,
        "ratio": mine["rate"] / theirs["rate"] if theirs["rate"] else float("nan"),
        "bft_rate": mine["rate"],
        "reference_rate": theirs["rate"],
        "bft_busy": mine["busy_seconds"],
        "reference_busy": theirs["busy_seconds"],
        "lost": lost(stats, documents, stages),
        "retries": retries,
        "reference_retries": reference["retries"],
        "limits": limits,
        "bft": bft,
        "walls": (bft["wall_seconds"], reference["process_wall_seconds"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Smaller corpora (a smoke run, not the figures)")
    parser.add_argument("--only", help="Comma-separated scenario letters to run (a-f, faults, cpu)")
    parser.add_argument(
        "--distilabel", metavar="PYTHON", help="An interpreter with distilabel[openai]==1.5.3: compare on scenario (a)"
    )
    args = parser.parse_args()
    n = 400 if args.quick else 1600
    wanted = set(args.only.split(",")) if args.only else None
    scenarios = [
        ("a", "vllm", "simulated_vllm.py", [], n, "backtranslate"),
        ("b", "tgi", "simulated_tgi.py", [], n, "backtranslate"),
        ("c", "hosted-429", "simulated_vllm.py", ["--concurrency-limit", "48", "--metrics", "false"], n // 2,
         "backtranslate"),
        ("d", "4-replicas", "simulated_vllm.py", ["--instances", "4", "--speeds", "1,1,0.5,0.25"], 2 * n,
         "backtranslate"),
        ("e", "3-stages", "simulated_vllm.py", [], n // 2, "backtranslate,curate,rewrite"),
        ("f", "slows-down", "simulated_vllm.py", ["--slowdown-at", "3", "--slowdown", "2"], n, "backtranslate"),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bft-adaptive-") as tmp:
        work = Path(tmp)
        print(
            "bft with no concurrency flag vs a client that sends everything at once; tokens/s over the servers' busy window"
        )
        print(f"{'':3}{'scenario':<12} {'docs':>5} {'bft tok/s':>10} {'all-at-once':>11} {'ratio':>6} {'lost':>5} "
              f"{'retries':>7} {'wall bft/ref':>13}  limit low/high/settled (steered by)")  # fmt: skip
        results = {}
        for letter, label, script, flags, documents, stages in scenarios:
            if wanted and letter not in wanted:
                continue
            r = results[letter] = scenario(work, label, script, flags, documents, stages)
            limits = "; ".join(f"{lo}/{hi}/{st} ({by})" for lo, hi, st, by in r["limits"].values())
            walls = f"{r['walls'][0]:.1f}/{r['walls'][1]:.1f} s"
            print(f"({letter}) {label:<12} {documents:>5} {r['bft_rate']:>10.0f} {r['reference_rate']:>11.0f} "
                  f"{r['ratio']:>6.3f} {r['lost']:>5} {r['retries']:>7} {walls:>13}  {limits}", flush=True)  # fmt: skip

        if args.distilabel and "a" in results:
            distilabel_comparison(work, args.distilabel, n, results["a"])
        if not wanted or "faults" in wanted:
            fault_mix(work, n // 2)
        if not wanted or "cpu" in wanted:
            client_cpu(work, 1000 if args.quick else 6400)


def distilabel_comparison(work: Path, python: str, documents: int, a: dict) -> None:
    """distilabel's TextGeneration (`distilabel_run.py`, in `python`) on scenario (a)'s server and prompts."""
    from bft.generation.config.files import load_config
    from bft.generation.records import StageRecord
    from bft.generation.run.stages import build_stages

    corpus = work / "vllm.jsonl"
    stage = build_stages(load_config(None, {"corpus.path": str(corpus), "out": "x", "stages": ["backtranslate"]}))[0]
    prompts = work / "prompts.jsonl"
    with open(prompts, "w", encoding="utf-8") as handle:
        for line in corpus.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            record = StageRecord(id=row["id"], stage="", status="", document=row["text"], position=0, input_location="")
            handle.write(json.dumps({"instruction": stage.request(record).text}) + "\n")
    with Servers("simulated_vllm.py") as servers:
        started = time.monotonic()
        command = [python, str(HERE / "distilabel_run.py"), str(prompts), "--base-url", servers.urls[0] + "/v1",
                   "--max-new-tokens", str(stage.config.sampling.max_tokens)]  # fmt: skip
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        process_wall = time.monotonic() - started
        rate = servers.busy_rate()["rate"]
    bft_wall, reference_wall = a["walls"]
    print(f"end to end, {documents} prompts on (a)'s server: bft {bft_wall:.1f} s, all-at-once {reference_wall:.1f} s "
          f"(bft {bft_wall / reference_wall - 1:+.1%}), distilabel 1.5.3 TextGeneration at batch 128 {process_wall:.1f} s "
          f"(its pipeline {result['wall_seconds']:.1f} s; {result['generated']} of {result['rows']} generated; "
          f"{rate / a['reference_rate']:.3f} of all-at-once's tokens/s)", flush=True)  # fmt: skip


def fault_mix(work: Path, documents: int) -> None:
    corpus = write_corpus(work / "faults.jsonl", documents, words=300, seed=7)
    with Servers("simulated_tgi.py") as servers:
        clean = run_bft(corpus, work / "out-clean", servers.urls, "backtranslate")
    print(f"fault mix (TGI-like, {documents} documents): 5 % 429, 3 % 503, 2 % resets, 1 % garbage; "
          f"fault-free wall {clean['wall_seconds']:.1f} s")  # fmt: skip
    for seed in (1, 2, 3):
        flags = ["--faults", "429:0.05,503:0.03,reset:0.02,garbage:0.01", "--seed", str(seed)]
        with Servers("simulated_tgi.py", *flags) as servers:
            run = run_bft(corpus, work / f"out-faults-{seed}", servers.urls, "backtranslate")
        stage = run["stats"]
        events = dict(stage["endpoint_events"])
        print(f"  seed {seed}: wall {run['wall_seconds']:.1f} s = {run['wall_seconds'] / clean['wall_seconds']:.3f} x "
              f"fault-free; lost {documents - stage['kept']}; retries {sum(stage['retries_by_cause'].values())} "
              f"{dict(stage['retries_by_cause'])}; endpoint events {events or 'none'}", flush=True)  # fmt: skip


def client_cpu(work: Path, documents: int) -> None:
    fast = ["--instances", "4", "--base-seconds", "0.002", "--per-sequence-seconds", "0", "--prefill-seconds-per-token",
            "0", "--new-tokens", "8"]  # fmt: skip
    one = write_corpus(work / "one.jsonl", 1, words=150, seed=1)
    many = write_corpus(work / "many.jsonl", documents, words=150, seed=2)
    with Servers("simulated_vllm.py", *fast) as servers:
        startup = run_bft(one, work / "out-one", servers.urls, "backtranslate")
    with Servers("simulated_vllm.py", *fast) as servers:
        busy = run_bft(many, work / "out-many", servers.urls, "backtranslate")
    requests = busy["stats"]["requests"]
    per_thousand = (busy["cpu_seconds"] - startup["cpu_seconds"]) / requests * 1000
    print(f"client CPU: {per_thousand:.2f} s per 1,000 requests ({busy['cpu_seconds']:.1f} s for {requests} requests, "
          f"start-up {startup['cpu_seconds']:.1f} s); peak RSS {busy['peak_rss_mib']:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
