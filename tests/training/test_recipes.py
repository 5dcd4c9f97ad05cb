"""Every shipped recipe parses with TRL's parser and carries the papers' hyperparameters (LitGPT's config test)."""

from pathlib import Path

import pytest
import yaml

from bft.generation.cli import main
from bft.generation.errors import ConfigError
from bft.training.config import paper_batch_size
from bft.training.train import RECIPE_DIR, batch_plan, find_recipe, parse, shipped_recipes
from tests.without_packages import optional_packages, run_without

PAPER_RECIPES = ("backward", "seed", "curated")
BAFT_RECIPES = {"baft": 1e-5, "baft-70b": 5.5e-6}  # BAFT's final fine-tunes: cosine, lr by model size


def parsed(name, *overrides, cuda=False):
    return parse(find_recipe(name), list(overrides), cuda)


def test_the_three_paper_recipes_and_their_tiny_variants_are_shipped():
    assert set(shipped_recipes()) == {*PAPER_RECIPES, *BAFT_RECIPES, *(f"tiny/{n}" for n in PAPER_RECIPES)}


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_parses_with_the_papers_hyperparameters(name):
    data, bft, model, sft = parsed(name)
    assert model.model_name_or_path and data.datasets
    if name in BAFT_RECIPES:
        assert sft.learning_rate == BAFT_RECIPES[name] and str(sft.lr_scheduler_type.value) == "cosine"
    else:
        assert sft.learning_rate == 1e-5
        assert str(sft.lr_scheduler_type.value) == "polynomial"
        assert sft.lr_scheduler_kwargs == {"lr_end": 9e-6, "power": 1.0}  # 9e-6 absolute, not a factor
    assert sft.weight_decay == 0.1 and bft.dropout == 0.1
    assert sft.completion_only_loss is True
    assert bft.global_batch_size is None  # the papers' rule: 32, or 8 under 3,000 examples
    assert bft.recipe == name
    # the backward model is the only one trained on reversed rows, and never tagged
    backward = name.endswith("backward")
    assert bft.role == ("backward" if backward else "forward")
    assert all(s.reverse == backward for s in data.datasets)
    assert all((s.tag is None) == backward for s in data.datasets)


def test_step_counts_follow_the_papers():
    assert parsed("seed")[3].max_steps == 500  # Humpback Table 18: the 3.2K seed
    assert parsed("baft-70b")[3].max_steps == 1600  # BAFT: 1,600 steps for 51.2K examples
    assert parsed("baft")[3].num_train_epochs == 1  # one pass, as BAFT's 70B run


def test_seed_goes_with_s_a_and_web_data_with_s_w():
    data, *_ = parsed("curated")
    assert [(s.name, s.tag) for s in data.datasets] == [("seed", "S_a"), ("rewritten", "S_w")]
    assert all(s.revision == "v1.0.0" for s in data.datasets)  # Hub data pinned to a release tag
    seed, *_ = parsed("seed")
    assert [s.tag for s in seed.datasets] == ["S_a"]


@pytest.mark.parametrize("name", [f"tiny/{n}" for n in PAPER_RECIPES])
def test_tiny_variants_train_on_files_bft_ships(name):
    data, bft, model, sft = parsed(name)
    assert model.model_name_or_path == "embedded:tiny-llama"
    assert 0 < sft.max_steps <= 10
    for source in data.datasets:
        assert (RECIPE_DIR / "tiny" / source.path).is_file(), source.path


def test_without_cuda_bf16_and_gradient_checkpointing_are_turned_off():
    recipe = yaml.safe_load(find_recipe("seed").read_text())
    assert recipe["bf16"] and recipe["activation_checkpointing"]  # the recipe asks for both, for GPUs
    *_, on_cpu = parsed("seed", cuda=False)
    assert not on_cpu.bf16 and not on_cpu.fp16
    assert not on_cpu.activation_checkpointing and not on_cpu.gradient_checkpointing  # (the deprecated alias)


def test_flags_override_the_recipe():
    data, bft, model, sft = parsed("seed", "--learning_rate", "2e-5", "--dropout", "0.0", "--tag_placement", "system")
    assert sft.learning_rate == 2e-5 and bft.dropout == 0.0 and data.tag_placement == "system"


def test_the_papers_batch_rule():
    assert paper_batch_size(2999) == 8 and paper_batch_size(3000) == 32 and paper_batch_size(3200) == 32
    data, bft, model, sft = parsed("seed")
    assert batch_plan(100, bft, sft)["global_batch_size"] == 8
    plan = batch_plan(3200, bft, sft)
    assert plan["global_batch_size"] == 32 and plan["accumulation"] == 32 // sft.per_device_train_batch_size
    bft.global_batch_size = 12
    with pytest.raises(ConfigError, match="not a multiple of per_device_train_batch_size"):
        batch_plan(100, bft, sft)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_an_unknown_recipe_key_names_its_closest_match(tmp_path):
    recipe = write(tmp_path, "model_name_or_path: embedded:tiny-llama\nlearning_rat: 1.0e-5\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'; did you mean 'learning_rate'"):
        parse(recipe, [], False)


def test_an_unknown_dataset_key_and_a_bad_tag_are_named(tmp_path):
    recipe = write(tmp_path, "datasets:\n  - path: a.jsonl\n    revison: v1.0.0\n")
    with pytest.raises(ConfigError, match=r"datasets\[0\]: unknown key\(s\) \['revison'\]"):
        parse(recipe, [], False)
    recipe = write(tmp_path, "datasets:\n  - path: a.jsonl\n    tag: S_b\n")
    with pytest.raises(ConfigError, match="tag must be one of"):
        parse(recipe, [], False)


def test_an_unknown_recipe_name_lists_the_shipped_ones(capsys):
    assert main(["train", "sead"]) == 2
    err = capsys.readouterr().err
    assert "recipe 'sead'" in err and "backward, baft, baft-70b, curated, seed, tiny/backward" in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--learnin_rate", "2e-5"], "unknown flag '--learnin_rate'; did you mean '--learning_rate'?"),
        (["--learning_rat", "2e-5"], "unknown flag '--learning_rat'; did you mean '--learning_rate'?"),  # a prefix
        (["--learning-rat=2e-5"], "unknown flag '--learning-rat'; did you mean '--learning-rate'?"),
        (["--dropout", "0.0", "stray"], "unexpected argument 'stray': overrides are --field value pairs"),
    ],
)
def test_a_mistyped_or_shortened_flag_is_named_with_the_closest_one(overrides, message, capsys):
    assert main(["train", "tiny/seed", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"bft train: error: {message}")  # the flag is named, not the recipe blamed
    assert "lists the fields" in err and "recipe" not in err.split("(")[0]


def test_without_trl_train_says_what_to_install_in_one_line():
    result = run_without(optional_packages(), ["train", "tiny/seed"])
    assert result.returncode == 2 and result.stderr == "bft train needs trl: pip install 'bft[train]'\n"
    listing = run_without(optional_packages(), ["train", "--help"])  # the command's own help needs no TRL
    assert listing.returncode == 0 and "recipe" in listing.stdout and listing.stderr == ""
