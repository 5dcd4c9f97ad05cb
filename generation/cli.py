"""The `bft` command: a thin dispatcher to subcommand modules, imported only when used.

    bft generate CORPUS --out DIR [--endpoint URL ...] [--stages ...] [--limit N] [--config FILE]
    bft build OUTDIR --out DATASETDIR [--seed FILE] [--license ID]
    bft release DATASETDIR --repo ORG/NAME --version X.Y.Z [--private] [--create-pr] [--dry-run]
    bft train RECIPE [--field value ...]
    bft serve MODEL_DIR [--port P]
    bft eval {generate,judge,winrate,report} ...

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`. User errors
(`BftError`) print as one line and exit 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bft.generation.errors import BftError

SUBCOMMANDS = {
    "generate": ("bft.generation.generate", "Backtranslate, curate and rewrite a corpus into a dataset."),
    "seed": ("bft.builders.seed", "Build the seed set (and reversed pairs) from Open Assistant or pairs."),
    "build": ("bft.builders.build", "Package a generate output as a dataset folder with its card."),
    "release": ("bft.builders.release", "Push a built dataset to the Hub as a tagged version."),
    "view": ("bft.builders.view", "Browse a generate output or a built dataset in a local web page."),
    "train": ("bft.training.train", "Fine-tune a backward, seed or curated model with TRL from a recipe."),
    "serve": ("bft.training.serve", "Serve a trained model folder locally (transformers serve) for bft generate."),
    "eval": ("bft.training.evaluate", "Answer an instruction set, judge against a reference, win rates, data report."),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (none for `bft --help`, which lists the table).

    Commands import their floors at the top (`datasets`, TRL, plotting), so a start-up loads only what
    the command asked for uses.
    """
    parser = argparse.ArgumentParser(
        prog="bft", description="Instruction back-and-forth translation with the HF stack."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if command != name:
            commands.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=module.__doc__.split("\n\n")[0])
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        return args._module.run(args)
    except BftError as error:
        print(f"bft {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bft {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
