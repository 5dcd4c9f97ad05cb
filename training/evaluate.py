"""`bft eval`: does the data make better models? Both papers answer with AlpacaEval win rates.

    bft eval generate --endpoint URL [--instructions bft] --out model_outputs.json [--tags S_a,S_w]
    bft eval judge --outputs model_outputs.json --reference reference_outputs.json --judge URL --out annotations.json
    bft eval winrate annotations.json            # AlpacaEval's figures from any AlpacaEval annotations file
    bft eval report OUTDIR [--tokenizer ID] [--eval-set bft] [--out report.json]

- `generate`: a served model (`bft serve`, TGI, vLLM, ...) answers an instruction set with the papers'
  decoding (T=0.7, p=0.9) and inference tags: Humpback found S_a and S_w together best (HB Table 8), so
  that is the default; `--tags S_a` or `--tags none` for the others. Output: AlpacaEval's
  `model_outputs.json`. The set is bft's own (`bft`: 60 instructions written for the project,
  `training/data/eval_instructions.jsonl`), a JSON/JSONL/Parquet file, or a Hub dataset (`ORG/NAME`).
- `judge`: a judge model compares each model output with the reference output for the same instruction,
  with bft's judge prompt (`training/prompts/judge.txt`), **twice, in both orders**; the two verdicts are
  averaged, so a judge that always picks one position ends at a tie. Ties are allowed. Output:
  AlpacaEval's `annotations.json` (`output_1` the reference, `output_2` the model) and a summary: win
  rate with its standard error, wins/losses/draws, average lengths and a length-controlled win rate
  (`training/winrate.py` documents the method).
- `winrate`: the same figures from an annotations file, bft's or AlpacaEval's own.
- `report`: the data report of a generated or built dataset (`builders/report.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

from bft.generation.errors import BftError, ConfigError

DATA_DIR = Path(__file__).parent / "data"
BFT_EVAL_SET = DATA_DIR / "eval_instructions.jsonl"
JUDGE_PROMPT = Path(__file__).parent / "prompts" / "judge.txt"
VERDICT_RE = re.compile(r"preferred\s*:\s*\(?\s*(a|b|tie)\s*\)?", re.I)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="eval_command", required=True, metavar="STEP")
    gen = commands.add_parser("generate", help="A served model answers an instruction set (AlpacaEval outputs)")
    gen.add_argument("--endpoint", required=True, help="The model's server URL")
    gen.add_argument("--instructions", default="bft", help="bft (60 shipped), a JSON/JSONL/Parquet file, or ORG/NAME")
    gen.add_argument("--split", default="train", help="Hub instruction sets: split (default: train)")
    gen.add_argument("--out", required=True, help="model_outputs.json to write (AlpacaEval format)")
    gen.add_argument("--tags", default="S_a,S_w", help="Inference tags: S_a,S_w (default, HB's best), S_a, or none")
    gen.add_argument("--tag-placement", choices=("user_end", "system"), default="user_end", help="As in training")
    gen.add_argument("--generator", help="Name written in `generator` (default: the served model's name)")
    gen.add_argument("--model", help="Model name sent in requests, for servers that do not list theirs")
    gen.add_argument("--temperature", type=float, default=0.7, help="Papers' decoding: 0.7")
    gen.add_argument("--top-p", type=float, default=0.9, help="Papers' decoding: 0.9")
    gen.add_argument("--max-tokens", type=int, default=1024)
    gen.add_argument("--max-concurrency", type=int, default=8, help="Requests in flight")
    gen.add_argument("--limit", type=int, help="Answer the first N instructions only")

    judge = commands.add_parser("judge", help="Pairwise preferences, both orders, against a reference")
    judge.add_argument("--outputs", required=True, help="The model's outputs (AlpacaEval model_outputs.json)")
    judge.add_argument("--reference", required=True, help="The reference outputs, same format")
    judge.add_argument("--judge", required=True, help="The judge model's server URL")
    judge.add_argument("--judge-model", help="Model name sent to the judge, for servers that do not list theirs")
    judge.add_argument("--out", required=True, help="annotations.json to write (AlpacaEval format)")
    judge.add_argument("--max-tokens", type=int, default=256, help="Judge reply limit (a reason, then the verdict)")
    judge.add_argument("--max-concurrency", type=int, default=8)

    winrate = commands.add_parser("winrate", help="Win rate and standard error from an annotations file")
    winrate.add_argument("annotations", help="annotations.json (bft's or AlpacaEval's)")

    report = commands.add_parser("report", help="The data report of a generated or built dataset")
    report.add_argument("dataset", help="A `bft generate` output folder or a `bft build` folder")
    report.add_argument("--tokenizer", help="Count lengths in this tokenizer's tokens (default: words)")
    report.add_argument("--eval-set", default="bft", help="Instructions to check for contamination (bft, file, Hub)")
    report.add_argument("--diversity-size", type=int, default=1000, help="Rows compared for trigram diversity")
    report.add_argument("--out", help="Also write the report as JSON here")


# ---------------------------------------------------------------------------------------------- sets


def load_instructions(spec: str, split: str = "train") -> tuple[list[dict], str]:
    """An instruction set as records with `instruction` (and `id`, `dataset` when known); and its name."""
    from bft.training.config import DataSource
    from bft.training.mixtures import load_source

    path, name = (str(BFT_EVAL_SET), "bft-eval") if spec == "bft" else (spec, spec)
    dataset, _ = load_source(DataSource(path=path, split=split), None)
    rows = dataset.to_list()
    if not rows:
        raise ConfigError(f"instruction set {spec} is empty")
    seen = set()
    for index, row in enumerate(rows):
        text = row.get("instruction")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"instruction set {spec}: row {index} has no text `instruction`")
        if text in seen:
            raise ConfigError(f"instruction set {spec}: row {index} repeats an instruction (AlpacaEval joins on it)")
        seen.add(text)
        row.setdefault("dataset", name)
    return rows, name


# --------------------------------------------------------------------------------------- requests


async def ask_all(endpoint, requests: list[dict], model, sampling, concurrency: int, retries: int = 4) -> list:
    """Send every request (`message`, optional `system`); returns each reply text, or the error for it."""
    from bft.generation.endpoints.client import RequestRejected, RetryableError

    gate = asyncio.Semaphore(concurrency)

    async def one(request: dict):
        async with gate:
            for attempt in range(retries + 1):
                try:
                    reply = await endpoint.chat(request["message"], model, sampling, system=request.get("system"))
                    return reply.text
                except RetryableError as error:
                    if attempt == retries:
                        return error
                    await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
                except RequestRejected as error:
                    return error

    return await asyncio.gather(*(one(r) for r in requests))


async def ask_endpoint(url: str, model: str | None, requests: list[dict], sampling, concurrency: int, what: str):
    """Every request answered by the server at `url`, and the model's name; any request that still fails after
    its retries stops the command before anything is written."""
    from bft.generation.endpoints.client import Endpoint

    endpoint = Endpoint(url)
    try:
        await endpoint.probe()
        endpoint.require_model(model, "the command")
        replies = await ask_all(endpoint, requests, model, sampling, concurrency)
    finally:
        await endpoint.close()
    failed = [(r["message"], reply) for r, reply in zip(requests, replies, strict=True) if isinstance(reply, Exception)]
    if failed:
        first, error = failed[0]
        raise BftError(
            f"{len(failed)} {what} failed (first: {first[:60]!r}: {error}); nothing was written, "
            "rerun when the server is well"
        )
    return replies, model or endpoint.model_id


# --------------------------------------------------------------------------------------- generate


def tagged_request(instruction: str, tags: list[str], placement: str) -> dict:
    """The user turn (and system message) the model is asked with: the tags as it was trained with them."""
    from bft.builders.bft_dataset import TAGS

    text = " ".join(TAGS[t] for t in tags)
    if not text:
        return {"message": instruction}
    if placement == "system":
        return {"message": instruction, "system": text}
    return {"message": f"{instruction}\n\n{text}"}


def parse_tags(value: str) -> list[str]:
    from bft.builders.bft_dataset import TAGS

    tags = [] if value.strip().lower() == "none" else [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tags if t not in TAGS]
    if unknown:
        raise ConfigError(f"--tags {value!r}: unknown tag(s) {unknown}; use S_a, S_w, S_a,S_w or none")
    return tags


async def _generate(args, rows: list[dict], tags: list[str]) -> list[dict]:
    from bft.generation.config import SamplingConfig

    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)
    requests = [tagged_request(r["instruction"], tags, args.tag_placement) for r in rows]
    replies, served = await ask_endpoint(args.endpoint, args.model, requests, sampling, args.max_concurrency, "answers")
    generator = args.generator or served or "model"
    return [
        {"instruction": r["instruction"], "output": reply.strip(), "generator": generator, "dataset": r["dataset"]}
        for r, reply in zip(rows, replies, strict=True)
    ]


def run_generate(args) -> int:
    from bft.training.alpaca_eval import write_json_list

    tags = parse_tags(args.tags)
    rows, name = load_instructions(args.instructions, args.split)
    rows = rows[: args.limit] if args.limit else rows
    outputs = asyncio.run(_generate(args, rows, tags))
    write_json_list(Path(args.out), outputs)
    print(f"bft eval generate: {len(outputs)} answers to {name} by {outputs[0]['generator']} -> {args.out}")
    print(f"  tags: {'+'.join(tags) or 'none'} ({args.tag_placement}); T={args.temperature}, p={args.top_p}")
    return 0


# ------------------------------------------------------------------------------------------ judge


def parse_verdict(text: str) -> str | None:
    """`a`, `b` or `tie` from the judge's last `Preferred:` line; None when there is none."""
    found = VERDICT_RE.findall(text or "")
    return found[-1].lower() if found else None


