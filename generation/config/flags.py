"""Command-line flags read from the settings' fields, as TRL's `HfArgumentParser` reads them from its dataclasses.

A command names its flags in one table of flag -> dotted field path (`generate.CONFIG_FLAGS`:
`"--min-score": "curate.min_score"`); all else a flag needs comes from the field in `GenerateConfig`:

- its type: a flag's text is read as the field's type, and a wrong value is refused naming the field
  (`argument --score-mode: curate.score_mode: 'expectd' is not one of ['parsed', 'expected']; did you
  mean 'expected'?`);
- its choices: the field's `Literal` (argparse shows them, `{parsed,expected}`);
- the default its help states: the field's, as `GenerateConfig()` holds it;
- its help: the field's `metadata["help"]`, with the config key it sets.

Two more forms: `*.FIELD` sets that field of every stage (`"--model": "*.model"`), and `PATH=VALUE` is a
switch that sets one of the field's values (`"--no-cache": "cache.mode=off"`). A list of choices is written
comma-separated (`--stages backtranslate,curate`); a list of free text by repeating the flag
(`--endpoint A --endpoint B`). A flag not given is None, so that a `--config` file's value stands unless the
command line names it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from typing import Any, Literal

from bft.generation.config import ALL_STAGES, GenerateConfig
from bft.generation.config.choices import UNIONS, choices_of, field_types
from bft.generation.config.coerce import coerce
from bft.generation.errors import ConfigError

EVERY_STAGE = "*."  # `*.model`: the field `model` of every stage


def config_paths(target: str) -> tuple[str, ...]:
    """The dotted field paths a table entry sets: `curate.min_score`, or one per stage for `*.model`
    (a `=VALUE` part aside)."""
    path = target.partition("=")[0]
    if path.startswith(EVERY_STAGE):
        return tuple(f"{stage}.{path.removeprefix(EVERY_STAGE)}" for stage in ALL_STAGES)
    return (path,)


def field_at(path: str) -> tuple[dataclasses.Field, Any]:
    """The field a dotted path names in `GenerateConfig` (`curate.min_score`), and its type."""
    owner: Any = GenerateConfig
    *parents, leaf = path.split(".")
    for name in parents:
        owner = field_types(owner)[name]
    fields = {f.name: f for f in dataclasses.fields(owner)}
    if leaf not in fields:
        raise KeyError(f"{path}: {owner.__name__} has no field {leaf!r}")
    return fields[leaf], field_types(owner)[leaf]


def default_at(path: str) -> Any:
    """The default of the field at `path`, as a fresh `GenerateConfig` holds it (a stage's own sampling included)."""
    return functools.reduce(getattr, path.split("."), GenerateConfig())


def parse_text(hint: Any, text: str, where: str) -> Any:
    """A flag's text as type `hint`: a number, a choice, text, or a comma-separated list; a `ConfigError` naming
    `where` otherwise."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        parts = [part.strip() for part in text.split(",") if part.strip()]
        return [parse_text(item, part, f"{where}[{i}]") for i, part in enumerate(parts)]
    if origin in UNIONS:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        for option in options[:-1]:  # the first type the text reads as (`int | Literal["auto"]`)
            try:
                return parse_text(option, text, where)
            except ConfigError:
                continue
        return parse_text(options[-1], text, where)
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise ConfigError(f"{where}: expected {hint.__name__}, got {text!r}") from None
    return coerce(hint, text, where)  # text, or a choice checked against the field's Literal


class FieldValue:
    """argparse's `type=` for a flag: its text read as the field's type; a wrong value is refused naming the field."""

    def __init__(self, hint: Any, where: str):
        self.hint, self.where = hint, where
        self.choices = choices_of(hint)
        self.__name__ = where  # (argparse names a type by it)

    def __call__(self, text: str) -> Any:
        try:
            return parse_text(self.hint, text, self.where)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None


def only_choices(hint: Any) -> bool:
    """Whether a value of type `hint` is one of its choices and nothing else (`Literal[...]`, maybe `| None`)."""
    if typing.get_origin(hint) is Literal:
        return True
    options = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in UNIONS else []
    return bool(options) and all(typing.get_origin(a) is Literal for a in options)


def stated_default(value: Any, comma_list: bool) -> str | None:
    """A default as the help states it; None when there is none to state (unset, empty)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, list):
        return ",".join(map(str, value)) if comma_list else " ".join(map(str, value))
    return str(value)


def add_config_flag(parser: argparse.ArgumentParser, flag: str, target: str, **extra: Any) -> argparse.Action:
    """Add `flag`, which sets the field(s) `target` names (see the module docstring); `extra` goes to argparse
    (`required=True`)."""
    paths = config_paths(target)
    field, hint = field_at(paths[0])
    key = target.partition("=")[0].replace(EVERY_STAGE, "STAGE.")
    about = field.metadata.get("help", "").rstrip(".")
    if "=" in target:  # a switch: the field set to one of its values
        const = parse_text(hint, target.partition("=")[2], key)
        kwargs: dict[str, Any] = {"action": "store_const", "const": const}
        text = f"Set {key} to {const}. {about}"
    else:
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        comma_list = item is not None and bool(choices_of(item))
        if item is not None and not comma_list:  # free text: repeat the flag
            kwargs = {"action": "append", "type": FieldValue(item, key)}
            how = "; repeat for several"
        else:
            kwargs = {"type": FieldValue(hint, key)}
            if only_choices(hint):
                kwargs["choices"] = choices_of(hint)  # (argparse lists them; a mixed `int | "auto"` lists none)
            how = f"; comma-separated, from: {', '.join(choices_of(item))}" if comma_list else ""
        defaults = {stated_default(default_at(path), comma_list) for path in paths}
        default = defaults.pop() if len(defaults) == 1 else None  # (stages that differ: none stated)
        every = ", every stage" if len(paths) > 1 else ""
        stated = f"; default: {default}" if default is not None else ""
        text = f"{about}{how} (config key {key}{every}{stated})"
    return parser.add_argument(flag, default=None, help=text.replace("%", "%%"), **kwargs, **extra)  # (argparse: %)


def flag_overrides(flags: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides (dotted key -> value) of the table's flags that the command line gave."""
    overrides: dict[str, Any] = {}
    for flag, target in flags.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            overrides.update((path, value) for path in config_paths(target))
    return overrides
