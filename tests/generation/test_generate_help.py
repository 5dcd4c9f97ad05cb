"""`bft generate --help` says what CORPUS can be and names the shipped configs."""

import subprocess
import sys

from tests.paths import REPO


def generate_help() -> str:
    command = [sys.executable, "-m", "bft.generation.cli", "generate", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return " ".join(result.stdout.split())  # argparse wraps lines


def test_generate_help_names_every_kind_of_corpus_and_every_shipped_config():
    text = generate_help()
    corpus = text[text.index("corpus A JSON-lines") : text.index("options:")]
    for kind in (".jsonl", ".json.gz", ".jsonl.gz", ".zst", ".bz2", ".parquet", "HTML", ".html", "WARC", ".warc.gz"):
        assert kind in corpus, kind
    assert "a folder of them" in corpus and "Hub dataset id" in corpus
    shipped = sorted(path.stem for path in (REPO / "generation" / "configs").glob("*.yaml"))
    assert len(shipped) >= 2
    assert f"a shipped one by name: {', '.join(shipped)} " in text