def model_preference(verdict: str | None, model_is_a: bool) -> float | None:
    """AlpacaEval's encoding of one verdict: 2 the model preferred, 1 the reference, 1.5 a tie."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 1.5
    return 2.0 if (verdict == "a") == model_is_a else 1.0


def combine(first: float | None, second: float | None) -> float | None:
    """The two orders' preferences averaged; one order alone when the other did not parse; None if neither."""
    parsed = [p for p in (first, second) if p is not None]
    return sum(parsed) / len(parsed) if parsed else None


def join_outputs(model: list[dict], reference: list[dict]) -> list[tuple[dict, dict]]:
    by_instruction = {r["instruction"]: r for r in reference}
    missing = [m["instruction"] for m in model if m["instruction"] not in by_instruction]
    if missing:
        raise ConfigError(
            f"{len(missing)} instruction(s) of --outputs have no reference output (first: {missing[0][:80]!r}); "
            "both files must answer the same instruction set"
        )
    return [(m, by_instruction[m["instruction"]]) for m in model]


async def _judge(args, pairs: list[tuple[dict, dict]]) -> tuple[list, str]:
    from bft.generation.config import SamplingConfig
    from bft.generation.method.prompts import load_template

    template = load_template(str(JUDGE_PROMPT))
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=args.max_tokens)
    requests = []
    for model, reference in pairs:  # order 1: the reference first; order 2: the model first
        for a, b in ((reference, model), (model, reference)):
            text = template.fill(instruction=model["instruction"], output_a=a["output"], output_b=b["output"])
            requests.append({"message": text})
    replies, judge = await ask_endpoint(
        args.judge, args.judge_model, requests, sampling, args.max_concurrency, "judge requests"
    )
    return replies, judge or "judge"


