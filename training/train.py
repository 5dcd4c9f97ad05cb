"""`bft train`: fine-tune a backward, seed or curated model with TRL's SFT trainer, from a recipe.

    bft train seed                                   # a shipped recipe: training/recipes/seed.yaml
    bft train tiny/seed                              # its tiny CPU variant (seconds; tests and the demo)
    bft train my-recipe.yaml --learning_rate 2e-5 --output_dir runs/m1
    bft train curated --push_to_hub true --hub_model_id me/m1 --release_tag v1.0.0 --hub_private_repo true

A recipe is a YAML mapping of the fields of `DataArguments`, `BftTrainArguments` (training/config.py),
TRL's `ModelConfig` and `SFTConfig`; flags override it (`bft train RECIPE --help` lists every field).
The run, in order, so that bad input fails before any model is loaded:

1. the recipe's keys are checked (an unknown key names its closest match), then parsed by TRL's parser;
2. the data is loaded, checked row by row and mixed (training/mixtures.py);
3. on a machine without CUDA, bf16 and activation (gradient) checkpointing are turned off; the global batch follows
   the papers (32, or 8 under 3,000 examples) through gradient accumulation;
4. the base model is loaded with the recipe's dropout, LoRA is added if asked, and TRL trains, resuming
   from the last checkpoint in `output_dir` when there is one;
5. the model, the merged LoRA model, `bft_training.json` and the model card are written; with
   `push_to_hub` the folder is committed to `hub_model_id` and tagged `release_tag`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.metadata
import json
import math
import shutil
import time
from pathlib import Path

import yaml

from bft.cards.model_card import render_model_card
from bft.generation.errors import ConfigError
from bft.generation.method.prompts import load_template
from bft.generation.method.tags import TAGS
from bft.training.config import BftTrainArguments, DataArguments, paper_batch_size
from bft.training.mixtures import load_training_data
from bft.training.models import resolve_model, set_dropout
from bft.training.push import check_push_target, push_model

RECIPE_DIR = Path(__file__).parent / "recipes"
TEMPLATE_DIR = Path(__file__).parent / "templates"  # chat templates by name: `chat_template_path: llama2`
FACTS_FILE = "bft_training.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="A shipped recipe name (backward, seed, curated, tiny/seed, ...) or a YAML file")
    parser.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="--field value pairs overriding the recipe (--help lists them)"
    )


def shipped_recipes() -> list[str]:
    return sorted(p.relative_to(RECIPE_DIR).with_suffix("").as_posix() for p in RECIPE_DIR.rglob("*.yaml"))


def find_recipe(name: str) -> Path:
    """A recipe file: `name` as a path, else a shipped recipe of that name."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = RECIPE_DIR / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(name.removesuffix(".yaml"), shipped_recipes(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"recipe {name!r}: no such file, and not a shipped recipe ({', '.join(shipped_recipes())}){hint}")


def parser_types() -> tuple:
    from trl import ModelConfig, SFTConfig

    return DataArguments, BftTrainArguments, ModelConfig, SFTConfig


def read_recipe(path: Path) -> dict:
    """The recipe mapping, with every key checked against the dataclasses before TRL parses it."""
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {path}: not valid YAML: {error}") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {path}: must be a YAML mapping of field: value")
    known = {f.name for cls in parser_types() for f in dataclasses.fields(cls)} | {"env"}
    for key in recipe:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"recipe {path}: unknown key {key!r}{hint} (`bft train {path} --help` lists the fields)")
    return recipe


def parse(recipe_path: Path, overrides: list[str], cuda: bool) -> tuple:
    """TRL's parser over the recipe and the overrides; without CUDA, bf16 and gradient checkpointing go off.

    A flag is taken only whole (`--learning_rat` is not `--learning_rate`), and one the parser does not know
    is named with its closest match.
    """
    from trl import TrlParser

    read_recipe(recipe_path)
    forced = [] if cuda else ["--bf16", "false", "--fp16", "false", "--activation_checkpointing", "false"]
    parser = TrlParser(parser_types(), prog=f"bft train {recipe_path}", allow_abbrev=False)
    try:
        *parsed, unknown = parser.parse_args_and_config(
            ["--config", str(recipe_path), *overrides, *forced], return_remaining_strings=True
        )
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"recipe {recipe_path}: {error}") from None
    if unknown:
        raise ConfigError(unknown_flag(unknown, list(parser._option_string_actions), recipe_path))
    return tuple(parsed)


