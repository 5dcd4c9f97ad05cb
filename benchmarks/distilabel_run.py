"""distilabel 1.5.3's `TextGeneration` on the same requests bft sends: the end-to-end comparison of issue 19.

Run with an interpreter that has `distilabel[openai]==1.5.3` (a virtual environment of its own: bft does
not depend on it), against a simulated server's OpenAI-compatible URL:

    python -m venv /tmp/dvenv && /tmp/dvenv/bin/pip install 'distilabel[openai]==1.5.3' requests  # it imports requests
    /tmp/dvenv/bin/python benchmarks/distilabel_run.py PROMPTS.jsonl --base-url http://127.0.0.1:PORT/v1

PROMPTS.jsonl holds one `{"instruction": ...}` per line: bft's own backtranslation prompts for the
corpus, written by `adaptive.py --distilabel PYTHON`, so both clients ask the server the same things. It
prints a JSON line: rows in, rows with a generation, wall seconds (the pipeline's run, start-up apart).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompts")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="bft/simulated-vllm")
    parser.add_argument("--batch", type=int, default=128, help="input_batch_size (distilabel's default is 50)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    rows = [json.loads(line) for line in Path(args.prompts).read_text(encoding="utf-8").splitlines() if line]
    with Pipeline(name="bft-comparison") as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=args.batch)
        generate = TextGeneration(
            llm=OpenAILLM(
                model=args.model,
                base_url=args.base_url,
                api_key="unused",
                generation_kwargs={"max_new_tokens": args.max_new_tokens, "temperature": 1.0},
            ),  # fmt: skip
            input_batch_size=args.batch,
        )
        load >> generate
    started = time.monotonic()
    distiset = pipeline.run(use_cache=False)
    wall = time.monotonic() - started
    out = distiset["default"]["train"]
    made = sum(1 for row in out if row.get("generation"))
    print(json.dumps({"rows": len(rows), "generated": made, "wall_seconds": wall}))


if __name__ == "__main__":
    main()