def annotate(pairs: list[tuple[dict, dict]], replies: list[str], annotator: str) -> list[dict]:
    """AlpacaEval annotation records from the judge's replies (two per pair, reference-first then model-first)."""
    records = []
    for index, (model, reference) in enumerate(pairs):
        first, second = replies[2 * index], replies[2 * index + 1]
        orders = [model_preference(parse_verdict(first), False), model_preference(parse_verdict(second), True)]
        records.append(
            {
                "instruction": model["instruction"],
                "output_1": reference["output"],
                "generator_1": reference.get("generator", "reference"),
                "output_2": model["output"],
                "generator_2": model.get("generator", "model"),
                "annotator": annotator,
                "preference": combine(*orders),
                "preference_by_order": orders,  # bft: [reference shown first, model shown first]
                "raw_completions": [first, second],
            }
        )
    return records


def summarize(annotations: list[dict]) -> dict:
    """AlpacaEval's figures plus the length-controlled win rate and the judge's position agreement."""
    from bft.training.winrate import length_controlled, win_rate

    preferences = [a.get("preference") for a in annotations]
    summary = win_rate(preferences)
    model_lengths = [len(a.get("output_2") or "") for a in annotations]
    reference_lengths = [len(a.get("output_1") or "") for a in annotations]
    summary.update(length_controlled(preferences, model_lengths, reference_lengths))
    summary["avg_length"] = round(sum(model_lengths) / len(annotations)) if annotations else 0
    summary["reference_avg_length"] = round(sum(reference_lengths) / len(annotations)) if annotations else 0
    orders = [a["preference_by_order"] for a in annotations if "preference_by_order" in a]
    if orders:
        both = [o for o in orders if None not in o]
        summary["unparseable_verdicts"] = sum(o.count(None) for o in orders)
        summary["orders_agree"] = round(sum(o[0] == o[1] for o in both) / len(both), 3) if both else None
    generators = {a.get("generator_2") for a in annotations}
    summary["generator"] = generators.pop() if len(generators) == 1 else sorted(map(str, generators))
    return summary


