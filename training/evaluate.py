"""`bft eval`: does the data make better models? Both papers answer with AlpacaEval win rates.

    bft eval generate --endpoint URL [--instructions bft] --out model_outputs.json [--tags S_a,S_w]
    bft eval judge --outputs model_outputs.json --reference reference_outputs.json --judge URL --out annotations.json
    bft eval winrate annotations.json            # AlpacaEval's figures from any AlpacaEval annotations file
    bft eval report OUTDIR [--tokenizer ID] [--eval-set bft] [--mauve A,B] [--tagger URL] [--out report.json]

- `generate`: a served model (`bft serve`, TGI, vLLM, ...) answers an instruction set with the papers'
  decoding (T=0.7, p=0.9) and inference tags: Humpback found S_a and S_w together best (HB Table 8), so
  that is the default; `--tags S_a,S_w_if_needed` asks with BAFT's second suffix ("Answer with knowledge
  from web search if needed."), `--tags S_a` or `--tags none` for the others. Output: AlpacaEval's
  `model_outputs.json`. The set is bft's own (`bft`: 60 instructions written for the project,
  `builders/data/eval_instructions.jsonl`), a JSON/JSONL/Parquet file, or a Hub dataset (`ORG/NAME`).
- `judge`: a judge model compares each model output with the reference output for the same instruction,
  with bft's judge prompt (`training/prompts/judge.txt`), **twice, in both orders**; the two verdicts are
  averaged, so a judge that always picks one position ends at a tie. Ties are allowed. Output:
  AlpacaEval's `annotations.json` (`output_1` the reference, `output_2` the model) and a summary: win
  rate with its standard error, wins/losses/draws, average lengths and a length-controlled win rate
  (`training/winrate.py` documents the method).
- `winrate`: the same figures from an annotations file, bft's or AlpacaEval's own.
- `report`: the data report of a generated or built dataset (`builders/report.py`), and with
  `--mauve rewritten,../distilled-out:distilled` BAFT's embedding-space comparison of two configs'
  responses (`builders/mauve_comparison.py`); with `--tagger URL` InsTag-style tag counts per config
  (`builders/instag_counts.py`).

This module is the command (arguments, steps, printing); answering is `training/answers.py`, judging
`training/judge.py`, the figures `training/winrate.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bft.builders.analyses import add_analyses, add_analysis_arguments, analyses_from
from bft.builders.instructions import load_instructions
from bft.builders.report import data_report, dataset_rows, format_report, length_counter
from bft.generation.config import SamplingConfig
from bft.generation.errors import BftError
from bft.training.alpaca_eval import read_annotations, read_model_outputs, write_json_list
from bft.training.answers import answer_all, parse_tags
from bft.training.judge import annotate, join_outputs, judge_pairs
from bft.training.winrate import summarize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="eval_command", required=True, metavar="STEP")
    gen = commands.add_parser("generate", help="A served model answers an instruction set (AlpacaEval outputs)")
    gen.add_argument("--endpoint", required=True, help="The model's server URL")
    gen.add_argument("--instructions", default="bft", help="bft (60 shipped), a JSON/JSONL/Parquet file, or ORG/NAME")
    gen.add_argument("--split", default="train", help="Hub instruction sets: split (default: train)")
    gen.add_argument("--out", required=True, help="model_outputs.json to write (AlpacaEval format)")
    gen.add_argument(
        "--tags",
        default="S_a,S_w",
        help="Inference tags: S_a,S_w (default, HB's best); S_a,S_w_if_needed (BAFT's second suffix); S_a; none",
    )
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
    add_analysis_arguments(report)
    report.add_argument("--out", help="Also write the report as JSON here")


def run_generate(args) -> int:
    tags = parse_tags(args.tags)
    rows, name = load_instructions(args.instructions, args.split)
    rows = rows[: args.limit] if args.limit else rows
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens)
    outputs = asyncio.run(
        answer_all(
            args.endpoint, args.model, rows, tags, args.tag_placement, sampling, args.max_concurrency, args.generator
        )
    )
    empty = [o["instruction"] for o in outputs if not o["output"]]
    if empty:
        raise BftError(
            f"{len(empty)} of {len(outputs)} answers are empty (first: {empty[0][:60]!r}): the server returned no "
            f"text (check --max-tokens and the model); nothing was written to {args.out}"
        )
    write_json_list(Path(args.out), outputs)
    print(f"bft eval generate: {len(outputs)} answers to {name} by {outputs[0]['generator']} -> {args.out}")
    print(f"  tags: {'+'.join(tags) or 'none'} ({args.tag_placement}); T={args.temperature}, p={args.top_p}")
    return 0


def print_summary(summary: dict) -> None:
    print(
        f"  win rate {summary['win_rate']:.2f} +/- {summary['standard_error']:.2f} (standard error); "
        f"length-controlled (bft's simplified fit, not AlpacaEval 2's GLM) {summary['lc_win_rate']:.2f}"
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
    pairs = join_outputs(read_model_outputs(Path(args.outputs)), read_model_outputs(Path(args.reference)))
    replies, annotator = asyncio.run(
        judge_pairs(args.judge, args.judge_model, pairs, args.max_tokens, args.max_concurrency)
    )
    annotations = annotate(pairs, replies, annotator)
    summary = summarize(annotations)
    out = Path(args.out)
    write_json_list(out, annotations)
    out.with_name(out.stem + ".summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"bft eval judge: {len(pairs)} pairs x 2 orders judged by {annotator} -> {out}")
    print_summary(summary)
    unjudged = [a["instruction"] for a in annotations if a["preference"] is None]
    if unjudged:
        print(
            f"bft eval judge: error: the judge gave no readable verdict, in either order, for {len(unjudged)} of "
            f"{len(pairs)} pairs (first: {unjudged[0][:60]!r}); they are left out of the win rate. Check the judge "
            "model and --max-tokens (its replies are in raw_completions)",
            file=sys.stderr,
        )
        return 1
    return 0


def run_winrate(args) -> int:
    annotations = read_annotations(Path(args.annotations))
    summary = summarize(annotations)
    print(f"bft eval winrate: {args.annotations}")
    print_summary(summary)
    print(json.dumps(summary))
    return 0


def run_report(args) -> int:
    unit, count = length_counter(args.tokenizer)
    rows = dataset_rows(Path(args.dataset))
    items, name = load_instructions(args.eval_set) if args.eval_set != "none" else ([], "")
    report = data_report(rows, count, unit, items, name, args.diversity_size)
    add_analyses(report, rows, analyses_from(args))
    print(format_report(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def run(args: argparse.Namespace) -> int:
    steps = {"generate": run_generate, "judge": run_judge, "winrate": run_winrate, "report": run_report}
    return steps[args.eval_command](args)
