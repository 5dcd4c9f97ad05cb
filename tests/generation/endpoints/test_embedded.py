"""The real thing: the demo run on the embedded SmolLM2-135M-Instruct behind `transformers serve`.

Slow (a few minutes on 2 CPU cores, plus a one-time GGUF conversion into bft's cache), and part of CI.
"""

import json
import subprocess
import sys

import pytest
from datasets import load_dataset

from tests.paths import DEMO_CONFIG, DEMO_CORPUS


@pytest.mark.slow
def test_demo_on_the_embedded_model_produces_a_loadable_non_empty_rewritten_dataset(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "bft.generation.cli", "generate", str(DEMO_CORPUS), "--out", str(out)]
    result = subprocess.run(
        [*command, "--config", str(DEMO_CONFIG), "--no-progress"], capture_output=True, text=True, timeout=1500
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "30 documents in" in result.stdout and 'load_dataset("' in result.stdout

    stats = json.loads((out / "stats.json").read_text())
    for name in ("prepare", "backtranslate", "curate", "rewrite"):
        assert stats[name]["entered"] == stats[name]["kept"] + stats[name]["rejected"], name
    assert stats["backtranslate"]["entered"] == 30
    assert stats["curate"]["entered"] == stats["backtranslate"]["kept"]
    assert stats["rewrite"]["entered"] == stats["curate"]["kept"]

    rewritten = load_dataset(str(out), "rewritten", split="train")
    assert len(rewritten) == stats["rewrite"]["kept"] > 0
    row = rewritten[0]
    assert row["instruction"] and row["response"] and 4 <= row["score"] <= 5
    rewrite = row["provenance"][-1]
    assert rewrite["mode"] == "raw" and rewrite["prefill"] == "[RES]" and rewrite["model_id"]
    rejected = load_dataset(str(out), "rejected", split="train")
    assert len(rejected) == sum(stats[s]["rejected"] for s in ("prepare", "backtranslate", "curate", "rewrite"))
    assert all(r["reason"] for r in rejected)
    assert "Settings that differ from the papers" in (out / "README.md").read_text()
