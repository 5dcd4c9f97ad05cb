"""Request cache benchmark: what an edited rerun asks, how long it takes, and whether its rows are a fresh run's.

    .venv/bin/python benchmarks/request_cache.py                    # 1,600 documents, about 9 minutes on 2 cores
    .venv/bin/python benchmarks/request_cache.py --quick            # 200 documents, a smoke run (2.5 minutes)
    .venv/bin/python benchmarks/request_cache.py --plain-simulator  # simulated_vllm.py's own replies (see below)

Everything runs here, with no GPU. One simulated vLLM server (`simulated_vllm.py`'s scheduler, with a 40 ms
base step instead of its 8 ms, so that a first run of 1,600 documents takes about a minute) serves in a
child process; every `bft generate` (three stages, chat requests, default settings, `--no-progress`) runs in
another child, so that its wall time and CPU seconds (`os.wait4`) are its own. All cached runs share one new,
empty cache folder (`--cache`), so nothing of the user's cache is read; each run writes a new `--out` folder.
The scenarios, in this order, all on one seeded corpus:

    first        the cache empty: every reply asked and stored
    same         the same command into a new folder
    min 4.5      --min-score 4.5 (scores are integers: the same pairs kept as the default 5)
    min 4        --min-score 4 (more pairs kept: rewrite asks for the pairs scoring 4)
    rewrite      rewrite.template: a copy of the P3 prompt with one sentence edited
    bt tokens    backtranslate.sampling.max_tokens 384 (default 256)

and, for each but `first`, the same command with `--no-cache` into another folder ("fresh"). It prints per
scenario the requests sent per stage (`stats.json`), those expected (below), the cache's hits, wall and CPU
seconds, and whether every config's rows (`backtranslated`, `curated`, `rewritten`, `rejected`, loaded with
`datasets`, sorted by id) equal the fresh run's once the provenance fields that say where a reply came from
(`cached` and every `first_asked_...`) are dropped. Then the goals: met or not, with the figures:
the requests as expected; the zero-request run's wall time under 5 % of the first run's (and how it splits:
start-up and imports, measured apart by a child Python that only imports the command; the stages, stats.json's
`wall_seconds`; the rest: writing the outputs and card, exiting); the first run's
client CPU (every request looked up and every reply stored) under 5 % over the fresh run's (`--no-cache`).

Expected requests: `same` and `min 4.5` none; `min 4` rewrite's for the pairs kept now and not by `first`;
`rewrite` every rewrite; `bt tokens` every backtranslation, and curate and rewrite only for the documents
whose instruction differs from `first`'s (counted from the two runs' rows).

The replies. `simulated_vllm.py`'s own are deterministic (they depend on which stage's prompt it is and on the
token limit only), but the same for every document: every score 5 (no threshold between 1 and 5 changes what
is kept) and 64 tokens (a backtranslation limit above 64 changes no instruction). So by default the server
here is that simulator with replies drawn from the sha256 of the prompt: words of the corpus's list, a score
3, 4 or 5 (20/30/50 %), 16 to 64 tokens, and for 15 % of the backtranslations 270 tokens: cut off by the
default limit of 256 (rejected as `instruction_truncated`), whole under 384, so that `bt tokens` changes the
instruction of those documents only. Still deterministic: a fresh run gets the same replies, whatever the
sampling temperature says. `--plain-simulator` runs `simulated_vllm.py` as it is.
"""

from __future__ import annotations

import argparse
import contextvars
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine import WORDS, write_corpus

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STAGES = ("backtranslate", "curate", "rewrite")
OUTPUT_CONFIGS = ("backtranslated", "curated", "rewritten", "rejected")
REWRITE_SENTENCE = "Try not to add new facts that are not already in the draft response."
REWRITE_EDITED = "Do not add any fact that the draft response does not already state."
LONG_BACKTRANSLATION = 270  # tokens: over the default limit (256), under the scenario's (384)
SHORT_WORDS = tuple(w for w in WORDS if len(w) <= 6)  # a long instruction stays under max_instruction_chars
BACKTRANSLATE_MAX_TOKENS = 384
# simulated_vllm.py's defaults but a slower step (8 ms there): a first run of 1,600 documents takes about a minute
SIMULATOR = {"base_seconds": 0.04}

