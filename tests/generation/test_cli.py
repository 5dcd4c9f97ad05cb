"""The `bft` command line: version, "did you mean", quiet libraries unless --verbose."""

import os
import subprocess
import sys

import pytest

from bft.generation.cli import main
from tests.paths import DEMO_CORPUS
from tests.servers.tgi import TGITestServer


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == "bft 0.1.0"


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["genrate", "x"], "did you mean generate?"),
        (["generate", "x", "--out", "o", "--endpont", "http://a"], "did you mean --endpoint?"),
        (["build", "x", "--out", "o", "--licence", "mit"], "did you mean --license?"),
        (["eval", "reprot", "x"], "did you mean report?"),
    ],
)
def test_a_mistyped_command_or_flag_gets_the_closest_known_one(argv, hint, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2 and hint in capsys.readouterr().err


def test_shipped_configs_and_recipes_go_by_name_with_a_suggestion(tmp_path, capsys):
    assert main(["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "o"), "--config", "bfat"]) == 2
    err = capsys.readouterr().err
    assert "config 'bfat': no such file, and not a shipped config (baft, humpback); did you mean 'baft'?" in err
    assert main(["train", "sede"]) == 2
    assert "did you mean 'seed'?" in capsys.readouterr().err
    with TGITestServer() as server:  # `--config baft` is the shipped file
        args = ["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "b"), "--config", "baft", "--limit", "1"]
        assert main([*args, "--endpoint", server.url, "--dry-run"]) == 0
    assert "would enter the first stage" in capsys.readouterr().out


def test_the_libraries_are_quiet_unless_verbose(tmp_path):
    out = tmp_path / "o"
    with TGITestServer() as server:
        args = ["generate", str(DEMO_CORPUS), "--out", str(out), "--endpoint", server.url, "--limit", "3"]
        assert main([*args, "--no-progress"]) == 0
    env = {k: v for k, v in os.environ.items() if "PROGRESS" not in k and "VERBOSITY" not in k}
    command = [sys.executable, "-m", "bft.generation.cli", "eval", "report", str(out), "--eval-set", "none"]
    runs = []
    for extra, cache in (([], "quiet"), (["--verbose"], "verbose")):  # each its own cache: both read the files
        env["HF_DATASETS_CACHE"] = str(tmp_path / cache)
        runs.append(subprocess.run([*command, *extra], capture_output=True, text=True, env=env, timeout=300))
    quiet, verbose = runs
    assert quiet.returncode == verbose.returncode == 0 and quiet.stdout == verbose.stdout
    assert "Generating train split" in verbose.stderr  # `datasets` reading the parquet files
    assert "Generating train split" not in quiet.stderr and quiet.stderr.strip() == ""
