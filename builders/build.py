"""`bft build`: package a `bft generate` output as a dataset folder with a full dataset card.

    bft build OUTDIR --out DATASETDIR [--seed seed.jsonl] [--sft-from rewritten] [--test-fraction 0.05]
        [--license odc-by] [--source-dataset allenai/dolma] [--redact-pii] [--name "My data"] [--tokenizer ID]

The command: its arguments, the call to `builders/assemble.py`'s `build` (which says what a build
writes and checks) and what it prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bft.builders.analyses import add_analysis_arguments, analyses_from
from bft.builders.assemble import build
from bft.builders.checks import Findings
from bft.generation.method.tags import TAG_PLACEMENTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="A `bft generate` output folder")
    parser.add_argument("--out", required=True, help="The dataset folder to write (replaced if it exists)")
    parser.add_argument(
        "--seed", help="Seed pairs (JSON lines with instruction, response) for the seed and sft configs"
    )
    parser.add_argument(
        "--sft-from",
        default="rewritten",
        choices=("rewritten", "curated", "distilled"),
        help="Web config tagged S_w in sft",
    )
    parser.add_argument(
        "--tag-placement",
        default="user_end",
        choices=TAG_PLACEMENTS,
        help="Where sft rows carry the S_a/S_w tag: end of the user turn (default) or a system message",
    )
    parser.add_argument(
        "--test-fraction", type=float, default=0.0, help="Share of documents in a test split (default: none)"
    )
    parser.add_argument(
        "--license", help="License id of the data (default: odc-by for Dolma documents, else required at release)"
    )
    parser.add_argument("--license-name", help="With --license other: the license's name (the Hub's license_name)")
    parser.add_argument("--license-link", help="With --license other: where its text is (the Hub's license_link)")
    parser.add_argument(
        "--source-dataset", action="append", default=None, help="Hub id of the source corpus (repeatable)"
    )
    parser.add_argument(
        "--redact-pii", action="store_true", help="Replace e-mail addresses, phone numbers and IPs in the text"
    )
    parser.add_argument("--name", help="Pretty name shown on the card")
    parser.add_argument("--tokenizer", help="Tokenizer (Hub id or folder) to report lengths in tokens (default: words)")
    parser.add_argument(
        "--eval-set",
        default="bft",
        help="Instructions the data report checks for contamination: bft (shipped), a file, a Hub id, or none",
    )

    add_analysis_arguments(parser)


def run(args: argparse.Namespace) -> int:
    facts = build(
        Path(args.output),
        Path(args.out),
        seed_file=args.seed,
        sft_source=args.sft_from,
        test_fraction=args.test_fraction,
        license=args.license,
        source_datasets=args.source_dataset or [],
        redact=args.redact_pii,
        pretty_name=args.name,
        tokenizer=args.tokenizer,
        tag_placement=args.tag_placement,
        eval_set=args.eval_set,
        analyses=analyses_from(args),
        license_name=args.license_name,
        license_link=args.license_link,
    )
    print(f"bft build: wrote {Path(args.out).resolve()}")
    for row in facts.config_rows:
        print(f"  {row['name']:<15} {row['split']:<6} {row['rows']:>7} rows")
    for empty in facts.empty_configs:
        print(f"  empty, not written: {empty}")
    for problem in Findings.from_dict(facts.findings).blocking:
        print(f"  release blocker: {problem}")
    print(
        "Load it with:\n  from datasets import load_dataset; "
        f'ds = load_dataset("{Path(args.out).resolve()}", "{facts.main_config}")'
    )
    return 0
