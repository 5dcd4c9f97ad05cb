"""`send: batch` with `api: vllm` through a whole `bft generate` run: the stage's request file goes to the real
vLLM's offline `run_batch` (the CPU build in `.venv-vllm`, as `test_real_vllm.py` uses), and its replies come
back through the same parsing, journals and provenance as live ones. No server is started or probed."""

import json

import pytest
import yaml

from bft.generation.cli import main
from bft.generation.endpoints.embedded import converted_checkpoint
from bft.generation.layout import batch_ledger, config_file, read_rows
from tests.paths import DEMO_CORPUS
from tests.servers.real_vllm import PYTHON

DOCUMENTS = 3


@pytest.mark.slow
def test_a_stage_sent_through_vllms_run_batch_journals_every_document_with_its_batch(tmp_path, monkeypatch):
    if not PYTHON.exists():
        pytest.fail(f"the real vLLM is not installed at {PYTHON}: run `make vllm` (make test does it)")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # run_batch inherits bft's environment
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "stages": ["backtranslate"],
                "backtranslate": {
                    "send": "batch",
                    "batch": {
                        "api": "vllm",
                        "python": str(PYTHON),
                        "model_path": str(converted_checkpoint()),
                        "args": ["--dtype", "float32", "--max-model-len", "4096"],
                        "poll_interval": 1.0,
                        "poll_max": 5.0,
                    },
                    "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 48},
                },
            }
        )
    )
    out = tmp_path / "out"
    args = ["generate", str(DEMO_CORPUS), "--out", str(out), "--config", str(config), "--limit", str(DOCUMENTS)]
    assert main([*args, "--no-progress", "--no-cache"]) in (0, 1)  # 1: a 135M model's instructions all rejected

    stats = json.loads((out / "stats.json").read_text())["backtranslate"]
    assert stats["entered"] == DOCUMENTS and stats["kept"] + stats["rejected"] == DOCUMENTS
    assert stats["batches"]["submitted"] == 1 and stats["batches"]["items"] == DOCUMENTS
    ledger = [json.loads(line) for line in batch_ledger(out, "backtranslate").read_text().splitlines()]
    submitted = [line for line in ledger if "submitted" in line]
    assert len(submitted) == 1 and len(submitted[0]["custom_ids"]) == DOCUMENTS
    rows = [row for config in ("backtranslated", "rejected") for row in read_rows(config_file(out, config))]
    asked = [row for row in rows if row["provenance"] and row["provenance"][-1]["raw_output"]]
    assert asked, "no reply of run_batch reached the journal"
    for row in asked:  # every reply says it came by that batch, and what the model wrote
        assert row["provenance"][-1]["batch"] == submitted[0]["submitted"]
        assert row["provenance"][-1]["completion_tokens"] > 0
