"""The shape of bft's code, in figures: modules, import arrows, circles, upward imports, long functions,
and how often the run configuration re-enters one module on its way through `bft generate`.

    .venv/bin/python benchmarks/architecture.py            # this checkout
    .venv/bin/python benchmarks/architecture.py --root ../old-checkout --static   # another tree, imports only

The static figures come from the source's imports (`tests/import_graph.py`, what `tests/test_layers.py`
checks). The trace runs `bft generate` over the shipped demo corpus against the TGI test server with
`sys.setprofile`, records the module of every call that receives the run's `GenerateConfig` (or one of
its parts) as an argument, and counts, per module, how many separate times the configuration enters it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.* (the import graph and the test server)

import tests.import_graph as graph  # noqa: E402


def static_figures(root: Path) -> None:
    graph.REPO = root
    modules = graph.read_modules()
    functions = sorted(((n, m.name, f) for m in modules.values() for f, n in m.functions), reverse=True)
    inner = [i for m in modules.values() for i in m.imports if not i.at_top and i.importer != graph.CLI]
    print(f"tree: {root}")
    print(f"  lines in bft's modules:        {graph.lines_of_code(modules)}")
    print(f"  modules:                       {len(modules)}")
    print(f"  import arrows (bft -> bft):    {len(graph.arrows(modules))}")
    print(f"  longest import chain:          {graph.depth(modules)} modules")
    print(f"  import circles:                {len(graph.cycles(modules))} {graph.cycles(modules) or ''}")
    print(f"  upward imports:                {len(graph.upward(modules))} {graph.upward(modules) or ''}")
    print(f"  bft imports inside functions:  {len(inner)}")
    print("  longest functions:             " + ", ".join(f"{m}.{f} {n}" for n, m, f in functions[:5]))


def config_trace() -> None:
    from bft.generation import config as config_module
    from bft.generation.cli import main
    from tests.servers.tgi import TGITestServer

    corpus = REPO / "generation" / "demo" / "corpus.jsonl"
    seen: list[str] = []
    config_types = tuple(
        value
        for value in vars(config_module).values()
        if isinstance(value, type) and value.__module__ == config_module.__name__
    )

    def profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        arguments = [frame.f_locals.get(name) for name in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]]
        if any(isinstance(a, config_types) for a in arguments):
            module = frame.f_globals.get("__name__", "?")
            if (
                module.startswith("bft.")
                and module != config_module.__name__
                and not module.startswith(config_module.__name__ + ".")
            ):
                seen.append(module)

    with tempfile.TemporaryDirectory() as out, TGITestServer() as server:
        sys.setprofile(profile)
        try:
            main(
                ["generate", str(corpus), "--out", f"{out}/o", "--endpoint", server.url, "--no-progress", "--no-cache"]
            )
        finally:
            sys.setprofile(None)
    entries = Counter(module for i, module in enumerate(seen) if i == 0 or seen[i - 1] != module)
    print("\nrun configuration through `bft generate` (demo corpus, TGI test server):")
    print(f"  calls that receive it: {len(seen)} in {len(entries)} modules")
    for module, count in entries.most_common():
        print(f"  enters {module:<40} {count} time(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="The tree to read (default: this checkout)")
    parser.add_argument("--static", action="store_true", help="Only the import figures (no `bft generate` run)")
    args = parser.parse_args()
    static_figures(args.root.resolve())
    if not args.static:
        config_trace()


if __name__ == "__main__":
    main()
