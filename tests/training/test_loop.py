"""One Humpback iteration with models bft trains and serves itself, on CPU (slow; part of CI).

backward model M_yx (reversed seed pairs) -> `bft serve` -> `bft generate --stages backtranslate` -> seed
model M_0 (seed pairs, S_a) -> `bft generate --stages curate` -> `bft build` -> M_1 trained on seed (S_a) +
the curated pairs (S_w) -> `bft serve` -> the same pool re-scored by M_1. Every step goes through the `bft`
command line, as a user runs it.

Each model is SmolLM2-135M-Instruct plus one LoRA step on its data: the tiny random model of the tiny
recipes only writes newlines, and a 135M model needs the demo's prompting (raw completions with answer
prefills, `generation/demo/demo.yaml`) to write instructions and scores that parse.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset

from bft.generation.endpoints.embedded import free_port
from tests.paths import DEMO_CORPUS, REPO
from tests.slow import run_bft

SEED = REPO / "training" / "data" / "seed.jsonl"
LORA_STEP = """\
recipe: loop/{name}
role: {role}
model_name_or_path: embedded:smollm2-135m-instruct
datasets:
{datasets}
use_peft: true
lora_r: 4
lora_target_modules: [q_proj, v_proj]
learning_rate: 1.0e-5
lr_scheduler_type: polynomial
lr_scheduler_kwargs: {{lr_end: 9.0e-6, power: 1.0}}
weight_decay: 0.1
dropout: 0.1
per_device_train_batch_size: 8
max_steps: 1
max_length: 256
completion_only_loss: true
logging_steps: 1
save_strategy: "no"
report_to: none
"""
ROUND = """\
backtranslate:
  mode: raw
  raw_format: chat_template
  model: {myx}
  tokenizer: {myx}
  prefill: "The most likely question to which the text below would be a great answer is:\\n\\n1."
  sampling: {{temperature: 0.7, top_p: 0.9, max_tokens: 48, stop: ["\\n"], seed: 0}}
curate:
  mode: raw
  raw_format: chat_template
  model: {scorer}
  tokenizer: {scorer}
  prefill: "Score:"
  min_score: 4
  sampling: {{temperature: 0.0, top_p: 1.0, max_tokens: 4, stop: ["\\n", "."], seed: 0}}
"""


def bft(*args, timeout=900) -> str:
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    result = run_bft(*args, timeout=timeout, out=out)
    assert result.returncode == 0, f"bft {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


class Served:
    """`bft serve MODEL_DIR` in the background, as a user starts it in another shell."""

    def __init__(self, model_dir: Path, log: Path):
        self.port = free_port()
        command = [sys.executable, "-m", "bft.generation.cli", "serve", str(model_dir), "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--log", str(log)], stdout=subprocess.PIPE, text=True, start_new_session=True
        )

    def __enter__(self):
        line = self.process.stdout.readline()  # printed once the model answers
        assert line.startswith("bft serve:"), line
        self.model = line.split("(model name: ")[1].rstrip(")\n")
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)


def stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


@pytest.mark.slow
def test_one_humpback_iteration_with_models_bft_trains_and_serves(tmp_path):
    # 1. the backward model M_yx on reversed seed pairs, and the seed model M_0 on seed pairs tagged S_a
    for name, role, source in (("myx", "backward", "reverse: true"), ("m0", "forward", "tag: S_a")):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(LORA_STEP.format(name=name, role=role, datasets=f"  - path: {SEED}\n    {source}"))
        bft("train", recipe, "--output_dir", tmp_path / name)
    myx, m0, m1 = (tmp_path / name / "merged" for name in ("myx", "m0", "m1"))
    (tmp_path / "round1.yaml").write_text(ROUND.format(myx=myx, scorer=m0))
    (tmp_path / "round2.yaml").write_text(ROUND.format(myx=myx, scorer=m1))
    round1 = ["generate", DEMO_CORPUS, "--out", tmp_path / "round1", "--limit", 8, "--config", tmp_path / "round1.yaml"]

    # 2. M_yx writes an instruction for each document; one model served at a time, as on one GPU
    with Served(tmp_path / "myx", tmp_path / "myx.log") as served:
        assert served.model == str(myx)  # a LoRA run is served through its merged copy
        bft(*round1, "--stages", "backtranslate", "--endpoint", served.url, "--no-progress")
    backtranslated = stats(tmp_path / "round1")["backtranslate"]
    assert backtranslated["entered"] == 8 == backtranslated["kept"] + backtranslated["rejected"]
    assert backtranslated["kept"] > 0

    # 3. M_0 scores every pair: the same run grown by a stage, resumed (no instruction is asked again)
    with Served(tmp_path / "m0", tmp_path / "m0.log") as served:
        bft(*round1, "--stages", "backtranslate,curate", "--endpoint", served.url, "--no-progress")
    curated = stats(tmp_path / "round1")["curate"]
    assert stats(tmp_path / "round1")["backtranslate"]["requests"] == 0
    assert curated["entered"] == backtranslated["kept"] == curated["kept"] + curated["rejected"]
    assert curated["kept"] > 0, "M_0 kept no pair; the loop has nothing to train M_1 on"

    # 4. M_1 on seed (S_a) + the curated pairs (S_w), from the built dataset
    bft("build", tmp_path / "round1", "--out", tmp_path / "ds1", "--seed", SEED, "--sft-from", "curated",
        "--license", "odc-by")  # fmt: skip
    recipe = tmp_path / "m1.yaml"
    recipe.write_text(
        LORA_STEP.format(name="m1", role="forward", datasets=f"  - path: {tmp_path / 'ds1'}\n    name: sft")
    )
    bft("train", recipe, "--output_dir", tmp_path / "m1")
    facts = json.loads((tmp_path / "m1" / "bft_training.json").read_text())
    assert facts["sources"][0]["used"] == 24 + curated["kept"]  # the seed and every curated pair
    sft = load_dataset(str(tmp_path / "ds1"), "sft", split="train")
    assert sorted(set(sft["tag"])) == ["S_a", "S_w"]

    # 5. M_1 re-scores the same pool: no instruction is generated again
    with Served(tmp_path / "m1", tmp_path / "m1.log") as served:
        bft(
            "generate", tmp_path / "round1", "--out", tmp_path / "round2", "--stages", "curate",
            "--endpoint", served.url, "--model", served.model, "--config", tmp_path / "round2.yaml", "--no-progress",
        )  # fmt: skip
    rescored = stats(tmp_path / "round2")["curate"]
    assert "backtranslate" not in stats(tmp_path / "round2")
    assert rescored["entered"] == backtranslated["kept"] == rescored["kept"] + rescored["rejected"]
    round1_scores = {r["id"]: r["score"] for r in load_dataset(str(tmp_path / "round1"), "curated", split="train")}
    rows = load_dataset(str(tmp_path / "round2"), "curated", split="train").to_list()
    rows += [r for r in load_dataset(str(tmp_path / "round2"), "rejected", split="train") if r["stage"] == "curate"]
    assert len(rows) == backtranslated["kept"]
    for row in rows:
        if row["id"] in round1_scores:  # M_0's score stands beside M_1's
            assert f"previous_score:{round1_scores[row['id']]}" in row["flags"]
        models = [p["model_id"] for p in row["provenance"]]
        # who wrote the instruction, who scored it last (`transformers serve` adds the revision: PATH@main)
        assert models[0].startswith(str(myx)) and models[-1].startswith(str(m1))