def print_summary(summary: dict) -> None:
    print(
        f"  win rate {summary['win_rate']:.2f} +/- {summary['standard_error']:.2f} (standard error); "
        f"length-controlled {summary['lc_win_rate']:.2f}"
    )
    print(
        f"  wins {summary['n_wins']}, losses {summary['n_wins_base']}, draws {summary['n_draws']} of "
        f"{summary['n_total']} ({summary['n_dropped']} without a preference); average length "
        f"{summary['avg_length']} vs reference {summary['reference_avg_length']} characters"
    )
    if "orders_agree" in summary:
        print(
            f"  judge: {summary['unparseable_verdicts']} unparseable verdicts; both orders agree on "
            f"{summary['orders_agree']} of the pairs"
        )


def run_judge(args) -> int:
    from bft.training.alpaca_eval import read_model_outputs, write_json_list

    pairs = join_outputs(read_model_outputs(Path(args.outputs)), read_model_outputs(Path(args.reference)))
    replies, annotator = asyncio.run(_judge(args, pairs))
    annotations = annotate(pairs, replies, annotator)
    summary = summarize(annotations)
    out = Path(args.out)
    write_json_list(out, annotations)
    out.with_name(out.stem + ".summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"bft eval judge: {len(pairs)} pairs x 2 orders judged by {annotator} -> {out}")
    print_summary(summary)
    return 0


def run_winrate(args) -> int:
    from bft.training.alpaca_eval import read_annotations

    annotations = read_annotations(Path(args.annotations))
    summary = summarize(annotations)
    print(f"bft eval winrate: {args.annotations}")
    print_summary(summary)
    print(json.dumps(summary))
    return 0


# ----------------------------------------------------------------------------------------- report


def dataset_rows(folder: Path) -> dict[str, list[dict]]:
    """Every pair config (and the candidates) of a generate output or build folder, as row dicts."""
    import datasets

    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    try:
        names = datasets.get_dataset_config_names(str(folder))
    except Exception as error:
        raise ConfigError(f"{folder}: not a bft output or dataset folder ({str(error).splitlines()[0]})") from None
    wanted = [n for n in ("backtranslated", "curated", "rewritten", "distilled", "seed", "rejected") if n in names]
    if not set(wanted) - {"rejected"}:
        raise ConfigError(f"{folder} has none of the configs backtranslated/curated/rewritten/distilled/seed")
    rows = {}
    for name in wanted:
        try:
            rows[name] = datasets.load_dataset(str(folder), name, split="train").to_list()
        except ValueError as error:  # `datasets` cannot read an empty config back
            if "corresponds to no data" not in str(error):
                raise
            rows[name] = []
    return rows


def run_report(args) -> int:
    from bft.builders.build import length_counter
    from bft.builders.report import data_report, format_report

    unit, count = length_counter(args.tokenizer)
    rows = dataset_rows(Path(args.dataset))
    items, name = load_instructions(args.eval_set) if args.eval_set != "none" else ([], "")
    report = data_report(rows, count, unit, items, name, args.diversity_size)
    print(format_report(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def run(args: argparse.Namespace) -> int:
    steps = {"generate": run_generate, "judge": run_judge, "winrate": run_winrate, "report": run_report}
    return steps[args.eval_command](args)
