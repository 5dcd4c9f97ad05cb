"""`bft train` on the tiny recipes: real TRL, a real (3.2M-parameter) model, on CPU, in seconds."""

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from bft.generation.cli import main
from bft.generation.errors import ConfigError
from bft.training.serve import servable_dir
from bft.training.train import FACTS_FILE, prepare
from tests.paths import REPO

# Humpback sec. 2.3, pinned here literally: the tags the code defines must be these sentences
SEED_TAG = "Answer in the style of an AI Assistant."  # S_a
WEB_TAG = "Answer with knowledge from web search."  # S_w

HUB_MODEL = "bft-org/tiny-m0"


def train(output, recipe="tiny/seed", *flags) -> int:
    return main(["train", recipe, "--output_dir", str(output), *flags])


def logged_steps(checkpoint) -> dict[int, dict]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return {h["step"]: h for h in state["log_history"] if "loss" in h}


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory):
    """tiny/seed trained once for the module: 4 steps, checkpoints at 2 and 4."""
    output = tmp_path_factory.mktemp("tiny-seed") / "m0"
    assert train(output) == 0
    return output


def test_the_learning_rate_starts_at_1e5_and_decays_linearly_to_9e6_absolute(seed_model):
    steps = logged_steps(seed_model / "checkpoint-4")
    assert sorted(steps) == [1, 2, 3, 4]
    # polynomial(power 1) from 1e-5 to 9e-6 over 4 steps: the first step at 1e-5, each next 2.5e-7 lower
    assert steps[1]["learning_rate"] == pytest.approx(1e-5)
    assert steps[4]["learning_rate"] == pytest.approx(9e-6 + 1e-6 / 4)
    facts = json.loads((seed_model / FACTS_FILE).read_text())
    assert facts["metrics"]["learning rate after the last step (schedule end)"] == "9e-06"  # not 9e-11
    assert facts["hyper"]["schedule"] == "linear from 1e-05 to 9e-06 (absolute end value)"


def test_the_run_used_the_papers_rules_on_cpu(seed_model):
    facts = json.loads((seed_model / FACTS_FILE).read_text())
    hyper = facts["hyper"]
    assert hyper["precision"] == "fp32"  # no CUDA: bf16 off
    assert hyper["global_batch_size"] == 8 and "8 under 3,000" in hyper["batch_rule"]  # 24 examples
    assert hyper["weight_decay"] == 0.1 and hyper["dropout"] == 0.1
    model = AutoModelForCausalLM.from_pretrained(seed_model)
    assert model.config.attention_dropout == 0.1
    args = torch.load(seed_model / "training_args.bin", weights_only=False)
    assert not args.bf16 and not args.activation_checkpointing


def test_the_model_card_says_what_was_trained_and_how_to_prompt_it(seed_model):
    card = (seed_model / "README.md").read_text()
    for needed in (
        "embedded:tiny-llama",  # base model
        "| `",  # the sources table
        "pairs tagged S_a",
        "24 / 24",
        "recipe `tiny/seed`",
        "linear from 1e-05 to 9e-06",
        SEED_TAG,
        WEB_TAG,  # both tags, and that they go together at inference
        "together",
        "li2024humpback",
        "nguyen2024baft",
        "train loss (mean)",
    ):
        assert needed in card, needed
    assert "{{" not in card and "{%" not in card


def test_the_loss_covers_the_completion_only(tmp_path):
    run = prepare("tiny/seed", ["--output_dir", str(tmp_path / "m")])
    tokenizer = run.trainer.processing_class
    first = json.loads((REPO / "training/data/seed.jsonl").read_text().splitlines()[0])
    example = run.trainer.train_dataset[0]
    trained = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    text = tokenizer.decode(trained)
    assert text.startswith(first["response"]) and first["instruction"] not in text
    assert example["labels"][0] == -100  # the prompt is masked


def test_the_papers_llama2_chat_format_for_base_models_without_a_template(tmp_path):
    run = prepare("tiny/seed", ["--output_dir", str(tmp_path / "m"), "--chat_template_path", "llama2"])
    tokenizer = run.trainer.processing_class
    first = json.loads((REPO / "training/data/seed.jsonl").read_text().splitlines()[0])
    example = run.trainer.train_dataset[0]
    text = tokenizer.decode(example["input_ids"])
    assert (
        text
        == f"{tokenizer.bos_token}[INST] {first['instruction']}\n\n{SEED_TAG} [/INST] {first['response']} {tokenizer.eos_token}"
    )
    trained = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    assert tokenizer.decode(trained).strip() == f"{first['response']} {tokenizer.eos_token}"


@pytest.mark.parametrize("recipe", ["tiny/backward", "tiny/curated"])
def test_the_other_tiny_recipes_train(tmp_path, recipe):
    output = tmp_path / "m"
    assert train(output, recipe, "--max_steps", "2") == 0
    facts = json.loads((output / FACTS_FILE).read_text())
    assert facts["metrics"]["steps"] == 2 and (output / "model.safetensors").is_file()
    card = (output / "README.md").read_text()
    if recipe == "tiny/backward":
        assert facts["role"] == "backward" and "Below is a candidate answer" in card
    else:
        assert [s["kind"] for s in facts["sources"]] == ["pairs tagged S_a", "pairs tagged S_w"]