# --- the server ------------------------------------------------------------------------------------------

WANTED = contextvars.ContextVar("wanted", default=None)  # the reply length the prompt of this request decides


def prompt_rng(prompt: str, salt: str) -> random.Random:
    return random.Random(hashlib.sha256((salt + prompt).encode()).digest())


def prompt_kind(prompt: str) -> str:
    """Which stage's prompt it is, as `simulated_vllm.reply_text` tells them apart."""
    if "5-point scale" in prompt:
        return "curate"
    if "rewrite the draft" in prompt or "[RES]" in prompt:
        return "rewrite"
    return "backtranslate"


def reply_length(prompt: str) -> int:
    rng = prompt_rng(prompt, "length")
    if prompt_kind(prompt) == "backtranslate" and rng.random() < 0.15:
        return LONG_BACKTRANSLATION
    return rng.randint(16, 64)


def varied_reply(prompt: str, tokens: int) -> str:
    """A reply of `tokens` words drawn from the prompt's hash (a prefix of the whole reply when cut off)."""
    rng = prompt_rng(prompt, "words")
    kind = prompt_kind(prompt)
    words = [rng.choice(SHORT_WORDS if kind == "backtranslate" else WORDS) for _ in range(max(1, tokens - 2))]
    if kind == "curate":
        return " ".join(words) + f"\nScore: {rng.choices((3, 4, 5), weights=(2, 3, 5))[0]}"
    if kind == "rewrite":
        return "[RES] " + " ".join(words) + " [/RES]"
    return " ".join(words).capitalize() + "?"


def serve_varied(port_file: str) -> None:
    """`simulated_vllm.py`'s server and scheduler, each reply's text and length drawn from its prompt."""
    import asyncio

    import simulated_vllm as sim

    class Scheduler(sim.Scheduler):
        async def generate(self, prompt_tokens: int, max_tokens: int) -> int:
            return await super().generate(prompt_tokens, min(max_tokens, WANTED.get() or max_tokens))

    plain_route = sim.VLLMInstance.route

    async def route(self, method: str, path: str, body: bytes):
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            request = json.loads(body)
            prompt = request["messages"][-1]["content"] if path.endswith("chat/completions") else request["prompt"]
            token = WANTED.set(reply_length(prompt))
            try:
                return await plain_route(self, method, path, body)
            finally:
                WANTED.reset(token)
        return await plain_route(self, method, path, body)

    sim.Scheduler, sim.reply_text, sim.VLLMInstance.route = Scheduler, varied_reply, route
    config = sim.VLLMConfig(**SIMULATOR, new_tokens=LONG_BACKTRANSLATION)  # the cap: each reply's own length decides
    asyncio.run(sim.serve([config], port_file))


class Server:
    """The simulated vLLM server, in a child process."""

    def __init__(self, plain: bool):
        self.port_file = Path(tempfile.mkstemp(suffix=".json")[1])
        self.port_file.unlink()
        script = ["simulated_vllm.py"] if plain else [Path(__file__).name, "--serve"]
        command = [sys.executable, str(HERE / script[0]), *script[1:], "--port-file", str(self.port_file)]
        command += [] if not plain else [f"--{k.replace('_', '-')}={v}" for k, v in SIMULATOR.items()]
        self.process = subprocess.Popen(command)
        while not self.port_file.exists() or not self.port_file.read_text():
            if self.process.poll() is not None:
                raise RuntimeError("the simulated server did not start")
            time.sleep(0.05)
        time.sleep(0.05)
        self.url = f"http://127.0.0.1:{json.loads(self.port_file.read_text())[0]}"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.port_file.unlink(missing_ok=True)


# --- the runs --------------------------------------------------------------------------------------------


