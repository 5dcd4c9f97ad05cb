"""Running `bft` for the slow real-model tests so that a slow machine gives a clear failure, not a hang.

A command that runs past its deadline is killed with its whole process group (the servers it started
included) and the test fails saying how far each stage got (the journals' line counts), so "too slow
here" is told apart from "broken".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def progress(out: Path | None) -> str:
    """Documents journaled per stage under `out` (what a killed run had finished)."""
    if out is None or not (out / ".bft" / "journal").is_dir():
        return "no journal yet"
    counts = []
    for journal in sorted((out / ".bft" / "journal").glob("*.jsonl")):
        counts.append(f"{journal.stem} {sum(1 for _ in journal.open(encoding='utf-8'))}")
    return ", ".join(counts) or "no journal yet"


def run_bft(*args, timeout: float, out: Path | None = None) -> subprocess.CompletedProcess:
    """`bft ARGS` in its own process group; past `timeout` seconds, all of it is killed and the test fails."""
    command = [sys.executable, "-m", "bft.generation.cli", *map(str, args)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"bft {args[0]} did not finish in {timeout:.0f} s on this machine (is it busy?); it had journaled: "
            f"{progress(out)}\n{stderr[-2000:]}"
        )
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
