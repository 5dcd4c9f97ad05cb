"""The benchmark's "what is possible": a minimal client that sends every request at once.

It sends the same requests `bft generate` would (bft's own prompts for each document, the stages'
`max_tokens`), all at once over one aiohttp session with no connection limit, to the replicas in turn
(round robin: it knows nothing of their speeds), and retries a 429 or 503 after its `Retry-After` (else
0.2 s) and a dropped connection at once. With several stages, each document's next request goes out as
soon as its previous answer is back. It parses nothing beyond what the next stage needs: it is the
server's capacity under a client with no limits, measured in the same run as bft.

    python benchmarks/send_everything.py CORPUS --endpoint URL [--endpoint URL ...] [--stages backtranslate]
        [--model NAME] [--config RUN.yaml] [--follow BFT_OUTPUT]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from pathlib import Path

import aiohttp

from bft.generation.config.files import load_config
from bft.generation.records import StageRecord
from bft.generation.run.stages import build_stages


async def send_all(
    corpus: str,
    urls: list[str],
    stage_names: list[str],
    model: str = "bft/simulated",
    config_path: str | None = None,
    follow: Path | None = None,
) -> dict:
    """Send every document's requests at once; `model` is the name the server wants, `config_path` a run
    config whose stage settings (`max_tokens`, sampling) the requests take, as bft's would. `follow`, a bft
    output folder of the same run: each later stage is asked only for the documents that bft's run kept at
    the stage before, with bft's record of it (the same prompts, so the same work)."""
    kept = _kept_records(follow, stage_names) if follow else None
    config = load_config(config_path, {"corpus.path": corpus, "out": "unused", "stages": stage_names})
    stages = build_stages(config)
    documents = [json.loads(line) for line in Path(corpus).read_text(encoding="utf-8").splitlines() if line.strip()]
    turn = itertools.cycle(urls)
    counts = {"requests": 0, "retries": 0, "completion_tokens": 0}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=3600)) as session:

        async def ask(url: str, stage, record: StageRecord) -> str:
            request = stage.request(record)  # a chat turn, or a raw prompt (`mode: raw`) sent as bft sends it
            sampling = stage.config.sampling
            payload = {"model": model, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature}
            payload |= {"top_p": sampling.top_p} | ({"stop": sampling.stop} if sampling.stop else {})
            if request.mode == "chat":
                route, payload["messages"] = "/v1/chat/completions", [{"role": "user", "content": request.text}]
            else:
                route, payload["prompt"] = "/v1/completions", request.text
            while True:
                counts["requests"] += 1
                try:
                    async with session.post(url + route, json=payload) as response:
                        if response.status in (429, 503):
                            counts["retries"] += 1
                            await asyncio.sleep(float(response.headers.get("Retry-After", 0.2)))
                            continue
                        if response.status != 200:  # a refusal: asking again would be refused again
                            raise SystemExit(f"{route} answered {response.status}: {(await response.text())[:600]}")
                        body = await response.json(content_type=None)
                        counts["completion_tokens"] += body["usage"]["completion_tokens"]
                        choice = body["choices"][0]
                        return choice["message"]["content"] if request.mode == "chat" else choice["text"]
                except (aiohttp.ClientError, json.JSONDecodeError, KeyError, TypeError):
                    counts["retries"] += 1

        async def document(number: int, row: dict) -> None:
            url = next(turn)
            record = StageRecord(id=row["id"], stage="", status="", document=row["text"], position=number,
                                 input_location="", instruction="")  # fmt: skip
            for number_in_run, stage in enumerate(stages):
                if kept is not None and number_in_run > 0:
                    record = kept[stages[number_in_run - 1].name].get(row["id"])
                    if record is None:  # bft's run rejected it at the stage before
                        return
                reply = await ask(url, stage, record)
                if stage.name == "backtranslate":
                    record.instruction = reply

        started = time.monotonic()
        await asyncio.gather(*(document(n, row) for n, row in enumerate(documents)))
        counts["wall_seconds"] = time.monotonic() - started
    return counts


def _kept_records(out: Path, stage_names: list[str]) -> dict[str, dict[str, StageRecord]]:
    """Per stage, the records bft's run in `out` kept there, by document id (its journals)."""
    kept = {}
    for name in stage_names:
        journal = out / ".bft" / "journal" / f"{name}.jsonl"
        entries = (json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines() if line.strip())
        kept[name] = {e["id"]: StageRecord.from_dict(e) for e in entries if e.get("status") == "kept"}
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("--endpoint", action="append", required=True)
    parser.add_argument("--stages", default="backtranslate")
    parser.add_argument("--model", default="bft/simulated", help="the model name the server wants")
    parser.add_argument("--config", help="a bft run config whose stage settings the requests take")
    parser.add_argument("--follow", type=Path, help="a bft output folder: later stages only for what it kept")
    args = parser.parse_args()
    stage_names = args.stages.split(",")
    counts = asyncio.run(send_all(args.corpus, args.endpoint, stage_names, args.model, args.config, args.follow))
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