def run_generate(corpus: Path, out: Path, url: str, cache: Path, extra: list[str]) -> dict:
    """`bft generate` in a child process: its stats.json, wall time and CPU seconds."""
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(corpus), "--out", str(out)]
    command += ["--endpoint", url, "--cache", str(cache), "--no-progress", *extra]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    error = process.stderr.read().decode()  # (before waiting: a full pipe would block the child)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"bft generate failed ({' '.join(command)}):\n{error}")
    stats = json.loads((out / "stats.json").read_text())
    return {"out": out, "stats": stats, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime}


def scenario_flags(work: Path) -> dict[str, list[str]]:
    """Each scenario's extra flags (the configs it needs written into work)."""
    return {
        "first": [],
        "same": [],
        "min 4.5": ["--min-score", "4.5"],
        "min 4": ["--min-score", "4"],
        "rewrite": ["--config", str(write_config(work / "rewrite.yaml", {"rewrite": {"template": edited(work)}}))],
        "bt tokens": [
            "--config",
            str(
                write_config(
                    work / "bt-tokens.yaml", {"backtranslate": {"sampling": {"max_tokens": BACKTRANSLATE_MAX_TOKENS}}}
                )
            ),
        ],
    }


def edited(work: Path) -> str:
    """A copy of the rewrite prompt (P3) with one sentence edited: header lines and `---` kept."""
    text = (REPO / "generation" / "method" / "prompts" / "rewrite.txt").read_text(encoding="utf-8")
    if REWRITE_SENTENCE not in text:
        raise RuntimeError(f"rewrite.txt no longer holds {REWRITE_SENTENCE!r}: edit another sentence")
    path = work / "rewrite-edited.txt"
    path.write_text(text.replace(REWRITE_SENTENCE, REWRITE_EDITED), encoding="utf-8")
    return str(path)


