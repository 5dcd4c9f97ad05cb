"""Engine benchmark: throughput against simulated TGI capacity, client CPU, and memory versus corpus size.

    .venv/bin/python benchmarks/engine.py            # about 4 minutes on 2 cores
    .venv/bin/python benchmarks/engine.py --quick    # smaller corpora, for a smoke run
    .venv/bin/python benchmarks/engine.py --ray      # local executor vs --executor ray, 1/2/4 replicas

Everything runs here, with no GPU: `simulated_tgi.py` serves in its own process, and each measured
`bft generate` (backtranslate stage, chat requests, the default settings) runs in another, so that
its CPU time and peak RSS are its own (`os.wait4`). It prints:

- achieved completion tokens/s (from the run's `stats.json`, first request to last answer) / the
  simulated servers' analytic capacity for the same requests (from their `/stats`), with 1 and with 4
  instances (target >= 0.9); and the same ratio while documents were still being sent ("steady"),
  which leaves out the final drain of the batch that no client can avoid;
- client CPU seconds per 1,000 requests (the 4-instance run, less a one-document run's start-up);
- peak RSS of a whole run over 1,000 and over 50,000 documents (target: under 20 % growth).

With `--ray` it measures the Ray executor instead: the same corpus through `bft generate` and
`bft generate --executor ray` (a local Ray cluster started by the run, one actor per replica, blocks of
200 documents) against 1, 2 and 4 simulated replicas, 800 documents per replica. It prints, for each,
the servers' tokens/s while documents were arriving (their own clock, so client start-up is left out)
over their capacity, the Ray/local ratio of that throughput, and the whole runs' wall times (Ray's
includes starting the cluster and the first pass over the corpus).

The corpora are generated (seeded) from a fixed word list: no data is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = tuple(
    [
        "river",
        "garden",
        "market",
        "bread",
        "window",
        "engine",
        "letter",
        "winter",
        "harbor",
        "lantern",
        "teacher",
        "mountain",
        "station",
        "paper",
        "kitchen",
        "signal",
        "bridge",
        "forest",
        "orchard",
        "museum",
        "ladder",
        "violin",
        "compass",
        "meadow",
        "island",
        "tunnel",
        "measure",
        "gather",
        "repair",
        "explain",
        "borrow",
        "follow",
        "carry",
        "notice",
        "wander",
        "settle",
        "quietly",
        "often",
        "nearly",
        "because",
        "although",
        "during",
        "between",
        "across",
        "under",
        "simple",
        "careful",
        "narrow",
        "bright",
        "heavy",
        "ancient",
    ]
)


def write_corpus(path: Path, documents: int, words: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(documents):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words * 3 // 2)))
            handle.write(json.dumps({"id": f"doc-{number}", "text": text.capitalize() + "."}) + "\n")
    return path


class Simulator:
    """The simulated TGI instances, in a child process."""

    def __init__(self, instances: int, **settings):
        self.port_file = Path(tempfile.mkstemp(suffix=".json")[1])
        self.port_file.unlink()
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "simulated_tgi.py"),
                "--instances",
                str(instances),
                "--port-file",
                str(self.port_file),
                *flags,
            ]
        )
        while not self.port_file.exists() or not self.port_file.read_text():
            if self.process.poll() is not None:
                raise RuntimeError("the simulated server did not start")
            time.sleep(0.05)
        time.sleep(0.05)
        self.urls = [f"http://127.0.0.1:{port}" for port in json.loads(self.port_file.read_text())]

    def stats(self) -> list[dict]:
        return [json.load(urllib.request.urlopen(url + "/stats")) for url in self.urls]

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.port_file.unlink(missing_ok=True)


def run_generate(corpus: Path, out: Path, urls: list[str], *extra: str, stages: str = "backtranslate") -> dict:
    """Run `bft generate` in a child process; return its stats (`stats.json` whole under `run_stats`, the
    first stage's under `stats`), wall time, CPU seconds and peak RSS. `--no-cache`: a benchmark measures
    asking, never the request cache's answers from an earlier run."""
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(corpus), "--out", str(out)]
    command += [a for url in urls for a in ("--endpoint", url)]
    command += ["--stages", stages, "--no-progress", "--no-cache", *extra]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    error = process.stderr.read().decode()
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"bft generate failed:\n{error}")
    run_stats = json.loads((out / "stats.json").read_text())
    return {
        "run_stats": run_stats,
        "stats": run_stats[stages.split(",")[0]],
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "wall_seconds": time.monotonic() - started,
    }


def throughput(work: Path, instances: int, documents: int) -> dict:
    simulator = Simulator(instances)
    try:
        corpus = write_corpus(work / f"throughput-{instances}.jsonl", documents, words=300, seed=instances)
        result = run_generate(corpus, work / f"out-throughput-{instances}", simulator.urls)
        served = simulator.stats()
    finally:
        simulator.close()
    stage = result["stats"]
    # all instances together: capacity adds up; each instance's formula already matches its own requests
    capacity = sum(s["capacity_tokens_per_second"] for s in served if s["capacity_tokens_per_second"])
    achieved = stage["completion_tokens"] / stage["seconds"]
    result.update(
        instances=instances,
        documents=documents,
        achieved=achieved,
        capacity=capacity,
        ratio=achieved / capacity,
        rejected_429=sum(s["rejected_429"] for s in served),
        steady=sum(s["tokens_per_second_while_arriving"] or 0 for s in served) / capacity,
    )
    return result


