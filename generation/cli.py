"""The `bft` command: a thin dispatcher to subcommand modules, imported only when used.

    bft generate CORPUS --out DIR [--endpoint URL ...] [--stages ...] [--limit N] [--config FILE]
    bft build OUTDIR --out DATASETDIR [--seed FILE] [--license ID]
    bft release DATASETDIR --repo ORG/NAME --version X.Y.Z [--private] [--create-pr] [--dry-run]
    bft train RECIPE [--field value ...]
    bft serve MODEL_DIR [--port P]
    bft eval {generate,judge,winrate,report} ...
    bft view DIR [--port P]
    bft --version

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`. User errors
(`BftError`) print as one line and exit 2; so does the Hub refusing a token (401/403, with what to
check). Mistyped commands and flags get the closest known one ("did you mean"). Output is quiet by
default: the libraries' own progress bars (`datasets`, `huggingface_hub`, `transformers`) and warnings
show with `--verbose`; bft's own progress bars and messages always do.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
import warnings

from bft.cards.common import bft_version
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


class HelpfulParser(argparse.ArgumentParser):
    """argparse, with the closest known command or flag suggested for a mistyped one."""

    def error(self, message: str):
        hint = self.suggestion(message)
        super().error(f"{message}; did you mean {hint}?" if hint else message)

    def known_options(self) -> list[str]:
        options = list(self._option_string_actions)
        for parser in nested_parsers(self):
            options += (
                parser.known_options() if isinstance(parser, HelpfulParser) else list(parser._option_string_actions)
            )
        return options

    def suggestion(self, message: str) -> str | None:
        if unknown := re.search(r"unrecognized arguments: (.+)", message):
            for word in unknown.group(1).split():
                if word.startswith("--"):
                    flag = word.split("=")[0]
                    close = difflib.get_close_matches(flag, self.known_options(), n=1, cutoff=0.6)
                    if close and close[0] != flag:
                        return close[0]
        if choice := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message):
            choices = re.findall(r"'([^']*)'", choice.group(2)) or [c.strip() for c in choice.group(2).split(",")]
            close = difflib.get_close_matches(choice.group(1), choices, n=1, cutoff=0.5)
            if close:
                return close[0]
        return None


def nested_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of a command's own steps (`bft eval generate`, ...)."""
    return [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]


def quiet_libraries(verbose: bool) -> None:
    """Unless `--verbose`: no progress bars or warnings from the libraries bft calls (set before they load)."""
    if verbose:
        return
    for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):  # transformers follows the Hub's
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if not any(f[0] == "ignore" and f[2] is Warning and f[1] is None for f in warnings.filters):
        warnings.filterwarnings("ignore")  # the libraries' deprecation and user warnings; bft's errors are not warnings


def hub_refusal(error: BaseException) -> str | None:
    """What to check when the Hub refused the token (401/403), for errors raised by huggingface_hub or datasets."""
    for cause in (error, error.__cause__, error.__context__):
        response = getattr(cause, "response", None)
        status = getattr(response, "status_code", None)
        module = type(cause).__module__ if cause is not None else ""
        if status in (401, 403) and module.startswith(("huggingface_hub", "datasets", "requests", "httpx")):
            what = "is missing or invalid" if status == 401 else "has no access to this repository"
            return (
                f"the Hugging Face Hub answered {status}: the token {what}; check HF_TOKEN (or `hf auth login`), "
                "and that it may read (or, to release and push, write) the repository"
            )
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (none for `bft --help`, which lists the table).

    Commands import their floors at the top (`datasets`, TRL, plotting), so a start-up loads only what
    the command asked for uses.
    """
    parser = HelpfulParser(prog="bft", description="Instruction back-and-forth translation with the HF stack.")
    parser.add_argument("--version", action="version", version=f"bft {bft_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=HelpfulParser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if command != name:
            commands.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=module.__doc__.split("\n\n")[0])
        module.add_arguments(sub)
        for each in (sub, *nested_parsers(sub)):
            each.add_argument(
                "--verbose", action="store_true", help="Also show the libraries' progress bars and warnings"
            )
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    quiet_libraries("--verbose" in argv)  # before the command's module imports the libraries
    args = build_parser(command).parse_args(argv)
    try:
        return args._module.run(args)
    except BftError as error:
        refusal = hub_refusal(error)  # a Hub refusal bft turned into its own error
        print(f"bft {args.command}: error: {error}" + (f"; {refusal}" if refusal else ""), file=sys.stderr)
        return 2
    except Exception as error:
        refusal = hub_refusal(error)
        if refusal is None:
            raise
        print(f"bft {args.command}: error: {refusal} ({type(error).__name__}: {str(error).splitlines()[0]})",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print(f"bft {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