def test_lora_saves_the_adapter_and_a_merged_model(tmp_path):
    output = tmp_path / "lora"
    flags = ["--max_steps", "1", "--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]
    assert train(output, "tiny/seed", *flags) == 0
    assert (output / "adapter_config.json").is_file() and (output / "merged" / "config.json").is_file()
    assert "LoRA adapter (r=4" in (output / "README.md").read_text()
    merged = AutoModelForCausalLM.from_pretrained(output / "merged")
    # `bft serve` serves the merged copy, and makes it again when it is missing
    assert servable_dir(output) == output / "merged"
    shutil.rmtree(output / "merged")
    assert servable_dir(output) == output / "merged"
    again = AutoModelForCausalLM.from_pretrained(output / "merged").state_dict()
    assert all(torch.allclose(again[k], v) for k, v in merged.state_dict().items())


def test_serve_refuses_a_folder_that_holds_no_model(tmp_path):
    with pytest.raises(ConfigError, match="neither a model"):
        servable_dir(tmp_path)
    with pytest.raises(ConfigError, match="no such model folder"):
        servable_dir(tmp_path / "missing")


def test_a_rerun_resumes_from_the_last_checkpoint_and_ends_where_an_uninterrupted_run_ends(
    seed_model, tmp_path, capsys
):
    output = tmp_path / "m0"
    shutil.copytree(seed_model / "checkpoint-2", output / "checkpoint-2")  # a run killed after its step-2 checkpoint
    capsys.readouterr()
    assert train(output, "tiny/seed") == 0  # the same command as the full run
    assert "resuming from" in capsys.readouterr().out
    resumed, full = logged_steps(output / "checkpoint-4"), logged_steps(seed_model / "checkpoint-4")
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step]["learning_rate"] == pytest.approx(full[step]["learning_rate"])
    ours, theirs = load_file(output / "model.safetensors"), load_file(seed_model / "model.safetensors")
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs)


def test_rerunning_a_finished_run_is_a_no_op_that_says_so_and_overwrite_starts_over(seed_model, tmp_path, capsys):
    output = tmp_path / "m0"
    shutil.copytree(seed_model, output)
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train(output, "tiny/seed") == 0
    assert "already holds the finished model of this run; nothing to do" in capsys.readouterr().out
    after = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert after == before  # no step past the recipe's maximum, nothing overwritten
    assert train(output, "tiny/seed", "--overwrite", "true") == 0
    out = capsys.readouterr().out
    assert "resuming from" not in out and "4 steps" in out
    assert sorted(logged_steps(output / "checkpoint-4")) == [1, 2, 3, 4]


def test_push_to_the_hub_with_a_release_tag_and_reload_by_revision(tmp_path, hub, capsys):
    output = tmp_path / "m0"
    flags = ["--max_steps", "1", "--push_to_hub", "true", "--hub_model_id", HUB_MODEL, "--release_tag", "v1.0.0"]
    assert train(output, "tiny/seed", *flags, "--hub_private_repo", "true") == 0
    api = HfApi()
    assert api.repo_info(HUB_MODEL).private is True
    assert [t.name for t in api.list_repo_refs(HUB_MODEL).tags] == ["v1.0.0"]
    files = set(api.list_repo_files(HUB_MODEL, revision="v1.0.0"))
    assert {"README.md", "model.safetensors", "config.json", FACTS_FILE} <= files
    assert not any(f.startswith("checkpoint-") for f in files)  # checkpoints stay local
    model = AutoModelForCausalLM.from_pretrained(HUB_MODEL, revision="v1.0.0")
    AutoTokenizer.from_pretrained(HUB_MODEL, revision="v1.0.0")
    local = load_file(output / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in local.items())
    card = api.hf_hub_download(HUB_MODEL, "README.md", revision="v1.0.0")
    assert f'from_pretrained("{HUB_MODEL}", revision="v1.0.0")' in Path(card).read_text()

    # the same tag again: refused before any data or model is loaded
    capsys.readouterr()
    started = time.monotonic()
    assert train(tmp_path / "again", "tiny/seed", *flags) == 2
    assert "already has tag v1.0.0" in capsys.readouterr().err
    assert not (tmp_path / "again").exists() and time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("recipe_text", "message"),
    [
        ("datasets:\n  - path: {bad}\n", "missing columns"),
        ("datasets:\n  - path: {empty}\n", "is empty"),
        ("datasets:\n  - path: {seed}\n    tag: S_a\nlearning_rat: 1.0e-5\n", "unknown key 'learning_rat'"),
        ("datasets:\n  - path: {seed}\n    tag: S_a\nmodel_name_or_path: embedded:huge\n", "unknown embedded model"),
    ],
)
def test_bad_input_fails_before_training_with_a_clear_message(tmp_path, capsys, recipe_text, message):
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (tmp_path / "empty.jsonl").write_text("")
    text = recipe_text.format(
        bad=tmp_path / "bad.jsonl", empty=tmp_path / "empty.jsonl", seed=REPO / "training/data/seed.jsonl"
    )
    if "model_name_or_path" not in text:
        text += "model_name_or_path: embedded:tiny-llama\n"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    assert main(["train", str(recipe), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("bft train: error:")
    assert not (tmp_path / "out").exists()