def memory(work: Path, documents: int) -> dict:
    # a fast simulated server: the client, not the model, is the bottleneck here
    simulator = Simulator(1, batch=256, step_seconds=0.002, prefill_seconds_per_token=0.0, new_tokens=8)
    try:
        corpus = write_corpus(work / f"memory-{documents}.jsonl", documents, words=150, seed=documents)
        return run_generate(corpus, work / f"out-memory-{documents}", simulator.urls)
    finally:
        simulator.close()


def executor_run(work: Path, instances: int, documents: int, executor: str) -> dict:
    """One `bft generate` with `executor` against `instances` simulated replicas; servers' view of it."""
    simulator = Simulator(instances)
    try:
        corpus = write_corpus(work / f"ray-{instances}.jsonl", documents, words=300, seed=instances)
        extra = ["--executor", "ray", "--config", str(write_ray_config(work))] if executor == "ray" else []
        result = run_generate(corpus, work / f"out-{executor}-{instances}", simulator.urls, *extra)
        served = simulator.stats()
    finally:
        simulator.close()
    capacity = sum(s["capacity_tokens_per_second"] for s in served if s["capacity_tokens_per_second"])
    steady = sum(s["tokens_per_second_while_arriving"] or 0 for s in served)
    result.update(steady=steady, capacity=capacity, rejected_429=sum(s["rejected_429"] for s in served))
    return result


def write_ray_config(work: Path) -> Path:
    path = work / "ray.yaml"
    path.write_text("ray:\n  block_size: 200\n", encoding="utf-8")
    return path


def ray_benchmark(work: Path, per_instance: int) -> None:
    print("simulated TGI as above; steady = servers' tokens/s while documents arrived / their capacity")
    print(
        f"{'replicas':>8} {'docs':>5} {'local steady':>12} {'ray steady':>10} {'ray/local':>9} "
        f"{'ray tok/s':>9} {'x 1 replica':>11} {'local wall':>10} {'ray wall':>8} {'429s':>5}"
    )
    base = None
    for instances in (1, 2, 4):
        documents = per_instance * instances
        local = executor_run(work, instances, documents, "local")
        ray = executor_run(work, instances, documents, "ray")
        base = base or ray["steady"]
        print(
            f"{instances:>8} {documents:>5} {local['steady'] / local['capacity']:>12.3f} "
            f"{ray['steady'] / ray['capacity']:>10.3f} {ray['steady'] / local['steady']:>9.3f} "
            f"{ray['steady']:>9.0f} {ray['steady'] / base:>11.2f} {local['wall_seconds']:>9.1f}s "
            f"{ray['wall_seconds']:>7.1f}s {local['rejected_429'] + ray['rejected_429']:>5}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Small corpora (a smoke run, not the figures)")
    parser.add_argument("--ray", action="store_true", help="Local executor vs --executor ray, 1/2/4 replicas")
    args = parser.parse_args()
    if args.ray:
        with tempfile.TemporaryDirectory(prefix="bft-bench-") as tmp:
            ray_benchmark(Path(tmp), 300 if args.quick else 800)
        return
    small, large = (200, 2000) if args.quick else (1000, 50000)
    per_instance = 300 if args.quick else 800

    with tempfile.TemporaryDirectory(prefix="bft-bench-") as tmp:
        work = Path(tmp)
        print(
            "simulated TGI: batch 32, 20 ms per decode step, 20 us per prompt token, 48 new tokens, 128 max concurrent"
        )
        print(
            f"{'instances':>9} {'docs':>6} {'achieved tok/s':>15} {'capacity tok/s':>15} {'ratio':>6} "
            f"{'steady':>6} {'429s':>5}"
        )
        runs = [throughput(work, n, per_instance * n) for n in (1, 4)]
        for r in runs:
            print(
                f"{r['instances']:>9} {r['documents']:>6} {r['achieved']:>15.0f} {r['capacity']:>15.0f} "
                f"{r['ratio']:>6.3f} {r['steady']:>6.3f} {r['rejected_429']:>5}"
            )

        startup = memory(work, 1)
        busy = runs[-1]
        per_thousand = (busy["cpu_seconds"] - startup["cpu_seconds"]) / busy["stats"]["requests"] * 1000
        print(
            f"client CPU: {per_thousand:.2f} s per 1,000 requests "
            f"({busy['cpu_seconds']:.1f} s for {busy['stats']['requests']} requests, start-up {startup['cpu_seconds']:.1f} s)"
        )

        low, high = memory(work, small), memory(work, large)
        growth = high["peak_rss_mib"] / low["peak_rss_mib"] - 1
        print(
            f"peak RSS: {low['peak_rss_mib']:.0f} MiB for {small:,} documents, {high['peak_rss_mib']:.0f} MiB for "
            f"{large:,} documents: {growth:+.1%} ({high['stats']['requests']} requests in {high['wall_seconds']:.0f} s)"
        )


if __name__ == "__main__":
    main()
