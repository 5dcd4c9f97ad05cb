"""A setting's choices are written once, as its `Literal` type, and the YAML reader, the settings themselves and
`bft generate`'s flags all read them from there: a mistyped choice is refused naming the field, and every flag's
choices, stated default and help are its field's."""

import argparse
import dataclasses
import functools
import typing
from pathlib import Path

import pytest
import yaml

from bft.generation.cli import build_parser
from bft.generation.cli import main as bft
from bft.generation.config import ALL_STAGES, GenerateConfig
from bft.generation.config.files import load_config
from bft.generation.errors import ConfigError
from bft.generation.generate import CONFIG_FLAGS, overrides_from
from tests.paths import DEMO_CORPUS

# The enum-like settings and their choices, pinned here literally (the code's own lists are what is tested).
CHOICES = {
    "stages": ["backtranslate", "curate", "rewrite", "distill"],
    "executor": ["local", "ray"],
    "corpus.duplicate_ids": ["error", "rename"],
    "corpus.invalid_utf8": ["reject", "replace", "error"],
    "corpus.malformed_lines": ["reject", "error"],
    "corpus.invalid_unicode": ["reject", "replace"],
    "segment.mode": ["none", "headers"],
    "prepare.control_characters": ["strip", "reject"],
    "prepare.html": ["strip", "keep", "reject"],
    "prepare.oversize": ["truncate", "reject"],
    "prepare.context_overflow": ["reject", "cut"],
    "cache.mode": ["on", "off", "read-only"],
    "serve.engine": ["vllm", "sglang"],
    "serve.order": ["together", "in_turn"],
    "curate.score_mode": ["parsed", "expected"],
    **{f"{stage}.mode": ["chat", "raw"] for stage in ALL_STAGES},
    **{f"{stage}.raw_format": ["llama2", "chat_template"] for stage in ALL_STAGES},
    **{f"{stage}.max_concurrency": ["auto"] for stage in ALL_STAGES},  # or a number
    **{f"{stage}.send": ["live", "batch"] for stage in ALL_STAGES},
    **{f"{stage}.batch.api": ["openai", "anthropic", "vllm"] for stage in ALL_STAGES},
}


def type_at(path: str):
    """The declared type of a dotted field path, read with `typing` alone."""
    owner, hint = GenerateConfig, None
    for name in path.split("."):
        hint = typing.get_type_hints(owner)[name]
        owner = hint
    return hint


def literal_values(hint) -> list:
    """The values of the `Literal`s in a type, its list items' and its union members' included."""
    if typing.get_origin(hint) is typing.Literal:
        return list(typing.get_args(hint))
    return [value for arg in typing.get_args(hint) for value in literal_values(arg)]


def every_field_path(owner=GenerateConfig, prefix=""):
    for field in dataclasses.fields(owner):
        hint = typing.get_type_hints(owner)[field.name]
        if dataclasses.is_dataclass(hint):
            yield from every_field_path(hint, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}"


def test_the_choices_are_the_fields_literal_types_and_no_field_is_left_a_bare_string():
    with_choices = {path: literal_values(type_at(path)) for path in every_field_path() if literal_values(type_at(path))}
    assert with_choices == CHOICES


def write(tmp_path, path: str, value) -> str:
    data: dict = {}
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump(data))
    return str(file)


@pytest.mark.parametrize("path", sorted(CHOICES))
def test_a_mistyped_choice_in_yaml_is_refused_naming_the_field_and_each_choice_is_taken(tmp_path, path):
    choices = CHOICES[path]
    typo = choices[-1][:-1] + "x"  # one letter off the last choice
    value = [typo] if path == "stages" else typo
    where = "stages[0]" if path == "stages" else path
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, path, value))
    assert f"{where}: {typo!r} is not one of {choices}; did you mean {choices[-1]!r}?" in str(error.value)
    for choice in choices if path != "stages" else []:  # (stages: their order is checked apart)
        file = write(tmp_path, path, choice)
        if path.endswith(".send") and choice == "batch":  # a batch request names its model (checks.py)
            data = yaml.safe_load(Path(file).read_text())
            data[path.split(".")[0]]["model"] = "some-model"
            Path(file).write_text(yaml.safe_dump(data))
        config = load_config(file)
        assert functools.reduce(getattr, path.split("."), config) == choice