def write_config(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_scenarios(work: Path, corpus: Path, url: str) -> dict[str, dict]:
    """Every scenario's cached run (shared cache) and, but for `first`, its fresh (`--no-cache`) run."""
    cache = work / "cache"
    results = {}
    for number, (name, flags) in enumerate(scenario_flags(work).items()):
        slug = f"{number}-{name.replace(' ', '-').replace('.', '_')}"
        cached = run_generate(corpus, work / f"out-{slug}", url, cache, flags)
        fresh = (
            None
            if name == "first"
            else run_generate(corpus, work / f"fresh-{slug}", url, cache, [*flags, "--no-cache"])
        )
        results[name] = {"cached": cached, "fresh": fresh}
        print(f"  ran {name}: {cached['wall']:.1f} s" + (f", fresh {fresh['wall']:.1f} s" if fresh else ""), flush=True)
    return results


# --- rows ------------------------------------------------------------------------------------------------


def load_rows(out: Path) -> dict[str, list[dict]]:
    """Each output config's rows, sorted by id, without the provenance fields that say where a reply came from."""
    import datasets

    datasets.disable_progress_bars()
    rows = {}
    for name in OUTPUT_CONFIGS:
        if not (out / name).is_dir():
            continue
        records = [dict(r) for r in datasets.load_dataset(str(out), name, split="train")]
        for record in records:
            record["provenance"] = [{k: v for k, v in p.items() if not from_cache(k)} for p in record["provenance"]]
        rows[name] = sorted(records, key=lambda r: (r["id"], r["stage"]))
    return rows


def from_cache(field: str) -> bool:
    """Whether a provenance field says where a reply came from (a cached run's differ from a fresh run's)."""
    return field == "cached" or field.startswith("first_asked")


def compare(cached: dict[str, list[dict]], fresh: dict[str, list[dict]]) -> tuple[bool, int, str]:
    """(equal, rows compared, the first difference)."""
    if set(cached) != set(fresh):
        return False, 0, f"configs {sorted(cached)} vs fresh {sorted(fresh)}"
    total = sum(len(rows) for rows in cached.values())
    for name in cached:
        if len(cached[name]) != len(fresh[name]):
            return False, total, f"{name}: {len(cached[name])} rows vs fresh {len(fresh[name])}"
        for mine, theirs in zip(cached[name], fresh[name], strict=True):
            if mine != theirs:
                return False, total, f"{name} {mine['id']}: {first_difference(mine, theirs)}"
    return True, total, ""


def first_difference(mine: dict, theirs: dict) -> str:
    for key in mine:
        if mine[key] != theirs.get(key):
            if key == "provenance":
                for step, (a, b) in enumerate(zip(mine[key], theirs[key], strict=False)):
                    fields = [f for f in a if a[f] != b.get(f)]
                    if fields:
                        return f"provenance[{step}] ({a.get('stage')}) {fields[0]}: {a[fields[0]]!r} vs {b.get(fields[0])!r}"
            return f"{key}: {str(mine[key])[:60]!r} vs {str(theirs.get(key))[:60]!r}"
    return "?"


def kept_ids(rows: dict[str, list[dict]], config: str) -> set[str]:
    return {r["id"] for r in rows.get(config, [])}


def instructions(rows: dict[str, list[dict]]) -> dict[str, str]:
    return {r["id"]: r["instruction"] for r in rows.get("backtranslated", [])}


def expected_requests(name: str, run: dict, rows: dict[str, list[dict]], first: dict[str, list[dict]]) -> tuple:
    """The requests each stage should send in scenario `name` (module docstring): one per document entering a
    stage whose prompt no earlier run asked; from this run's stats and rows and `first`'s rows."""
    entered = per_stage(run["stats"], "entered")
    if name == "first":
        return entered
    if name in ("same", "min 4.5"):
        return 0, 0, 0
    if name == "min 4":
        return 0, 0, len(kept_ids(rows, "curated") - kept_ids(first, "curated"))
    if name == "rewrite":
        return 0, 0, entered[2]
    now, before = instructions(rows), instructions(first)  # bt tokens: the documents whose instruction changed
    changed = {i for i, text in now.items() if before.get(i) != text}
    return entered[0], len(changed), len(kept_ids(rows, "curated") & changed)


# --- report ----------------------------------------------------------------------------------------------


def per_stage(stats: dict, field: str) -> tuple[int, ...]:
    return tuple(stats.get(stage, {}).get(field, 0) for stage in STAGES)


def slashed(values: tuple[int, ...]) -> str:
    return "/".join(str(v) for v in values)


def report(results: dict[str, dict]) -> None:
    first_rows = load_rows(results["first"]["cached"]["out"])
    fresh_first = load_rows(results["same"]["fresh"]["out"])  # the same command, --no-cache
    header = (
        f"{'scenario':<19} {'sent bt/cur/rw':>16} {'expected':>16} {'cache hits':>16} {'kept rw':>7} "
        f"{'wall s':>7} {'run s':>6} {'CPU s':>6}  rows equal to a fresh run's"
    )
    print("sent: requests sent per stage; kept rw: rows rewritten; wall s: the child process's, start-up included;")
    print("run s: stats.json's wall_seconds, bft's own; CPU s: the child's user + system")
    print(header)
    print("-" * len(header))
    met = []
    for name, result in results.items():
        cached = result["cached"]
        rows = first_rows if name == "first" else load_rows(cached["out"])
        fresh_rows = fresh_first if name in ("first", "same") else load_rows(result["fresh"]["out"])
        equal, count, difference = compare(rows, fresh_rows)
        sent = per_stage(cached["stats"], "requests")
        expected = expected_requests(name, cached, rows, first_rows)
        met.append((name, sent, expected))
        line(
            name,
            cached,
            sent,
            expected,
            f"{'yes' if equal else 'NO'} ({count} rows)" + (f": {difference}" if difference else ""),
        )
        if result["fresh"] is not None:
            fresh = result["fresh"]
            line("  fresh --no-cache", fresh, per_stage(fresh["stats"], "requests"), None, "")
    goals(results, met)


def line(name: str, run: dict, sent: tuple[int, ...], expected: tuple[int, ...] | None, equal: str) -> None:
    stats = run["stats"]
    print(
        f"{name:<19} {slashed(sent):>16} {slashed(expected) if expected else '':>16} "
        f"{slashed(per_stage(stats, 'cache_hits')):>16} {stats.get('rewrite', {}).get('kept', 0):>7} "
        f"{run['wall']:>7.1f} {stats['wall_seconds']:>6.1f} {run['cpu']:>6.1f}  {equal}"
    )


def goals(results: dict[str, dict], met: list[tuple[str, tuple, tuple]]) -> None:
    wrong = [
        f"{name}: sent {slashed(sent)}, expected {slashed(expected)}"
        for name, sent, expected in met
        if sent != expected
    ]
    print(f"\nrequests as expected in every scenario: {'met' if not wrong else 'NOT MET: ' + '; '.join(wrong)}")
    first, same = results["first"]["cached"], results["same"]["cached"]
    fresh = results["same"]["fresh"]
    share = same["wall"] / first["wall"]
    print(
        f"zero-request run's wall time under 5 % of the first run's: {verdict(share < 0.05)} "
        f"({same['wall']:.1f} s / {first['wall']:.1f} s = {share:.1%}; bft's own wall_seconds "
        f"{same['stats']['wall_seconds']:.1f} s / {first['stats']['wall_seconds']:.1f} s; its CPU {same['cpu']:.1f} s / "
        f"{first['cpu']:.1f} s = {same['cpu'] / first['cpu']:.1%})"
    )
    start, stages = startup_seconds(), same["stats"]["wall_seconds"]
    print(
        f"  its {same['wall']:.2f} s: start-up and imports about {start:.2f} s (a child Python importing the "
        f"command's module, best of 3), the stages {stages:.2f} s (stats.json wall_seconds), writing the outputs "
        f"and card and exiting the other {same['wall'] - start - stages:.2f} s"
    )
    extra = first["cpu"] / fresh["cpu"] - 1
    print(
        f"cache lookups and stores add under 5 % to a run's client CPU: {verdict(extra < 0.05)} "
        f"(first run, every request looked up and stored: {first['cpu']:.1f} s; the same with --no-cache: "
        f"{fresh['cpu']:.1f} s; {extra:+.1%})"
    )


def startup_seconds(tries: int = 3) -> float:
    """The wall time of a child Python that imports `bft generate`'s module and stops (the best of `tries`):
    the start-up a run pays before its stages begin, apart from the modules it imports later."""
    times = []
    for _ in range(tries):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import bft.generation.generate"], cwd=REPO, check=True)
        times.append(time.monotonic() - started)
    return min(times)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1600, help="Documents in the corpus (default 1600)")
    parser.add_argument("--quick", action="store_true", help="200 documents (a smoke run, not the figures)")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (corpus, outputs, cache)")
    parser.add_argument("--plain-simulator", action="store_true", help="simulated_vllm.py's own replies")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server's child process
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_varied(args.port_file)
        return
    documents = 200 if args.quick else args.documents
    work = Path(tempfile.mkdtemp(prefix="bft-bench-cache-"))
    os.environ["HF_DATASETS_CACHE"] = str(work / "hf-datasets")  # loading the rows leaves nothing in the user's
    server = Server(plain=args.plain_simulator)
    try:
        corpus = write_corpus(work / "corpus.jsonl", documents, words=200)
        replies = "simulated_vllm.py's own" if args.plain_simulator else "drawn from each prompt's sha256"
        settings = ", ".join(f"{k} {v}" for k, v in SIMULATOR.items())
        print(f"{documents} documents, three stages, one simulated vLLM server ({settings}; replies {replies})")
        print(f"work folder {work}")
        results = run_scenarios(work, corpus, server.url)
    finally:
        server.close()
    print()
    report(results)
    if args.keep:
        print(f"\nkept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
