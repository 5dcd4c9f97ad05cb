"""What the command line imports: only what the command asked for uses (every import is start-up time).

`bft --help` lists the commands without importing any of them or reading the installed packages' metadata;
`bft generate` writes its parquet outputs without pandas (0.4 s of a run the request cache answers whole).
Each check runs bft in a child Python, whose `sys.modules` is then its own.
"""

import importlib.metadata
import json
import subprocess
import sys

from tests.paths import DEMO_CORPUS, REPO
from tests.servers.tgi import TGITestServer

REPORT = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def imported_by(argv: list[str]) -> set[str]:
    """The modules a child Python holds after `bft ARGV` (its exit status 0, or `--help`'s)."""
    code = f"import sys\nfrom bft.generation.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
    child = subprocess.run(
        [sys.executable, "-c", code + REPORT], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(child.stdout.strip().splitlines()[-1]))


def test_help_imports_no_command_and_reads_no_package_metadata():
    modules = imported_by(["--help"])
    assert "importlib.metadata" not in modules
    assert not {name for name in modules if name.startswith(("bft.builders", "bft.training", "bft.viewer"))}
    assert "bft.generation.generate" not in modules


def test_version_is_still_read_when_asked():
    child = subprocess.run(
        [sys.executable, "-m", "bft.generation.cli", "--version"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0 and child.stdout.strip() == f"bft {importlib.metadata.version('bft')}"


def test_generate_writes_its_outputs_without_importing_pandas(tmp_path):
    with TGITestServer() as server:
        out = tmp_path / "out"
        argv = ["generate", str(DEMO_CORPUS), "--out", str(out), "--endpoint", server.url, "--no-progress"]
        modules = imported_by([*argv, "--limit", "3", "--no-cache"])
    assert (out / "rewritten").is_dir() or (out / "rejected").is_dir()  # outputs were written
    assert "pyarrow.parquet" in modules and "pandas" not in modules