def test_settings_made_in_code_are_checked_too():
    config = GenerateConfig()
    with pytest.raises(ConfigError, match=r"CurateConfig.score_mode: 'mean' is not one of \['parsed', 'expected'\]"):
        dataclasses.replace(config.curate, score_mode="mean")
    with pytest.raises(ConfigError, match=r"GenerateConfig.stages\[1\]: 'curat' is not one of .*did you mean 'curate'"):
        GenerateConfig(stages=["backtranslate", "curat"])
    assert dataclasses.replace(config.rewrite, max_concurrency=4).max_concurrency == 4


def generate_parser() -> argparse.ArgumentParser:
    (commands,) = [a for a in build_parser("generate")._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices["generate"]


@pytest.mark.parametrize("flag", sorted(CONFIG_FLAGS))
def test_every_flag_states_its_fields_choices_default_and_help(flag):
    action = generate_parser()._option_string_actions[flag]
    path, _, const = CONFIG_FLAGS[flag].partition("=")
    paths = [f"{stage}.{path[2:]}" for stage in ALL_STAGES] if path.startswith("*.") else [path]
    *parents, leaf = paths[0].split(".")
    owner = type_at(".".join(parents)) if parents else GenerateConfig
    help_text = {f.name: f for f in dataclasses.fields(owner)}[leaf].metadata["help"]
    assert help_text.rstrip(".") in action.help
    choices = literal_values(type_at(paths[0]))
    if const:  # a switch: one of the field's choices
        assert action.const in choices and action.const == const
        return
    assert list(action.type.choices) == choices  # what the flag's value is checked against
    hint = type_at(paths[0])
    only_choices = choices and typing.get_origin(hint) is not list and int not in typing.get_args(hint)
    assert list(action.choices or []) == (choices if only_choices else [])  # what --help lists
    defaults = [functools.reduce(getattr, p.split("."), GenerateConfig()) for p in paths]
    assert all(d == defaults[0] for d in defaults)
    default = defaults[0]
    if default in (None, "", []):
        assert "default:" not in action.help
    else:
        stated = ",".join(default) if isinstance(default, list) else str(default)
        assert action.help.rstrip(")").endswith(f"default: {stated}")
    assert action.default is None  # not given: the --config file's value stands


def test_every_flag_sets_its_field(tmp_path):
    argv = [str(DEMO_CORPUS)]
    expected = {}
    for flag, target in CONFIG_FLAGS.items():
        path, _, const = target.partition("=")
        paths = [f"{stage}.{path[2:]}" for stage in ALL_STAGES] if path.startswith("*.") else [path]
        hint = type_at(paths[0])
        if const:
            argv.append(flag)
            value = const
        elif choices := literal_values(hint):
            argv += [flag, choices[0]]
            value = [choices[0]] if typing.get_origin(hint) is list else choices[0]
        elif float in typing.get_args(hint) or hint is float:
            argv += [flag, "4.5"]
            value = 4.5
        elif int in typing.get_args(hint) or hint is int:
            argv += [flag, "7"]
            value = 7
        else:
            argv += [flag, f"http://{flag[2:]}"]
            value = [f"http://{flag[2:]}"] if typing.get_origin(hint) is list else f"http://{flag[2:]}"
        expected.update(dict.fromkeys(paths, value))
    args = generate_parser().parse_args(argv)
    config = load_config(None, overrides_from(args))
    assert {path: functools.reduce(getattr, path.split("."), config) for path in expected} == expected


@pytest.mark.parametrize(
    ("flag", "typo", "message"),
    [
        ("--score-mode", "expectd", "curate.score_mode: 'expectd' is not one of ['parsed', 'expected']; did you mean"),
        ("--executor", "rya", "executor: 'rya' is not one of ['local', 'ray']; did you mean 'ray'?"),
        ("--stages", "backtranslate,curat", "stages[1]: 'curat' is not one of ['backtranslate', 'curate', 'rewrite',"),
        ("--max-concurrency", "aut", "STAGE.max_concurrency: 'aut' is not one of ['auto']; did you mean 'auto'?"),
        ("--limit", "ten", "corpus.limit: expected int, got 'ten'"),
    ],
)
def test_a_mistyped_choice_on_the_command_line_is_refused_naming_the_field(tmp_path, capsys, flag, typo, message):
    with pytest.raises(SystemExit) as exit:
        bft(["generate", str(DEMO_CORPUS), "--out", str(tmp_path / "o"), "--dry-run", flag, typo])  # (sends nothing)
    assert exit.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