def unknown_flag(unknown: list[str], known: list[str], recipe_path: Path) -> str:
    """What is wrong with the first argument the parser did not take: a flag it does not know (with the closest
    one it does), or a value no flag asked for."""
    word = next((w for w in unknown if w.startswith("-")), unknown[0])
    listing = f"`bft train {recipe_path} --help` lists the fields"
    if not word.startswith("-"):
        return f"unexpected argument {word!r}: overrides are --field value pairs ({listing})"
    flag = word.split("=")[0]
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown flag {flag!r}{hint} ({listing})"


def batch_plan(examples: int, bft_args, sft_args) -> dict:
    """Gradient accumulation that makes the global batch the recipe's, or the papers' rule."""
    rule = "set by the recipe" if bft_args.global_batch_size else "papers' rule: 32, or 8 under 3,000 examples"
    total = bft_args.global_batch_size or paper_batch_size(examples)
    per_step = sft_args.per_device_train_batch_size * sft_args.world_size
    if total % per_step:
        raise ConfigError(
            f"global batch {total} is not a multiple of per_device_train_batch_size x devices = {per_step}; "
            "change one of them"
        )
    return {"global_batch_size": total, "accumulation": total // per_step, "batch_rule": rule}


def chat_template_file(name: str | None) -> str | None:
    """A shipped chat template's file for its name (`llama2`); anything else goes to TRL unchanged."""
    if name and (TEMPLATE_DIR / f"{name}.jinja").is_file():
        return str(TEMPLATE_DIR / f"{name}.jinja")
    return name


def load_model(model_args, bft_args, chat_template: str | None):
    """Tokenizer and model from `model_name_or_path` (embedded names resolved), dropout set on the config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model_args.model_name_or_path)
    revision = model_args.model_revision
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if not tokenizer.chat_template and not chat_template:
        raise ConfigError(
            f"the tokenizer of {model_args.model_name_or_path} has no chat template and the recipe sets no "
            "chat_template_path; bft trains on chats (`chat_template_path: llama2` is the papers' format)"
        )
    config = AutoConfig.from_pretrained(path, revision=revision)
    dropout_fields = set_dropout(config, bft_args.dropout) if bft_args.dropout is not None else []
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    from trl import get_quantization_config

    model = AutoModelForCausalLM.from_pretrained(
        path,
        revision=revision,
        config=config,
        dtype=dtype or "auto",
        attn_implementation=model_args.attn_implementation,
        quantization_config=get_quantization_config(model_args),  # load_in_4bit / load_in_8bit (QLoRA; GPU only)
    )
    return tokenizer, model, dropout_fields


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


def versions() -> dict:
    names = ("trl", "transformers", "torch", "datasets", "peft")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "-"
    return found


def schedule_text(sft_args) -> str:
    kind = str(getattr(sft_args.lr_scheduler_type, "value", sft_args.lr_scheduler_type))
    extra = sft_args.lr_scheduler_kwargs or {}
    if kind == "polynomial" and extra.get("power", 1.0) == 1.0:
        return f"linear from {sft_args.learning_rate:g} to {extra.get('lr_end', 1e-7):g} (absolute end value)"
    warmup = f", warmup ratio {sft_args.warmup_ratio:g}" if getattr(sft_args, "warmup_ratio", 0) else ""
    return kind + (f" {extra}" if extra else "") + warmup


def training_facts(recipe_path, overrides, data_args, bft_args, model_args, sft_args, summaries, splits, plan, trainer):
    """Everything the model card and `bft_training.json` say about the run."""
    history = trainer.state.log_history
    steps = [h for h in history if "learning_rate" in h and "loss" in h]
    final = next((h for h in reversed(history) if "train_loss" in h), {})
    metrics = {
        "steps": trainer.state.global_step,
        "train loss (mean)": round(final.get("train_loss", math.nan), 4),
        "train loss (last logged)": round(steps[-1]["loss"], 4) if steps else "-",
        "learning rate (first / last step)": f"{steps[0]['learning_rate']:.4g} / {steps[-1]['learning_rate']:.4g}"
        if steps
        else "-",
        "learning rate after the last step (schedule end)": f"{trainer.lr_scheduler.get_last_lr()[0]:.4g}",
        "train runtime (s)": round(final.get("train_runtime", math.nan), 1),
    }
    evals = [h for h in history if "eval_loss" in h]
    if evals:
        metrics["eval loss"] = round(evals[-1]["eval_loss"], 4)
    peft = None
    if model_args.use_peft:
        peft = {
            "r": model_args.lora_r,
            "alpha": model_args.lora_alpha,
            "dropout": model_args.lora_dropout,
            "target_modules": model_args.lora_target_modules or "peft's default for the architecture",
        }
    precision = "bf16" if sft_args.bf16 else "fp16" if sft_args.fp16 else "fp32"
    return {
        "model_name": Path(sft_args.output_dir).name,
        "recipe": bft_args.recipe or recipe_path.stem,
        "recipe_text": recipe_path.read_text(encoding="utf-8").strip(),
        "overrides": overrides,
        "role": bft_args.role,
        "base_model": model_args.model_name_or_path,
        "base_revision": model_args.model_revision if model_args.model_revision != "main" else None,
        "peft": peft,
        "merged": bool(peft and bft_args.merge_lora),
        "sources": [dataclasses.asdict(s) for s in summaries],
        "tag_placement": data_args.tag_placement,
        "examples": len(splits["train"]),
        "eval_examples": len(splits["test"]) if "test" in splits else 0,
        "hyper": {
            "learning_rate": f"{sft_args.learning_rate:g}",
            "schedule": schedule_text(sft_args),
            "weight_decay": sft_args.weight_decay,
            "dropout": bft_args.dropout,
            "global_batch_size": plan["global_batch_size"],
            "batch_rule": plan["batch_rule"],
            "per_device": sft_args.per_device_train_batch_size,
            "accumulation": plan["accumulation"],
            "devices": sft_args.world_size,
            "epochs": sft_args.num_train_epochs if sft_args.max_steps <= 0 else "-",
            "steps": trainer.state.global_step,
            "max_length": sft_args.max_length,
            "precision": precision,
            "seed": sft_args.seed,
        },
        "metrics": metrics,
        "versions": versions(),
        "local_dir": sft_args.output_dir,
        "load_path": sft_args.hub_model_id if sft_args.push_to_hub else sft_args.output_dir,
        "revision": bft_args.release_tag if sft_args.push_to_hub else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tag_texts": TAGS,  # how to prompt the model, on its card
        "backward_prompt": load_template("backtranslate").user_message(response="<the text>"),
    }


@dataclasses.dataclass
class TrainingRun:
    """A run parsed, its data loaded and checked, its model loaded into a ready SFT trainer."""

    recipe_path: Path
    overrides: list[str]
    data_args: object
    bft_args: object
    model_args: object
    sft_args: object
    splits: object  # DatasetDict: train (and test)
    summaries: list
    plan: dict
    push: bool
    trainer: object = None


def prepare(recipe: str, overrides: list[str]) -> TrainingRun | None:
    """Steps 1-4 of the module docstring up to the trainer; every input check happens before the model loads.

    None when `output_dir` already holds the finished model of a run (`bft_training.json` is written
    last) and `overwrite` is not set: a rerun of a finished run trains nothing.
    """
    import torch

    recipe_path = find_recipe(recipe)
    cuda = torch.cuda.is_available()
    data_args, bft_args, model_args, sft_args = parse(recipe_path, overrides, cuda)
    if not model_args.model_name_or_path:
        raise ConfigError(f"recipe {recipe_path}: model_name_or_path is not set")
    output = Path(sft_args.output_dir)
    if (output / FACTS_FILE).is_file():
        if not bft_args.overwrite:
            return None
        shutil.rmtree(output)  # a finished model there, and --overwrite: start over, no checkpoint to resume
    push = sft_args.push_to_hub
    if push:
        check_push_target(sft_args.hub_model_id, bft_args.release_tag)

    splits, summaries = load_training_data(data_args, recipe_path.parent)
    plan = batch_plan(len(splits["train"]), bft_args, sft_args)
    sft_args.gradient_accumulation_steps = plan["accumulation"]
    sft_args.push_to_hub = False  # bft pushes, with its own card and tag, after training
    run = TrainingRun(recipe_path, overrides, data_args, bft_args, model_args, sft_args, splits, summaries, plan, push)
    print(f"bft train: recipe {recipe_path} ({bft_args.role} model), base {model_args.model_name_or_path}")
    for s in summaries:
        print(f"  data {s.label}: {s.used} of {s.rows} rows ({s.kind})")
    print(
        f"  {len(splits['train'])} examples, global batch {plan['global_batch_size']} ({plan['batch_rule']}) = "
        f"{sft_args.per_device_train_batch_size} x {plan['accumulation']} accumulation x {sft_args.world_size} device(s)"
    )
    if not cuda:
        print("  no CUDA: bf16 and gradient checkpointing are off")

    from trl import SFTTrainer, get_peft_config

    sft_args.chat_template_path = chat_template_file(sft_args.chat_template_path)
    tokenizer, model, dropout_fields = load_model(model_args, bft_args, sft_args.chat_template_path)
    if dropout_fields:
        print(f"  dropout {bft_args.dropout} on {', '.join(dropout_fields)}")
    run.trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("test"),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    return run


def train_and_save(run: TrainingRun) -> dict:
    """Step 5: train (resuming when there is a checkpoint), save, write facts and card, push; returns the facts."""
    trainer, sft_args, bft_args, model_args = run.trainer, run.sft_args, run.bft_args, run.model_args
    resume = sft_args.resume_from_checkpoint or (last_checkpoint(sft_args.output_dir) if bft_args.resume else None)
    if resume:
        print(f"  resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
    if run.splits.get("test") is not None:
        trainer.evaluate()

    output = Path(sft_args.output_dir)
    tokenizer = trainer.processing_class
    trainer.save_model(str(output))
    tokenizer.save_pretrained(output)
    if model_args.use_peft and bft_args.merge_lora:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(output / "merged")
        tokenizer.save_pretrained(output / "merged")
    sft_args.push_to_hub = run.push
    facts = training_facts(
        run.recipe_path,
        run.overrides,
        run.data_args,
        bft_args,
        model_args,
        sft_args,
        run.summaries,
        run.splits,
        run.plan,
        trainer,
    )
    (output / FACTS_FILE).write_text(json.dumps(facts, indent=2, default=str), encoding="utf-8")

    render_model_card(output, facts)
    if (output / "merged").is_dir():
        render_model_card(output / "merged", {**facts, "peft": None, "merged": False})
    print(f"bft train: {trainer.state.global_step} steps; model and card in {output}")
    if run.push:
        summary = f"{facts['recipe']} recipe, {facts['examples']} examples, {trainer.state.global_step} steps"
        oid = push_model(output, sft_args.hub_model_id, sft_args.hub_private_repo, bft_args.release_tag, summary)
        where = f"{sft_args.hub_model_id}" + (f" {bft_args.release_tag}" if bft_args.release_tag else "")
        print(f"bft train: pushed to {where} at {oid[:12]}")
        facts["pushed_commit"] = oid
    return facts


def run(args: argparse.Namespace) -> int:
    prepared = prepare(args.recipe, args.overrides)
    if prepared is None:
        print(
            "bft train: the output folder already holds the finished model of this run; nothing to do "
            "(--overwrite true trains again from the start)"
        )
        return 0
    train_and_save(prepared)
    return 0
