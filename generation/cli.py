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
check), and a package of an optional extra that is not installed ("bft build needs matplotlib: pip install
'bft[build]'"): every command's `--help` works with the base install. Mistyped commands and flags get the
closest known one ("did you mean"); a flag's prefix is not taken for the flag. Output is quiet by
default: the libraries' own progress bars (`datasets`, `huggingface_hub`, `transformers`) and warnings
show with `--verbose`; bft's own progress bars and messages always do.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import os
import re
import sys
import warnings

from bft.generation.errors import BftError

SUBCOMMANDS = {
    "generate": ("bft.generation.generate", "Backtranslate, curate and rewrite a corpus into a dataset."),
    "seed": ("bft.builders.seed", "Build the seed set (and reversed pairs) from Open Assistant or pairs."),
    "build": ("bft.builders.build", "Package a generate output as a dataset folder with its card."),
    "release": ("bft.builders.release", "Push a built dataset to the Hub as a tagged version."),
    "view": ("bft.viewer.command", "Browse a generate output or a built dataset in a local web page."),
    "train": ("bft.training.train", "Fine-tune a backward, seed or curated model with TRL from a recipe."),
    "serve": ("bft.training.serve", "Serve a trained model folder locally (transformers serve) for bft generate."),
    "eval": ("bft.training.evaluate", "Answer an instruction set, judge against a reference, win rates, data report."),
    "cache": (
        "bft.generation.cache",
        "Show or shrink the request cache that lets an edited run re-ask only what changed.",
    ),
}


class HelpfulParser(argparse.ArgumentParser):
    """argparse, with the closest known command or flag suggested for a mistyped one, and no flag taken from
    its prefix (`--stage` is not `--stages`: a typo must not quietly become another setting)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

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


class VersionAction(argparse.Action):
    """`--version`: bft's installed version, looked up only when asked. Reading it imports
    `importlib.metadata`, half of what `bft --help` took to start, and reads the installed packages' metadata."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace, values, option_string=None):
        from bft.cards.common import bft_version  # (here: see the class docstring)

        print(f"bft {bft_version()}")  # on stdout, as argparse's own version action
        parser.exit()


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
    # the Hub client's and `datasets`' logged warnings: their retry lines ("Retrying in 1s [Retry 1/5].") among them
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
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


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The bft extra (setup.cfg's, read from bft's installed metadata) that installs the package `error` did not
    find, e.g. `build` for matplotlib; None when no extra names it (then it is a bug, not a missing option)."""
    import importlib.metadata  # (here: only a missing package reads the metadata; see VersionAction)

    package = (error.name or "").partition(".")[0]
    if package and importlib.util.find_spec(package) is not None:  # installed: a module inside it moved (a bug)
        return None
    try:
        requirements = importlib.metadata.requires("bft") or []
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return None
    if not package:
        return None
    known = {package, *importlib.metadata.packages_distributions().get(package, [])}  # mauve -> mauve-text
    wanted = {re.sub(r"[-_.]+", "-", name).lower() for name in known}
    for requirement in requirements:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]*", requirement).group()).lower()
        extra = re.search(r"extra == \"([^\"]+)\"", requirement)
        if extra and extra.group(1) not in ("all", "test") and (name in wanted or name.startswith(f"{package}-")):
            return extra.group(1)
    return None


def missing_package(command: str, error: ModuleNotFoundError) -> int:
    """One line for an optional package that is not installed (`bft build needs matplotlib: pip install
    'bft[build]'`), exit status 2; any other missing module is a bug, raised as it is."""
    extra = missing_extra(error)
    if extra is None:
        raise error
    print(f"bft {command} needs {error.name.partition('.')[0]}: pip install 'bft[{extra}]'", file=sys.stderr)
    return 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (none for `bft --help`, which lists the table).

    Commands import their floors at the top (`datasets`, TRL, plotting), so a start-up loads only what
    the command asked for uses.
    """
    parser = HelpfulParser(prog="bft", description="Instruction back-and-forth translation with the HF stack.")
    parser.add_argument("--version", action=VersionAction, help="show bft's version and exit")
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
    try:
        parser = build_parser(command)
    except ModuleNotFoundError as error:  # only `command`'s module is imported
        return missing_package(command, error)
    args = parser.parse_args(argv)
    try:
        return args._module.run(args)
    except ModuleNotFoundError as error:
        return missing_package(args.command, error)
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
